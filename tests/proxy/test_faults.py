"""Faults: upstream down / slow / failing, PSC down, AS down, isolation between sessions,
X-Forwarded-For trust. The faulty upstream is a tiny local HTTPS app; PSC and the AS are real."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from confiance.core.tls import ClientAuth
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle
from tests.proxy.harness import RunningProxy, connect_body, proxy_config, services_from, start_proxy
from tests.support import start_https


def _upstream_app() -> Starlette:
    async def echo(request: Request) -> Response:
        body = await request.body()
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "authorization": request.headers.get("authorization"),
                "cookie": request.headers.get("cookie"),
                "x_forwarded_for": request.headers.get("x-forwarded-for"),
                "custom": request.headers.get("x-custom"),
                "body": body.decode(),
            },
            headers={"Set-Cookie": "upstream=1", "X-Upstream": "yes"},
        )

    async def slow(_request: Request) -> Response:
        await asyncio.sleep(10)  # far past the proxy's 0.5 s: only the proxy's timer can answer first
        return PlainTextResponse("late")

    async def boom(_request: Request) -> Response:
        return JSONResponse({"error": "panne"}, status_code=500)

    return Starlette(
        routes=[
            Route("/echo/{rest:path}", echo, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/slow", slow),
            Route("/boom", boom),
        ]
    )


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


@pytest.fixture(scope="module")
def upstream(pki, server_cert) -> Iterator[Any]:
    srv = start_https(_upstream_app(), pki, server_cert, ClientAuth.REQUIRED)
    yield srv
    srv.stop()


def _fault_services(api: ApiHandle, upstream_url: str) -> dict[str, Any]:
    dmp = services_from(api)["dmp"]
    down = f"https://127.0.0.1:{_closed_port()}"
    return {
        **services_from(api),
        "up": {**dmp, "base_url": upstream_url, "timeout": 0.5, "forward_headers": ["x-custom"]},
        "down": {**dmp, "base_url": down},
        "asdown": {**dmp, "base_url": upstream_url, "token_endpoint": f"{down}/token"},
    }


@pytest.fixture(scope="module")
def proxy(pki, server_cert, psc_sandbox, api_services, upstream, tmp_path_factory) -> Iterator[RunningProxy]:
    cfg = proxy_config(
        pki,
        server_cert,
        psc_sandbox,
        api_services,
        tmp_path_factory.mktemp("faults"),
        services=_fault_services(api_services, upstream.url),
        server={"trusted_proxies": ["127.0.0.2/32"]},
        # Far longer than any test here: a trace read back must come from GET /traces
        # waiting for the queue, never from the batch timer.
        traces={"flush_interval": 5.0},
    )
    p = start_proxy(cfg, pki)
    yield p
    p.stop()


def _connected(proxy: RunningProxy, psc: PscHandle, i: int) -> tuple[Any, dict[str, str], str]:
    nid = psc.identities[i]["national_id"]
    c = proxy.client()
    r = c.post("/connect", json=connect_body(psc, nid))
    assert r.status_code == 200, r.text
    return c, r.json(), nid


def test_relay_methods_headers_and_body(proxy: RunningProxy, psc_sandbox: PscHandle) -> None:
    c, _, _ = _connected(proxy, psc_sandbox, 7)
    with closing(c):
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            r = c.request(
                method,
                "/send/up/echo/a/b",
                params={"q": "1"},
                content=b'{"x":1}' if method != "GET" else None,
                headers={"X-Custom": "v", "X-Forwarded-For": "6.6.6.6", "Authorization": "Bearer forged"},
            )
            assert r.status_code == 200, r.text
            e = r.json()
            assert e["method"] == method and e["path"] == "/echo/a/b" and e["query"] == "q=1"
            assert e["authorization"].startswith("Bearer ") and e["authorization"] != "Bearer forged"
            assert e["cookie"] is None  # the proxy session cookie never leaves the proxy
            assert e["x_forwarded_for"] is None
            assert e["custom"] == "v"
            assert e["body"] == ('{"x":1}' if method != "GET" else "")
            assert "set-cookie" not in r.headers  # upstream cookies would land on the proxy's domain
            assert r.headers["x-upstream"] == "yes"


def test_upstream_down_slow_failing(proxy: RunningProxy, psc_sandbox: PscHandle) -> None:
    c, _, _ = _connected(proxy, psc_sandbox, 8)
    with closing(c):
        r = c.get("/send/down/x")
        assert r.status_code == 503 and r.json()["code"] == "UPSTREAM_UNAVAILABLE"
        r = c.get("/send/up/slow")
        # the configured 0.5 s, not the upstream's 10 s (which would have been a 200 "late")
        assert r.status_code == 504 and r.json()["code"] == "UPSTREAM_TIMEOUT"
        r = c.get("/send/up/boom")
        assert r.status_code == 500 and r.json() == {"error": "panne"}
        r = c.get("/send/asdown/echo/x")
        assert r.status_code == 503 and r.json()["code"] == "AS_UNAVAILABLE"
    m = proxy.core.metrics
    assert m.upstream_errors.labels("down", "down")._value.get() >= 1
    assert m.upstream_errors.labels("up", "timeout")._value.get() >= 1
    assert m.upstream_errors.labels("up", "status_5xx")._value.get() >= 1


def test_path_tricks_never_reach_upstream(proxy: RunningProxy, psc_sandbox: PscHandle) -> None:
    c, _, _ = _connected(proxy, psc_sandbox, 9)
    with closing(c):
        for raw in (
            "/send/up/echo/%2e%2e/%2e%2e/boom",
            "/send/up/echo/..%2fboom",
            "/send/up/%2fecho",
            "/send/up//127.0.0.1/echo",
            "/send/up/echo/a%0d%0aX-Injected:%20yes",
            "/send/up/echo@127.0.0.1/x",
        ):
            r = c.get(raw)
            assert r.status_code == 400, (raw, r.text)
            assert r.json()["code"] == "UNSAFE_PATH"


def test_psc_down_is_503_with_failure_trace(pki, server_cert, psc_sandbox, tmp_path) -> None:
    cfg = proxy_config(
        pki,
        server_cert,
        psc_sandbox,
        None,
        tmp_path,
        psc={
            "discovery_url": f"https://127.0.0.1:{_closed_port()}/auth/realms/esante-wallet/.well-known/openid-configuration"
        },
    )
    p = start_proxy(cfg, pki)
    try:
        with p.client() as c:
            r = c.post("/connect", json=connect_body(psc_sandbox))
            assert r.status_code == 503 and r.json()["code"] == "PSC_UNAVAILABLE"
        assert [t["type"] for t in p.traces()] == ["CONNECT_FAILURE"]
    finally:
        p.stop()


def test_cookie_never_reaches_another_users_tokens(proxy: RunningProxy, psc_sandbox: PscHandle) -> None:
    ca, conn_a, nid_a = _connected(proxy, psc_sandbox, 10)
    cb, conn_b, nid_b = _connected(proxy, psc_sandbox, 11)

    def sign(c: Any, nid: str, conn: dict[str, str]) -> int:
        body = {
            "nationalId": nid,
            "clientID": psc_sandbox.mtls_client_id,
            "proxy_session_id": conn["proxy_session_id"],
            "session_state": conn["session_state"],
        }
        return int(c.post("/send/signsessiondata/signsessiondata", json=body).status_code)

    with closing(ca), closing(cb):
        assert sign(ca, nid_a, conn_a) == 200
        assert sign(cb, nid_b, conn_b) == 200
        # With B's cookie, the API sees B's token: A's identity is refused by the API itself.
        assert sign(cb, nid_a, conn_a) == 400
        assert sign(ca, nid_b, conn_b) == 400
    sends = [t for t in proxy.traces() if t["type"] == "SEND" and t["IdRPPS"] in (nid_a, nid_b)]
    for t in sends:
        own = conn_a if t["IdRPPS"] == nid_a else conn_b
        assert t["proxy_id_session"] == own["proxy_session_id"]


def test_forwarded_for_only_from_trusted_proxy(proxy: RunningProxy, psc_sandbox: PscHandle) -> None:
    from confiance.proxy.domain import client_address

    # The peer here is 127.0.0.1, not the trusted 127.0.0.2: the header is ignored.
    c, conn, _ = _connected(proxy, psc_sandbox, 6)
    with closing(c):
        c.get("/send/up/echo/x", headers={"X-Forwarded-For": "198.51.100.7"})
    send = [t for t in proxy.traces() if t["type"] == "SEND" and t["proxy_id_session"] == conn["proxy_session_id"]]
    assert send and send[-1]["ipAddress"] == "127.0.0.1"
    assert client_address(("127.0.0.2", 1), "198.51.100.7", proxy.core.trusted) == ("198.51.100.7", None)
    # From the trusted reverse proxy's address (127.0.0.2), the header is believed.
    import httpx

    from confiance.core.tls import client_context

    transport = httpx.HTTPTransport(local_address="127.0.0.2", verify=client_context(proxy.pki.ca_bundle))
    with httpx.Client(base_url=proxy.url, transport=transport, timeout=10) as viarp:
        viarp.cookies.set("proxy_session_id", conn["proxy_session_id"])
        assert viarp.get("/send/up/echo/y", headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}).status_code == 200
    send = [t for t in proxy.traces() if t["type"] == "SEND" and t["proxy_id_session"] == conn["proxy_session_id"]]
    assert send[-1]["ipAddress"] == "198.51.100.7" and send[-1]["apiRequest"]["path"] == "/echo/y"


def test_send_trace_persisted_for_every_relayed_request(
    proxy: RunningProxy, psc_sandbox: PscHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, conn, _ = _connected(proxy, psc_sandbox, 13)
    with closing(c):
        for i in range(50):
            assert c.get(f"/send/up/echo/n{i}").status_code == 200
    # Batched writes (flush_interval is 5 s here): GET /traces waits for the queue, so one
    # read right after the answers sees every relayed request. Shown by GET /traces
    # flushing the writer itself (observed on state, not by timing the request).
    writer = proxy.core.traces
    flushed: list[int] = []
    real_flush = writer.flush

    async def flush(timeout: float) -> bool:
        flushed.append(writer.pending())
        return bool(await real_flush(timeout=timeout))

    monkeypatch.setattr(writer, "flush", flush)
    sends = [t for t in proxy.traces() if t.get("proxy_id_session") == conn["proxy_session_id"] and t["type"] == "SEND"]
    assert len(flushed) == 1  # not the batch timer: the read flushed what was queued
    assert sorted(t["apiRequest"]["path"] for t in sends) == sorted(f"/echo/n{i}" for i in range(50))
    assert proxy.core.trace_store.verify().ok
