"""/readyz and /metrics apart from the LPS-facing port (server.admin_listen), or behind a
token (server.admin_token): the port an LPS reaches serves only the contract."""

from __future__ import annotations

from pathlib import Path

import httpx

from confiance.core.server import ServerThread, ServiceConfig, bind_socket
from confiance.core.tls import ServerTLS, client_context
from confiance.proxy.serve import build_server
from tests.fixtures_psc import PscHandle
from tests.proxy.harness import ADMIN, proxy_config, start_proxy

TOKEN = "ops-" + "y" * 24


def test_admin_listener_splits_operations_from_the_contract(
    pki, server_cert, psc_sandbox: PscHandle, tmp_path: Path
) -> None:
    cfg = proxy_config(pki, server_cert, psc_sandbox, None, tmp_path, server={"admin_listen": "127.0.0.1:0"})
    front = build_server(cfg)
    admin_sock = bind_socket("127.0.0.1", 0)
    front.admin_sockets = [admin_sock]
    server = ServerThread(
        front.app, ServiceConfig(port=0, tls=ServerTLS(cert=cfg.server.cert, key=cfg.server.key)), server=front
    )
    server.start()
    admin_url = f"https://127.0.0.1:{admin_sock.getsockname()[1]}"
    verify = client_context(pki.ca_bundle)
    try:
        with httpx.Client(base_url=server.url, verify=verify) as lps:
            assert lps.get("/metrics").status_code == 404
            assert lps.get("/readyz").status_code == 404
            assert lps.get("/healthz").status_code == 200
            assert lps.post("/connect", content=b"{}", headers={"content-type": "application/json"}).status_code == 400
            assert lps.get("/traces", params={"start": "2000-01-01T00:00:00Z"}).status_code == 401
        with httpx.Client(base_url=admin_url, verify=verify) as ops:
            r = ops.get("/readyz")
            assert r.status_code == 200, r.text
            m = ops.get("/metrics")
            assert m.status_code == 200 and "proxy_requests_total" in m.text
            # Only operations there: nothing of the contract, and no relay.
            assert ops.post("/connect", json={}).status_code == 404
            assert (
                ops.get(
                    "/traces", params={"start": "2000-01-01T00:00:00Z"}, headers={"Authorization": f"Bearer {ADMIN}"}
                ).status_code
                == 404
            )
            assert ops.get("/send/signsessiondata/x").status_code == 404
    finally:
        server.stop()
        admin_sock.close()


def test_without_admin_listener_operations_need_the_token(
    pki, server_cert, psc_sandbox: PscHandle, tmp_path: Path
) -> None:
    cfg = proxy_config(pki, server_cert, psc_sandbox, None, tmp_path, server={"admin_token": TOKEN})
    p = start_proxy(cfg, pki)
    try:
        with p.client() as c:
            for path in ("/metrics", "/readyz"):
                assert c.get(path).status_code == 401
                assert c.get(path, headers={"Authorization": "Bearer " + "z" * 28}).status_code == 401
                assert c.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    finally:
        p.stop()
