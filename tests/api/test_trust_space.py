"""Trust-space mode of the authorization server: only certificates of valid habilitations get tokens."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from confiance.api.config import ApiClient
from confiance.core.trustlist import TrustListSettings
from tests.fixtures_api import ALL_SCOPES, ApiHandle
from tests.fixtures_psc import PscHandle
from tests.support import TrustListServer, habilitation


@pytest.fixture(scope="module")
def guichet() -> Iterator[TrustListServer]:
    g = TrustListServer().start()
    yield g
    g.stop()


def _settings(g: TrustListServer, enforce: str) -> TrustListSettings:
    return TrustListSettings(
        url=g.url + "/trust-list",
        jwks_url=g.url + "/trust-list/jwks",
        issuer="guichet",
        refresh_seconds=0.3,
        enforce=enforce,  # type: ignore[arg-type]
    )


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_enforce_all_admits_only_habilitated_certificates(
    api_services_factory, guichet: TrustListServer, psc_sandbox: PscHandle
) -> None:
    api: ApiHandle = api_services_factory(trust_list=_settings(guichet, "all"))
    psc_token = psc_sandbox.ciba_login()["access_token"]
    # the proxy certificate is in no habilitation: refused, and told why
    r = api.exchange(psc_token, scope="signsessiondata")
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == "unauthorized_client"
    assert "ELU/ELP" in body["error_description"] and "guichet" in body["error_description"]
    # ELP granted with that certificate: admitted within one refresh period
    guichet.habilitations = [habilitation(1, "ELP", "BAS", api.proxy_cert.x5t_s256)]
    assert _wait(lambda: api.exchange(psc_token, scope="signsessiondata").status_code == 200)
    # withdrawn: new tokens stop within one refresh period, with the reason
    guichet.habilitations = []
    assert _wait(lambda: api.exchange(psc_token, scope="signsessiondata").status_code == 400)


def test_withdrawn_dependency_is_named(api_services_factory, guichet: TrustListServer, psc_sandbox: PscHandle) -> None:
    api: ApiHandle = api_services_factory(trust_list=_settings(guichet, "all"))
    psc_token = psc_sandbox.ciba_login()["access_token"]
    guichet.habilitations = [habilitation(7, "ELU", "BAS", api.proxy_cert.x5t_s256, relies_on=[3])]

    def desc() -> str:
        r = api.exchange(psc_token, scope="signsessiondata")
        assert r.status_code == 400
        return str(r.json()["error_description"])

    assert _wait(lambda: "ELU n° 7" in desc())
    assert "n° 3" in desc() and "n'est plus valide" in desc()


def test_flagged_mode_only_binds_flagged_clients(
    api_services_factory, guichet: TrustListServer, psc_sandbox: PscHandle, pki
) -> None:
    flagged_cert = pki.ensure_client("api-trust-flagged", "3" + "12345678200010", "lps-habilite")
    api: ApiHandle = api_services_factory(
        trust_list=_settings(guichet, "flagged"),
        clients=[
            ApiClient(client_id="flagged", dn=flagged_cert.subject_dn, scopes=ALL_SCOPES, trust_list_required=True)
        ],
    )
    guichet.habilitations = []
    psc_token = psc_sandbox.ciba_login()["access_token"]
    assert api.exchange(psc_token, scope="signsessiondata").status_code == 200  # unflagged proxy client
    r = api.exchange(psc_token, flagged_cert, scope="signsessiondata")
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"


def test_guichet_unreachable_fails_closed_until_first_list(
    api_services_factory, guichet: TrustListServer, psc_sandbox: PscHandle
) -> None:
    guichet.up = False
    try:
        api: ApiHandle = api_services_factory(trust_list=_settings(guichet, "all"))
        psc_token = psc_sandbox.ciba_login()["access_token"]
        r = api.exchange(psc_token, scope="signsessiondata")
        assert r.status_code == 400 and "liste de confiance" in r.json()["error_description"]
    finally:
        guichet.up = True
