"""The demo LPS drives a real proxy (wired to the real PSC sandbox and API) from the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from confiance.cli import app as cli_app
from confiance.core import endpoints
from tests.proxy.harness import RunningProxy, proxy_config, start_proxy


@pytest.fixture(scope="module")
def proxy(pki, server_cert, psc_sandbox, api_services, tmp_path_factory) -> Iterator[RunningProxy]:
    p = start_proxy(proxy_config(pki, server_cert, psc_sandbox, api_services, tmp_path_factory.mktemp("lps")), pki)
    yield p
    p.stop()


def test_connect_send_disconnect_from_endpoints_json(proxy, psc_sandbox, pki, tmp_path: Path) -> None:
    nid = psc_sandbox.identities[19]["national_id"]
    endpoints.write(
        tmp_path,
        {
            "ca_bundle": str(pki.ca_bundle),
            "services": {"proxy": {"url": proxy.url}},
            "lps_clients": [{"client_id": psc_sandbox.mtls_client_id, "cert": psc_sandbox.mtls_cert.cert_path}],
            "identities": [{"national_id": nid}],
        },
    )
    runner = CliRunner()
    state = ["--state-dir", str(tmp_path)]
    r = runner.invoke(cli_app, ["lps", "connect", *state])
    assert r.exit_code == 0, r.output
    assert "Code à comparer" in r.output and "HTTP 200" in r.output
    saved = json.loads((tmp_path / "lps-session.json").read_text())
    assert saved["national_id"] == nid and saved["proxy_session_id"]
    again = runner.invoke(cli_app, ["lps", "connect", *state])
    assert again.exit_code == 0 and "HTTP 304" in again.output
    s = runner.invoke(cli_app, ["lps", "send", "signsessiondata", "signsessiondata", "--sign-session", *state])
    assert s.exit_code == 0, s.output
    assert "signature" in s.output
    d = runner.invoke(cli_app, ["lps", "disconnect", *state])
    assert d.exit_code == 0 and "HTTP 200" in d.output
    assert not (tmp_path / "lps-session.json").exists()
    after = runner.invoke(cli_app, ["lps", "send", "dmp", "fhir/DocumentReference", *state])
    assert after.exit_code == 1 and "HTTP 401" in after.output


def test_errors_are_printed(proxy, psc_sandbox, pki, tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["--state-dir", str(tmp_path), "--proxy", proxy.url, "--ca", str(pki.ca_bundle)]
    r = runner.invoke(
        cli_app, ["lps", "connect", "-n", "899999999999", "--client-id", psc_sandbox.mtls_client_id, *args]
    )
    assert r.exit_code == 1 and "HTTP 404" in r.output and "USER_NOT_FOUND" in r.output
    r = runner.invoke(cli_app, ["lps", "connect", "-n", "1", "--client-id", "x", "--channel", "SMS", *args])
    assert r.exit_code == 1 and "channel" in r.output
