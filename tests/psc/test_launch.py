"""`confiance up` integration and the CLI against a sandbox running in its own process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from confiance.core.config import load_config
from confiance.core.launch import DEFAULT_PORTS, LaunchContext
from confiance.core.tls import ClientIdentity, client_context
from confiance.pki import Pki
from confiance.psc import launch
from confiance.psc.app import PscSandbox
from confiance.psc.config import ClientConfig, PscConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LaunchContext, Any]]:
    state = tmp_path_factory.mktemp("up")
    pki = Pki.init(state / "pki")
    ctx = LaunchContext(
        state_dir=state,
        pki=pki,
        server_cert=pki.ensure_server("localhost"),
        ports={**DEFAULT_PORTS, "psc": free_port()},
        options={"psc": {"ecps_default": {"mode": "manual", "delay_ms": 0}}},
    )
    ctx.endpoints.update({"services": {}, "lps_clients": [], "identities": []})
    svc = launch.prepare(ctx)
    proc = subprocess.Popen(svc.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(verify=client_context(pki.ca_bundle)) as http:
            for _ in range(200):
                try:
                    if http.get(svc.health_url).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                pytest.fail("le bac à sable n'a pas démarré")
        yield ctx, svc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def cli(ctx: LaunchContext, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "confiance", "psc", *args, "--config", str(ctx.state_dir / "psc.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_endpoints_json_contract(running: tuple[LaunchContext, Any]) -> None:
    ctx, svc = running
    psc = ctx.endpoints["services"]["psc"]
    for key in (
        "url",
        "issuer",
        "discovery",
        "token_endpoint",
        "ciba_endpoint",
        "introspection_endpoint",
        "jwks_uri",
        "end_session_endpoint",
        "admin_token",
        "ecps_url",
    ):
        assert psc[key], key
    kinds = {c["auth"]: c for c in ctx.endpoints["lps_clients"]}
    assert set(kinds) == {"tls_client_auth", "client_secret"}
    assert kinds["tls_client_auth"]["dn"].startswith("CN=lps-demo,OU=3")
    assert len(ctx.endpoints["identities"]) >= 20
    with httpx.Client(verify=client_context(ctx.ca_bundle)) as http:
        meta = http.get(psc["discovery"]).json()
    assert meta["issuer"] == psc["issuer"] and meta["token_endpoint"] == psc["token_endpoint"]
    # the config written is valid and keeps credentials across a second prepare
    first = load_config(ctx.state_dir / "psc.toml", PscConfig)
    again = launch.prepare(
        LaunchContext(
            ctx.state_dir, ctx.pki, ctx.server_cert, ctx.ports, endpoints={"services": {}}, options=ctx.options
        )
    )
    assert again.url == svc.url
    second = load_config(ctx.state_dir / "psc.toml", PscConfig)
    assert first.admin_token == second.admin_token
    assert [c.secret for c in first.clients] == [c.secret for c in second.clients]


def test_cli_manual_ciba_with_demo_mtls_client(running: tuple[LaunchContext, Any]) -> None:
    ctx, _ = running
    psc = ctx.endpoints["services"]["psc"]
    lps = next(c for c in ctx.endpoints["lps_clients"] if c["auth"] == "tls_client_auth")
    nid = ctx.endpoints["identities"][1]["national_id"]
    identity = ClientIdentity(Path(lps["cert"]), Path(lps["key"]))
    with httpx.Client(verify=client_context(ctx.ca_bundle, identity)) as http:
        body = http.post(
            psc["ciba_endpoint"],
            data={
                "client_id": lps["client_id"],
                "scope": "openid scope_all",
                "acr_values": "eidas1",
                "login_hint": nid,
                "binding_message": "58",
                "channel": "CARD",
            },
        ).json()
        rid = body["auth_req_id"]
        pending = cli(ctx, "pending")
        assert pending.returncode == 0 and rid in pending.stdout and "58" in pending.stdout
        done = cli(ctx, "deny", rid)
        assert done.returncode == 0 and "refusée" in done.stdout
        r = http.post(
            psc["token_endpoint"],
            data={"client_id": lps["client_id"], "grant_type": "urn:openid:params:grant-type:ciba", "auth_req_id": rid},
        )
        assert r.json()["error"] == "access_denied"
        again = cli(ctx, "approve", rid)
        assert again.returncode == 1 and "erreur" in again.stderr  # refusals go to stderr (core.cli_config.fail)


def test_cli_identities_and_clients(running: tuple[LaunchContext, Any], tmp_path: Path) -> None:
    ctx, _ = running
    listed = cli(ctx, "identities", "list", "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) >= 20
    new = tmp_path / "ident.yaml"
    new.write_text(
        "national_id: '899900000777'\ngiven_name: Test\nfamily_name: CLI-TEST\n"
        "exercices:\n  - {codeProfession: '50', nomDexercice: CLI-TEST, prenomDexercice: Test}\n"
    )
    created = cli(ctx, "identities", "create", str(new))
    assert created.returncode == 0, created.stdout + created.stderr
    assert "899900000777" in cli(ctx, "identities", "list").stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("national_id: '1'\n")
    assert cli(ctx, "identities", "create", str(bad)).returncode == 1
    made = cli(ctx, "clients", "create", "cli-lps", "--secret", "secret-de-test-cli")
    assert made.returncode == 0
    assert "cli-lps" in cli(ctx, "clients", "list").stdout
    # additions survive a restart (state file)
    sandbox = PscSandbox(load_config(ctx.state_dir / "psc.toml", PscConfig))
    assert "cli-lps" in sandbox.provider.clients and "899900000777" in sandbox.provider.identities


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    from confiance.core.config import ConfigError

    p = tmp_path / "psc.toml"
    p.write_text("[lifetimes]\naccess_tokn = 3\n")
    with pytest.raises(ConfigError, match="access_tokn"):
        load_config(p, PscConfig)
    with pytest.raises(ValueError, match="mTLS"):
        ClientConfig(client_id="x", secret="assez-long-secret", espace_de_confiance=True)
    r = subprocess.run(
        [sys.executable, "-m", "confiance", "psc", "serve", "--config", str(p)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "access_tokn" in r.stderr
