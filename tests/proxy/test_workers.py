"""`confiance proxy serve` as operators run it: its own process, several workers on a shared
SQLite session store, clean shutdown that drains the trace queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from confiance.core.config import dump_toml as render_toml
from confiance.core.tls import client_context
from confiance.proxy.traces import TraceStore
from tests.proxy.harness import ADMIN, connect_body, services_from


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_workers_share_sessions_and_drain_traces(
    pki, server_cert, psc_sandbox, api_services, tmp_path: Path
) -> None:
    port = _free_port()
    traces_url = f"sqlite:///{tmp_path}/traces.db"
    cfg = {
        "server": {"port": port, "cert": server_cert.cert_path, "key": server_cert.key_path, "workers": 2},
        "outbound": {"ca_bundle": str(pki.ca_bundle)},
        "psc": {"discovery_url": psc_sandbox.discovery_url},
        "lps_clients": [
            {
                "client_id": psc_sandbox.mtls_client_id,
                "auth": "mtls",
                "cert": psc_sandbox.mtls_cert.cert_path,
                "key": psc_sandbox.mtls_cert.key_path,
            }
        ],
        "services": services_from(api_services),
        "sessions": {"store": "sqlite", "url": f"sqlite:///{tmp_path}/sessions.db"},
        "traces": {"url": traces_url, "admin_token": ADMIN, "flush_interval": 2.0},
    }
    path = tmp_path / "proxy.toml"
    path.write_text(render_toml(cfg))
    log = open(tmp_path / "proxy.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "confiance", "proxy", "serve", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def output() -> str:
        return (tmp_path / "proxy.log").read_text(errors="replace")[-3000:]

    url = f"https://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, verify=client_context(pki.ca_bundle), timeout=20) as c:
            deadline = time.time() + 90  # a cold interpreter start on a loaded 2-core machine
            while True:
                assert proc.poll() is None, f"proxy exited during startup: {output()}"
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.time() < deadline, f"proxy did not start: {output()}"
                time.sleep(0.1)
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            assert len(children) == 2, output()
            nid = psc_sandbox.identities[21]["national_id"]
            conn = c.post("/connect", json=connect_body(psc_sandbox, nid)).json()
            body = {
                "nationalId": nid,
                "clientID": psc_sandbox.mtls_client_id,
                "proxy_session_id": conn["proxy_session_id"],
                "session_state": conn["session_state"],
            }
            for _ in range(20):  # new connections each time: both workers serve the session
                with httpx.Client(base_url=url, verify=client_context(pki.ca_bundle), timeout=20) as one:
                    one.cookies.set("proxy_session_id", conn["proxy_session_id"])
                    r = one.post("/send/signsessiondata/signsessiondata", json=body)
                    assert r.status_code == 200, (r.text, output())
        # SEND traces are still queued (2-s batches): a clean stop must write them all.
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, output()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    store = TraceStore(traces_url)
    rows = store.query(0, None)
    assert [r["type"] for r in rows].count("SEND") == 20
    assert store.verify().ok
    store.close()
