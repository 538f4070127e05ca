"""`confiance conformity run|verify` end to end: endpoints.json in, signed reports out."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from confiance.cli import app
from confiance.conformity.report import verify_report
from confiance.core.jose import verify_jws
from confiance.pki import IssuedCertificate, Pki
from tests.conformity.double import TRACES_TOKEN
from tests.conformity.harness import double_config, start_double
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle

runner = CliRunner()


def _endpoints(tmp: Path, proxy_url: str, psc: PscHandle, api: ApiHandle) -> Path:
    data = {
        "state_dir": str(tmp / "state"),
        "ca_bundle": str(psc.ca_bundle),
        "services": {
            "psc": {"url": psc.url, "admin_token": psc.admin_token},
            "signsessiondata": {"jwks_uri": api.rs_jwks_uri},
            "proxy": {"url": proxy_url, "traces_auth": {"value": f"Bearer {TRACES_TOKEN}"}},
        },
        "lps_clients": [
            {
                "client_id": psc.mtls_client_id,
                "auth": "tls_client_auth",
                "cert": psc.mtls_cert.cert_path,
                "key": psc.mtls_cert.key_path,
            }
        ],
        "identities": psc.identities,
    }
    path = tmp / "endpoints.json"
    path.write_text(json.dumps(data))
    return path


def test_run_writes_signed_reports_and_verify_detects_edits(
    tmp_path: Path, pki: Pki, server_cert: IssuedCertificate, psc_sandbox: PscHandle, api_services: ApiHandle
) -> None:
    server = start_double(pki, server_cert, double_config(psc_sandbox, api_services))
    try:
        eps = _endpoints(tmp_path, server.url, psc_sandbox, api_services)
        out = tmp_path / "out" / "rapport.json"
        html = tmp_path / "out" / "rapport.html"
        only = ["connect.ciba", "send.signsessiondata", "disconnect", "traces.fields"]
        args = ["conformity", "run", "--endpoints", str(eps), "--report", str(out), "--html", str(html)]
        for check in only:
            args += ["--only", check]
        result = runner.invoke(app, args)
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    assert "réussi" in result.output
    jws = out.with_name("rapport.json.jws").read_text()
    jwks = json.loads((tmp_path / "state" / "conformity" / "jwks.json").read_text())
    report = verify_report(jws, jwks)
    assert json.loads(verify_jws(jws, jwks)) == report  # the guichet's joserfc-based path agrees
    assert [c["id"] for c in report["checks"]] == only and report["conforme"] is True
    assert report["proxy"]["url"] == server.url and report["tool"]["name"]
    assert "Rapport de conformité" in html.read_text()
    state = ["--state-dir", str(tmp_path / "state")]
    assert runner.invoke(app, ["conformity", "verify", str(out), *state]).exit_code == 0
    assert runner.invoke(app, ["conformity", "verify", str(out.with_name("rapport.json.jws")), *state]).exit_code == 0
    original = out.read_bytes()
    edited = original.replace(b'"failed":0', b'"failed":1', 1)
    assert edited != original
    out.write_bytes(edited)
    tampered = runner.invoke(app, ["conformity", "verify", str(out), *state])
    assert tampered.exit_code == 1 and "NON authentique" in tampered.output


def test_run_without_a_proxy_url_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["conformity", "run", "--endpoints", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
