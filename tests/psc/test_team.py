"""A team's sandbox: state that survives restarts and is shared by worker processes.

Over real TLS: a sandbox restarted mid-session (SQLite, then Redis) keeps its sessions and
refresh tokens; ``confiance psc serve --workers 2`` answers from either worker with the
same state (a CIBA request started on one is redeemed on the other, a refresh token
rotated on one is a replay on the other, a client registered on one is known to the other).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from confiance.core.config import dump_toml
from confiance.core.tls import ClientIdentity, client_context
from confiance.pki import IssuedCertificate, Pki
from tests.fixtures_psc import MTLS_STRUCT_ID, PscHandle, build_psc
from tests.psc.test_store import _drop_prefix

CIBA = "urn:openid:params:grant-type:ciba"


def _refresh(psc: PscHandle, refresh_token: str) -> httpx.Response:
    with psc.client("mtls") as http:
        return http.post(
            psc.token_endpoint,
            data={**psc.client_auth("mtls"), "grant_type": "refresh_token", "refresh_token": refresh_token},
        )


def _introspect(psc: PscHandle, token: str) -> dict[str, Any]:
    with psc.client("mtls") as http:
        r = http.post(psc.introspection_endpoint, data={**psc.client_auth("mtls"), "token": token})
        r.raise_for_status()
        result: dict[str, Any] = r.json()
        return result


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_restarted_sandbox_keeps_sessions_and_refresh_tokens(
    backend: str, pki: Pki, server_cert: IssuedCertificate, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        settings: dict[str, Any] = {"store": f"sqlite:///{tmp_path / 'psc.sqlite3'}"}
    else:
        settings = {"store": request.getfixturevalue("redis_url"), "store_prefix": f"t{uuid.uuid4().hex[:8]}:"}
        request.addfinalizer(lambda: _drop_prefix(settings["store"], settings["store_prefix"]))
    settings["keys_path"] = tmp_path / "keys.json"

    first = build_psc(pki, server_cert, **settings)
    public_url = first.url  # a restarted sandbox keeps its public URL, so its issuer
    try:
        tokens = first.ciba_login()
        rotated = _refresh(first, tokens["refresh_token"]).json()
    finally:
        first.stop()

    second = build_psc(pki, server_cert, **settings)  # same files/keys, new process state
    second.sandbox.set_base_url(public_url)
    try:
        assert _introspect(second, rotated["access_token"])["active"] is True
        again = _refresh(second, rotated["refresh_token"])
        assert again.status_code == 200, again.text
        assert again.json()["session_state"] == tokens["session_state"]
        # the rotation history survived too: the first refresh token is a replay
        replay = _refresh(second, tokens["refresh_token"])
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        assert _introspect(second, again.json()["access_token"])["active"] is False  # family revoked
    finally:
        second.stop()


# ---------------------------------------------------------------- two worker processes
class Workers:
    def __init__(self, proc: subprocess.Popen[str], url: str, ca: Path, identity: ClientIdentity, admin: str):
        self.proc, self.url, self.ca, self.identity, self.admin = proc, url, ca, identity, admin
        self.oidc = f"{url}/auth/realms/esante-wallet/protocol/openid-connect"

    def connection(self) -> httpx.Client:
        """One keep-alive connection (one worker answers all its requests)."""
        return httpx.Client(
            verify=client_context(self.ca, self.identity), limits=httpx.Limits(max_connections=1), timeout=30
        )

    def two_workers(self) -> tuple[httpx.Client, httpx.Client]:
        """Connections answered by two different workers (the kernel spreads new connections)."""
        seen: dict[int, httpx.Client] = {}
        spare: list[httpx.Client] = []
        for _ in range(200):
            conn = self.connection()
            pid = conn.get(f"{self.url}/health").json()["worker"]
            if pid in seen:
                spare.append(conn)
            else:
                seen[pid] = conn
            if len(seen) == 2:
                for c in spare:
                    c.close()
                a, b = seen.values()
                return a, b
        raise AssertionError(f"une seule réponse de worker sur 200 connexions : {list(seen)}")


@pytest.fixture
def workers(pki: Pki, server_cert: IssuedCertificate, tmp_path: Path) -> Iterator[Workers]:
    mtls = pki.ensure_client("psc-test-lps-mtls", MTLS_STRUCT_ID, "lps-test-mtls")
    admin = uuid.uuid4().hex
    cfg = {
        "host": "127.0.0.1",
        "port": 0,
        "admin_token": admin,
        "keys_path": str(tmp_path / "keys.json"),
        "store": f"sqlite:///{tmp_path / 'psc.sqlite3'}",
        "tls": {
            "cert": server_cert.cert_path,
            "key": server_cert.key_path,
            "ca_bundle": str(pki.ca_bundle),
            "crl": str(pki.crl_path),
        },
        "lifetimes": {"ciba_interval": 0},
        "ecps_default": {"mode": "manual", "delay_ms": 0},
        "clients": [
            {"client_id": "lps-mtls", "tls_client_auth_subject_dn": mtls.subject_dn, "espace_de_confiance": True}
        ],
    }
    path = tmp_path / "psc.toml"
    path.write_text(dump_toml(cfg))
    argv = [sys.executable, "-m", "confiance", "psc", "serve", "--config", str(path), "--workers", "2"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=os.environ)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split(" : ", 1)[1].split(" ")[0]
        handle = Workers(proc, url, pki.ca_bundle, ClientIdentity(Path(mtls.cert_path), Path(mtls.key_path)), admin)
        with handle.connection() as probe:
            for _ in range(300):
                try:
                    if probe.get(f"{url}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
        yield handle
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_two_workers_share_state(workers: Workers) -> None:
    a, b = workers.two_workers()
    nid = a.get(f"{workers.url}/sandbox/admin/identities", headers={"Authorization": f"Bearer {workers.admin}"})
    national_id = nid.json()[0]["national_id"]
    auth = {"client_id": "lps-mtls"}
    start = a.post(
        f"{workers.oidc}/ext/ciba/auth",
        data={**auth, "scope": "openid scope_all", "login_hint": national_id, "binding_message": "07"},
    )
    assert start.status_code == 200, start.text
    rid = start.json()["auth_req_id"]
    poll = {**auth, "grant_type": CIBA, "auth_req_id": rid}
    assert b.post(f"{workers.oidc}/token", data=poll).json()["error"] == "authorization_pending"

    # the e-CPS answer given through worker B's admin API reaches the request made on A
    admin = {"Authorization": f"Bearer {workers.admin}"}
    pending = b.get(f"{workers.url}/sandbox/admin/ciba", headers=admin).json()
    assert [p["auth_req_id"] for p in pending] == [rid]
    assert b.post(f"{workers.url}/sandbox/admin/ciba/{rid}/approve", headers=admin).status_code == 200
    tokens = a.post(f"{workers.oidc}/token", data=poll)
    assert tokens.status_code == 200, tokens.text
    assert b.post(f"{workers.oidc}/token", data=poll).json()["error"] == "invalid_grant"  # single use across workers

    t = tokens.json()
    refreshed = b.post(
        f"{workers.oidc}/token", data={**auth, "grant_type": "refresh_token", "refresh_token": t["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    replay = a.post(
        f"{workers.oidc}/token", data={**auth, "grant_type": "refresh_token", "refresh_token": t["refresh_token"]}
    )
    assert replay.json()["error"] == "invalid_grant"
    live = refreshed.json()["access_token"]
    assert a.post(f"{workers.oidc}/token/introspect", data={**auth, "token": live}).json()["active"] is False

    # a client registered on one worker is known to the other at once
    created = a.post(
        f"{workers.url}/sandbox/admin/clients",
        headers=admin,
        content=json.dumps({"client_id": "new-lps", "secret": "s3cret-s3cret"}),
    )
    assert created.status_code == 201, created.text
    other = b.post(
        f"{workers.oidc}/token/introspect",
        data={"client_id": "new-lps", "client_secret": "s3cret-s3cret", "token": live},
    )
    assert other.status_code == 200 and other.json() == {"active": False}

    # an e-CPS policy set through one worker applies to a request made on the other
    assert a.put(f"{workers.url}/sandbox/admin/ecps", headers=admin, json={"mode": "deny"}).status_code == 200
    denied = b.post(
        f"{workers.oidc}/ext/ciba/auth",
        data={**auth, "scope": "openid scope_all", "login_hint": national_id, "binding_message": "08"},
    ).json()["auth_req_id"]
    assert a.post(f"{workers.oidc}/token", data={**poll, "auth_req_id": denied}).json()["error"] == "access_denied"
    a.close()
    b.close()


def test_several_workers_need_shared_state(tmp_path: Path) -> None:
    from confiance.core.config import ConfigError
    from confiance.psc.config import PscConfig
    from confiance.psc.serve import check_workers

    check_workers(PscConfig(), 1)  # one process: memory is fine
    with pytest.raises(ConfigError, match="store"):
        check_workers(PscConfig(), 2)
    with pytest.raises(ConfigError, match="keys_path"):
        check_workers(PscConfig(store=f"sqlite:///{tmp_path / 's.sqlite3'}"), 2)
    check_workers(PscConfig(state_file=tmp_path / "state.json", keys_path=tmp_path / "keys.json"), 2)
