"""`confiance up` integration (launch.py) and `confiance api serve|clients` as a real subprocess."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from confiance.api import launch
from confiance.api.cli import app as api_cli
from confiance.api.config import ApiConfig
from confiance.core.launch import LaunchContext
from confiance.core.tls import client_context
from confiance.pki import IssuedCertificate, Pki
from tests.fixtures_psc import PscHandle


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def launched(
    pki: Pki, server_cert: IssuedCertificate, psc_sandbox: PscHandle, tmp_path_factory
) -> Iterator[tuple[LaunchContext, subprocess.Popen]]:
    state = tmp_path_factory.mktemp("api-up")
    ctx = LaunchContext(
        state_dir=state,
        pki=pki,
        server_cert=server_cert,
        ports={"api_as": _free_port(), "api_rs": _free_port(), "psc": 0, "proxy": 0, "guichet": 0},
        endpoints={
            "services": {
                "psc": {
                    "issuer": psc_sandbox.issuer,
                    "introspection_endpoint": psc_sandbox.introspection_endpoint,
                    "jwks_uri": psc_sandbox.jwks_uri,
                    "admin_url": f"{psc_sandbox.url}/sandbox/admin",
                    "admin_token": psc_sandbox.admin_token,
                }
            },
            "lps_clients": [
                {
                    "client_id": psc_sandbox.mtls_client_id,
                    "auth": "tls_client_auth",
                    "cert": psc_sandbox.mtls_cert.cert_path,
                    "key": psc_sandbox.mtls_cert.key_path,
                    "secret": None,
                },
                {"client_id": "lps-secret", "auth": "client_secret", "cert": None, "key": None, "secret": "x"},
            ],
        },
    )
    sl = launch.prepare(ctx)
    log = open(state / "api.log", "wb")  # noqa: SIM115 - a pipe nobody reads could fill and block the server
    proc = subprocess.Popen(sl.argv, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            if (
                httpx.get(
                    sl.health_url, verify=ssl.create_default_context(cafile=str(pki.ca_bundle)), timeout=1
                ).status_code
                == 200
            ):
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, (state / "api.log").read_text()
        assert time.monotonic() < deadline, "api serve did not start"
        time.sleep(0.1)
    yield ctx, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()


def test_endpoints_published(launched) -> None:
    ctx, _ = launched
    svc = ctx.endpoints["services"]
    a = svc["api_as"]
    assert (
        a["token_endpoint"] == a["url"] + "/token"
        and a["jwks_uri"]
        and a["revocation_endpoint"]
        and a["introspection_endpoint"]
    )
    assert {c["client_id"] for c in a["clients"]} == {"proxy", "lps-mtls"}  # the secret-only LPS has no certificate
    for name in ("signsessiondata", "insi", "dmp"):
        assert {"url", "audience", "scopes"} <= set(svc[name])
    cfg = ApiConfig.load(a["config"])
    assert cfg.psc.mode == "introspection" and cfg.authorization_server.token_lifetime == 4 * 3600


def test_full_flow_against_subprocess(launched, psc_sandbox: PscHandle, pki: Pki) -> None:
    ctx, _ = launched
    svc = ctx.endpoints["services"]
    tokens = psc_sandbox.ciba_login()
    with httpx.Client(verify=client_context(pki.ca_bundle, psc_sandbox.mtls_identity)) as http:
        r = http.post(
            svc["api_as"]["token_endpoint"],
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": tokens["access_token"],
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "subject_issuer": "psc",
                "scope": "signsessiondata",
            },
        )
        assert r.status_code == 200, r.text
        r = http.post(
            svc["signsessiondata"]["url"] + "/signsessiondata",
            headers={"Authorization": "Bearer " + r.json()["access_token"]},
            json={
                "nationalId": psc_sandbox.national_id,
                "clientID": psc_sandbox.mtls_client_id,
                "proxy_session_id": "p1",
                "session_state": tokens["session_state"],
            },
        )
        assert r.status_code == 200 and r.json()["signature"].count(".") == 2


def test_cli_registers_client_live(launched, psc_sandbox: PscHandle, pki: Pki, tmp_path: Path) -> None:
    ctx, _ = launched
    config = ctx.endpoints["services"]["api_as"]["config"]
    newcomer = pki.ensure_client("api-test-newcomer", "3" + "12345678200010", "nouveau-lps")
    runner = CliRunner()
    tokens = psc_sandbox.ciba_login()
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": tokens["access_token"],
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "scope": "insi",
    }
    url = ctx.endpoints["services"]["api_as"]["token_endpoint"]
    with httpx.Client(verify=client_context(pki.ca_bundle, _identity(newcomer))) as http:
        assert http.post(url, data=form).json()["error"] == "invalid_client"
        res = runner.invoke(
            api_cli,
            [
                "clients",
                "add",
                "--config",
                config,
                "--client-id",
                "newcomer",
                "--cert",
                newcomer.cert_path,
                "--scope",
                "insi",
            ],
        )
        assert res.exit_code == 0, res.output
        listed = runner.invoke(api_cli, ["clients", "list", "--config", config])
        assert "newcomer" in listed.output
        time.sleep(1.1)  # the AS looks at the clients file at most once a second
        r = http.post(url, data=form)
        assert r.status_code == 200, r.text
        assert http.post(url, data={**form, "scope": "dmp"}).json()["error"] == "invalid_scope"
        res = runner.invoke(api_cli, ["clients", "remove", "--config", config, "newcomer"])
        assert res.exit_code == 0
        time.sleep(1.1)
        assert http.post(url, data=form).json()["error"] == "invalid_client"
    res = runner.invoke(
        api_cli,
        ["clients", "add", "--config", config, "--client-id", "sbx", "--dn", "CN=x,OU=3999999999,C=FR", "--sandbox"],
    )
    assert res.exit_code == 0 and "Secret client" in res.output
    data = json.loads(Path(ApiConfig.load(config).authorization_server.clients_file or "").read_text())
    assert data["clients"][0]["secret_sha256"] and "secret" not in data["clients"][0]


def test_bad_config_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[tls]\ncert = "a"\nkey = "b"\nca_bundle = "c"\n[psc]\nissuer = "https://x"\nclient_id = "a"\n[authorization_server]\ntoken_lifetime = 60\n'
    )
    res = CliRunner().invoke(api_cli, ["serve", "--config", str(bad)])
    assert res.exit_code == 2 and "authorization_server.token_lifetime" in res.output


def test_busy_port_is_one_line_naming_the_address(launched) -> None:
    """A second `api serve` on the ports the first one holds: refused in one line, exit 1."""
    ctx, _ = launched
    config = ctx.endpoints["services"]["api_as"]["config"]
    r = subprocess.run(
        [sys.executable, "-m", "confiance", "api", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert r.returncode == 1, r.stderr
    assert f"impossible d'écouter sur 127.0.0.1:{ctx.ports['api_as']} : déjà utilisé" in r.stderr
    assert "Traceback" not in r.stderr


def test_sigterm_stops_both_servers(launched) -> None:
    ctx, proc = launched
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=15)
    for port in (ctx.ports["api_as"], ctx.ports["api_rs"]):
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass


def _identity(cert: IssuedCertificate):
    from confiance.core.tls import ClientIdentity

    return ClientIdentity(Path(cert.cert_path), Path(cert.key_path))
