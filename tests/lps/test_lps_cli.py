"""The demo LPS drives a real proxy (wired to the real PSC sandbox and API) from the CLI."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from confiance.cli import app as cli_app
from confiance.core import endpoints
from confiance.pki import Pki
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


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_screen(r: Result) -> str:
    """The refusal is a short message on stderr: no traceback anywhere, no error on stdout."""
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert "Traceback" not in r.output
    assert "injoignable" not in r.stdout and "invalide" not in r.stdout
    assert 0 < len(r.stderr.strip().splitlines()) <= 3, r.stderr
    return r.stderr


def test_proxy_down_is_one_line_naming_it_exit_3(pki, tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{_closed_port()}"
    args = ["--state-dir", str(tmp_path), "--proxy", url, "--ca", str(pki.ca_bundle)]
    runner = CliRunner()
    for cmd in (["send", "dmp", "fhir/DocumentReference"], ["disconnect"], ["connect", "-n", "1", "--client-id", "x"]):
        r = runner.invoke(cli_app, ["lps", *cmd, *args])
        assert r.exit_code == 3, r.output
        err = _one_screen(r)
        assert url in err and "injoignable" in err and "refusée" in err


def test_bad_json_body_is_refused_before_any_request(pki, tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{_closed_port()}"  # never contacted: the input is refused first
    r = CliRunner().invoke(
        cli_app, ["lps", "send", "insi", "rechercher", "-d", "{bad", "--proxy", url, "--ca", str(pki.ca_bundle)]
    )
    assert r.exit_code == 2
    assert "corps JSON invalide (--data)" in _one_screen(r)


def test_untrusted_proxy_certificate_names_the_ca_option(proxy, tmp_path: Path) -> None:
    other = Pki.init(tmp_path / "other-pki")
    args = ["--state-dir", str(tmp_path), "--proxy", proxy.url, "--ca", str(other.ca_bundle)]
    r = CliRunner().invoke(cli_app, ["lps", "send", "dmp", "fhir/DocumentReference", *args])
    assert r.exit_code == 3
    err = _one_screen(r)
    assert "certificat du proxy refusé" in err and "--ca" in err


def test_bad_ca_url_and_session_file(pki, tmp_path: Path) -> None:
    runner = CliRunner()
    port = _closed_port()
    r = runner.invoke(cli_app, ["lps", "disconnect", "--proxy", f"https://127.0.0.1:{port}", "--ca", "/nonexistent"])
    assert r.exit_code == 2 and "bundle CA inutilisable : /nonexistent" in _one_screen(r)
    r = runner.invoke(cli_app, ["lps", "disconnect", "--proxy", "proxy.local", "--ca", str(pki.ca_bundle)])
    assert r.exit_code == 2 and "URL du proxy invalide : proxy.local" in _one_screen(r)
    (tmp_path / "lps-session.json").write_text("{pas du json")
    args = ["--state-dir", str(tmp_path), "--proxy", f"https://127.0.0.1:{port}", "--ca", str(pki.ca_bundle)]
    r = runner.invoke(cli_app, ["lps", "disconnect", *args])
    assert r.exit_code == 2 and "fichier de session illisible" in _one_screen(r)


def test_session_file_is_owner_only(tmp_path: Path) -> None:
    import stat

    from confiance.lps.client import LpsClient

    with LpsClient("https://127.0.0.1:1", None, tmp_path / "lps-session.json") as lps:
        lps._save({"proxy_session_id": "s"})
        assert stat.S_IMODE((tmp_path / "lps-session.json").stat().st_mode) == 0o600
        assert lps.saved_session() == {"proxy_session_id": "s"}
