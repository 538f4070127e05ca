"""GET /traces over real TLS: the whole window, streamed; paging with a cursor; 400s."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from confiance.core.tls import client_context
from tests.proxy.harness import ADMIN, RunningProxy, proxy_config, start_proxy

AUTH = {"Authorization": f"Bearer {ADMIN}"}
TOTAL = 12_345  # more than the 10,000 rows /traces used to stop at (with a 200)


@pytest.fixture(scope="module")
def proxy(pki, server_cert, psc_sandbox, tmp_path_factory) -> Iterator[RunningProxy]:
    cfg = proxy_config(pki, server_cert, psc_sandbox, None, tmp_path_factory.mktemp("traces-http"))
    p = start_proxy(cfg, pki)
    store = p.core.trace_store
    for b in range(0, TOTAL, 1000):  # blocks as the writer makes them
        store.append([(1000.0 + i, {"type": "SEND", "IdRPPS": str(i)}) for i in range(b, min(b + 1000, TOTAL))])
    yield p
    p.stop()


def _iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def test_every_trace_of_the_window_is_streamed(proxy: RunningProxy) -> None:
    with proxy.client() as c:
        r = c.get("/traces", params={"start": _iso(0)}, headers=AUTH)
    assert r.status_code == 200
    assert r.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.headers
    ids = [t["IdRPPS"] for t in r.json()]
    assert ids == [str(i) for i in range(TOTAL)]
    with proxy.client() as c:  # a window: both ends inclusive
        r = c.get("/traces", params={"start": _iso(1100), "end": _iso(3099)}, headers=AUTH)
    assert [t["IdRPPS"] for t in r.json()] == [str(i) for i in range(100, 2100)]
    with proxy.client() as c:  # an empty window is an empty list
        r = c.get("/traces", params={"start": _iso(99_000)}, headers=AUTH)
    assert r.status_code == 200 and r.json() == []


def test_paging_with_limit_and_cursor(proxy: RunningProxy) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"start": _iso(0), "end": _iso(1000 + TOTAL), "limit": 4000}
    pages = 0
    with proxy.client() as c:
        while True:
            r = c.get("/traces", params=params, headers=AUTH)
            assert r.status_code == 200 and "content-length" in r.headers
            page = r.json()
            assert len(page) <= 4000
            seen += [t["IdRPPS"] for t in page]
            pages += 1
            if "x-next-cursor" not in r.headers:
                assert "link" not in r.headers
                break
            assert 'rel="next"' in r.headers["link"] and r.headers["x-next-cursor"] in r.headers["link"]
            params["cursor"] = r.headers["x-next-cursor"]
    assert pages == 4 and seen == [str(i) for i in range(TOTAL)]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": _iso(5000), "end": _iso(4000)}, "end"),
        ({"start": _iso(0), "limit": "0"}, "limit"),
        ({"start": _iso(0), "limit": "10001"}, "limit"),
        ({"start": _iso(0), "limit": "x"}, "limit"),
        ({"start": _iso(0), "cursor": "nope"}, "cursor"),
        ({"start": "yesterday"}, "start"),
        ({}, "start"),
    ],
)
def test_bad_parameters_are_400(proxy: RunningProxy, params: dict[str, str], field: str) -> None:
    with proxy.client() as c:
        r = c.get("/traces", params=params, headers=AUTH)
    assert r.status_code == 400 and r.json()["field"] == field


def test_a_store_failure_mid_stream_cuts_the_answer(proxy: RunningProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once streaming, the status is sent: a failure must not end the list cleanly."""
    store = proxy.core.trace_store
    real = store.page
    calls = {"n": 0}

    def failing(*a: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 11:  # past the bytes the server buffers before it streams
            raise sa.exc.OperationalError("SELECT", {}, Exception("base perdue"))
        return real(*a)

    monkeypatch.setattr(store, "page", failing)
    host, port = proxy.url.removeprefix("https://").split(":")
    ctx = client_context(proxy.pki.ca_bundle)
    with socket.create_connection((host, int(port))) as raw, ctx.wrap_socket(raw, server_hostname=host) as s:
        s.sendall(
            f"GET /traces?start=1970-01-01T00:00:00Z HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {ADMIN}\r\n\r\n".encode()
        )
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ssl.SSLError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert not data.endswith(b"0\r\n\r\n") and not data.rstrip().endswith(b"]")
    body = data.split(b"\r\n\r\n", 1)[1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
