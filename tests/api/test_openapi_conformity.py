"""Property-based check of /signsessiondata against ANS's own OpenAPI file (schemathesis).

Generated bodies (valid and invalid) must never produce a server error, answers must match
the spec's schemas and status codes, and invalid bodies must be rejected.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

import confiance.api
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle

# ANS's file (MIT licence, see its info.license), shipped with the package.
SPEC = Path(confiance.api.__file__).parent / "ans-api-psc-conformite.openapi.json"
schema = schemathesis.openapi.from_path(str(SPEC))


@pytest.fixture(scope="module")
def api_token(api_services: ApiHandle, psc_sandbox: PscHandle) -> str:
    tokens = psc_sandbox.ciba_login()
    return str(api_services.exchange(tokens["access_token"], scope="signsessiondata").json()["access_token"])


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_signsessiondata_against_ans_openapi(case, api_services: ApiHandle, api_token: str) -> None:
    p = api_services.proxy_cert
    response = case.call(
        base_url=api_services.services["signsessiondata"]["url"],
        headers={"Authorization": f"Bearer {api_token}"},
        verify=str(api_services.pki.ca_bundle),
        cert=(p.cert_path, p.key_path),
    )
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 400, 401, 405), response.status_code  # 405: methods the spec lacks
    # Schema-valid bodies naming another professional or session are refused with 400 by
    # design, so "positive data acceptance" does not apply; everything else does.
    case.validate_response(response, excluded_checks=[positive_data_acceptance])


def test_spec_served_pointing_at_this_server(api_services: ApiHandle) -> None:
    with api_services.client(api_services.proxy_cert) as http:
        spec = http.get(api_services.rs_url + "/openapi.json").json()
    assert spec["servers"][0]["url"] == api_services.services["signsessiondata"]["url"]
    assert "/signsessiondata" in spec["paths"] and spec["info"]["license"]["name"] == "MIT license"
