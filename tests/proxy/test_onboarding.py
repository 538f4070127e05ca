"""LPS onboarded while the proxy runs (`confiance proxy clients add`): picked up without restart.

The proxy re-reads the clients file at most once a second by its injected clock; the tests
move that clock (harness.ManualClock) instead of sleeping past the interval."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from confiance.core.clients_file import save_clients as save_clients_file
from confiance.proxy.config import LpsClient, load_clients_file
from confiance.psc.config import ClientConfig
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle
from tests.proxy.harness import ManualClock, RunningProxy, connect_body, proxy_config, start_proxy


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def onboarding(
    pki, server_cert, psc_sandbox, api_services, tmp_path_factory, clock: ManualClock
) -> Iterator[tuple[RunningProxy, Path]]:
    tmp = tmp_path_factory.mktemp("onboarding")
    clients_file = tmp / "lps-clients.json"
    cfg = proxy_config(pki, server_cert, psc_sandbox, api_services, tmp, lps_clients_file=str(clients_file))
    proxy = start_proxy(cfg, pki, clock=clock)
    yield proxy, clients_file
    proxy.stop()


def _wait_connect(proxy: RunningProxy, body: dict[str, str], expected: int, clock: ManualClock) -> int:
    clock.advance(1.1)  # past the re-read interval: the next request looks at the file
    with proxy.client() as c:
        return c.post("/connect", json=body).status_code


def test_new_lps_is_served_after_clients_add(
    onboarding: tuple[RunningProxy, Path], psc_sandbox: PscHandle, api_services: ApiHandle, pki, clock: ManualClock
) -> None:
    proxy, clients_file = onboarding
    cert = pki.issue_client("39000000000101", "lps-onboarded", name="proxy-onboarded-lps")
    psc_sandbox.sandbox.register_client(
        ClientConfig(client_id="lps-onboarded", tls_client_auth_subject_dn=cert.subject_dn, espace_de_confiance=True)
    )
    body = connect_body(psc_sandbox, client_id="lps-onboarded")
    with proxy.client() as c:
        assert c.post("/connect", json=body).status_code == 404  # unknown before onboarding
    save_clients_file(
        clients_file,
        [LpsClient(client_id="lps-onboarded", auth="mtls", cert=Path(cert.cert_path), key=Path(cert.key_path))],
    )
    assert _wait_connect(proxy, body, 200, clock) == 200
    traces = [t for t in proxy.traces() if t["clientId"] == "lps-onboarded" and t["type"] == "CONNECT_SUCCESS"]
    assert traces and traces[-1]["dn"] == cert.subject_dn


def test_bad_clients_file_keeps_previous_clients(
    onboarding: tuple[RunningProxy, Path], psc_sandbox, clock: ManualClock
) -> None:
    proxy, clients_file = onboarding
    before = dict(proxy.core.clients)
    clients_file.write_text("{not json")
    clock.advance(1.1)
    proxy.core.refresh_clients()
    assert proxy.core.clients == before


def test_config_clients_cannot_be_overridden(
    onboarding: tuple[RunningProxy, Path], psc_sandbox, clock: ManualClock
) -> None:
    proxy, clients_file = onboarding
    original = proxy.core.clients[psc_sandbox.mtls_client_id]
    save_clients_file(clients_file, [LpsClient(client_id=psc_sandbox.mtls_client_id, auth="secret", secret="x" * 20)])
    clock.advance(1.1)
    proxy.core.refresh_clients()
    assert proxy.core.clients[psc_sandbox.mtls_client_id] is original


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "confiance", "proxy", "clients", *args], capture_output=True, text=True, check=False
    )


def test_cli_add_list_remove(tmp_path: Path, pki, server_cert, psc_sandbox) -> None:
    from confiance.core.config import dump_toml as render_toml

    cfg = proxy_config(pki, server_cert, psc_sandbox, None, tmp_path)  # no services: flat TOML suffices
    data = cfg.model_dump(mode="json", exclude_none=True)
    data["lps_clients_file"] = str(tmp_path / "extra.json")
    config = tmp_path / "proxy.toml"
    config.write_text(render_toml(data))
    cert = pki.issue_client("39000000000101", "lps-cli", name="proxy-cli-onboarded")
    r = _cli("add", "--config", str(config), "--client-id", "lps-cli", "--cert", cert.cert_path, "--key", cert.key_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [c.client_id for c in load_clients_file(tmp_path / "extra.json")] == ["lps-cli"]
    again = _cli(
        "add", "--config", str(config), "--client-id", "lps-cli", "--cert", cert.cert_path, "--key", cert.key_path
    )
    assert again.returncode == 2 and "déjà" in again.stdout
    missing = _cli("add", "--config", str(config), "--client-id", "x", "--cert", "/nope.pem", "--key", "/nope.key")
    assert missing.returncode == 2
    assert "lps-cli" in _cli("list", "--config", str(config)).stdout
    assert _cli("remove", "--config", str(config), "--client-id", "lps-cli").returncode == 0
    assert load_clients_file(tmp_path / "extra.json") == []
