"""Faults on the trace path never hang a caller nor strand a session: a stopped trace keeper
(SIGSTOP) and an unreachable PostgreSQL (its port closed) make /connect answer 503
TRACES_UNAVAILABLE after ``commit_timeout``, leave no session behind, and show in /readyz."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from tests.fixtures_psc import PscHandle
from tests.proxy.harness import RunningProxy, connect_body, proxy_config, start_proxy
from tests.proxy.test_stores import TcpRelay


def _until(check: Callable[[], bool], what: str, tries: int = 200) -> None:
    """Poll a state the proxy reaches by itself (no assertion on how long it takes;
    the bound only keeps a regression from hanging the suite)."""
    import time

    for _ in range(tries):
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"jamais atteint : {what}")


def _ready(p: RunningProxy) -> tuple[int, list[str]]:
    with p.client() as c:
        r = c.get("/readyz")
    return r.status_code, r.json().get("failing", [])


def _sessions(p: RunningProxy) -> int:
    """Sessions in the proxy's in-process store (a dict: readable from this thread)."""
    return asyncio.run(p.core.store.count())


def _connect_refused_then_nothing_left(p: RunningProxy, psc: PscHandle, nid: str) -> None:
    with p.client() as c:
        r = c.post("/connect", json=connect_body(psc, nid))
    assert r.status_code == 503 and r.json()["code"] == "TRACES_UNAVAILABLE", r.text
    assert "set-cookie" not in r.headers
    _until(lambda: _sessions(p) == 0, "la session non tracée supprimée")


def test_stopped_keeper(pki, server_cert, psc_sandbox: PscHandle, tmp_path: Path) -> None:
    cfg = proxy_config(
        pki,
        server_cert,
        psc_sandbox,
        None,
        tmp_path,
        traces={"writer": "process", "commit_timeout": 2.0, "heartbeat_interval": 0.1, "keeper_timeout": 600},
    )
    p = start_proxy(cfg, pki)
    keeper = p.core.traces._append
    try:
        nid = psc_sandbox.identities[3]["national_id"]
        _until(lambda: p.core.traces.answered, "keeper démarré")
        with p.client() as c:
            r = c.post("/connect", json=connect_body(psc_sandbox, nid))
            assert r.status_code == 200, r.text
            assert c.delete("/disconnect").status_code == 200
        assert _ready(p)[0] == 200
        pid = keeper.pid  # type: ignore[attr-defined]
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            _connect_refused_then_nothing_left(p, psc_sandbox, nid)
            _until(lambda: "trace_keeper" in _ready(p)[1], "/readyz signale le keeper arrêté")
        finally:
            os.kill(pid, signal.SIGCONT)
        _until(lambda: _ready(p)[0] == 200, "/readyz de nouveau prêt")
        with p.client() as c:
            r = c.post("/connect", json=connect_body(psc_sandbox, nid))
            assert r.status_code == 200
        mine = [t for t in p.traces() if t["IdRPPS"] == nid]
        assert any(t["type"] == "CONNECT_FAILURE" and t.get("reason") == "traces_unavailable" for t in mine)
        # The one session alive is the last connect's.
        assert _sessions(p) == 1
    finally:
        p.stop()


def test_unreachable_postgres(
    pki, server_cert, psc_sandbox: PscHandle, postgres_schema_url: str, tmp_path: Path
) -> None:
    port = urlparse(postgres_schema_url).port or 5432
    relay = TcpRelay(port)
    relay.start()
    url = postgres_schema_url.replace(f":{port}/", f":{relay.port}/")
    cfg = proxy_config(
        pki,
        server_cert,
        psc_sandbox,
        None,
        tmp_path,
        traces={
            "url": url,
            "writer": "process",
            "commit_timeout": 2.0,
            "db_timeout": 1.0,
            "checkpoint_key": str(tmp_path / "k.json"),
            "witness": str(tmp_path / "w.jsonl"),
        },
    )
    p = start_proxy(cfg, pki)
    try:
        nid = psc_sandbox.identities[4]["national_id"]
        _until(lambda: p.core.traces.answered, "keeper démarré")
        with p.client() as c:
            r = c.post("/connect", json=connect_body(psc_sandbox, nid))
            assert r.status_code == 200, r.text
            assert c.delete("/disconnect").status_code == 200
        relay.cut()  # the port is closed: connections refused
        _connect_refused_then_nothing_left(p, psc_sandbox, nid)
        status, failing = _ready(p)
        assert status == 503 and "traces" in failing
        relay.start()
        _until(lambda: _ready(p)[0] == 200, "/readyz de nouveau prêt")
        with p.client() as c:
            assert c.post("/connect", json=connect_body(psc_sandbox, nid)).status_code == 200
        assert p.core.trace_store.verify().ok
    finally:
        p.stop()
        relay.cut()


def test_commit_durability_send_never_hangs(
    pki, server_cert, psc_sandbox: PscHandle, api_services, tmp_path: Path
) -> None:
    """send_durability = "commit": a relayed request whose trace cannot be committed is
    answered after commit_timeout (it happened: its answer goes back), and its trace,
    kept queued, is committed once the keeper runs again."""
    cfg = proxy_config(
        pki,
        server_cert,
        psc_sandbox,
        api_services,
        tmp_path,
        traces={"writer": "process", "send_durability": "commit", "commit_timeout": 2.0, "keeper_timeout": 600},
    )
    p = start_proxy(cfg, pki)
    keeper = p.core.traces._append
    try:
        nid = psc_sandbox.identities[5]["national_id"]
        with p.client() as c:
            r = c.post("/connect", json=connect_body(psc_sandbox, nid))
            assert r.status_code == 200, r.text
            data = {
                "nationalId": nid,
                "clientID": psc_sandbox.mtls_client_id,
                "proxy_session_id": r.json()["proxy_session_id"],
                "session_state": r.json()["session_state"],
            }
            pid = keeper.pid  # type: ignore[attr-defined]
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                s = c.post("/send/signsessiondata/signsessiondata", json=data)
                assert s.status_code == 200, s.text
            finally:
                os.kill(pid, signal.SIGCONT)
        sends = [t for t in p.traces() if t["IdRPPS"] == nid and t["type"] == "SEND"]
        assert len(sends) == 1
    finally:
        p.stop()
