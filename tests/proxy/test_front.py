"""The proxy's own HTTP/1.1 server (confiance.proxy.http1), over real TLS on 127.0.0.1.

A small app stands in for ProxyApp so each connection rule is tested alone: the full
proxy runs on the same server in every other test of tests/proxy (see harness.py).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from confiance.core.server import ServerThread, ServiceConfig
from confiance.core.tls import ServerTLS, client_context, server_context
from confiance.pki import IssuedCertificate, Pki
from confiance.proxy.config import ServerSection
from confiance.proxy.http1.outbox import Outbox
from confiance.proxy.http1.server import Http1Server


class _Core:
    started = stopped = False

    def __init__(self) -> None:
        self.outbox = Outbox()

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True


class StandIn:
    """Answers /send with what it received; other paths through a tiny ASGI app."""

    def __init__(self) -> None:
        self.core = _Core()
        self.send_delay = 0.0
        self.fast = False  # answer /send by callback (send_now) rather than by coroutine
        self.sends: list[tuple[str, bytes, bytes, bytes]] = []

    def send_now(
        self, method: str, raw_path: bytes, query: bytes, headers: Any, client: Any, body: bytes, respond: Any
    ) -> Any:
        if not self.fast:

            async def read_body() -> bytes:
                return body

            return self.handle_send(method, raw_path, query, headers, client, read_body)
        self.sends.append((method, raw_path, query, body))
        out = b"%s %s %d" % (method.encode(), raw_path, len(body))
        answer = (200, [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(out))], out)
        asyncio.get_running_loop().call_later(self.send_delay, respond, answer)
        return None

    async def handle_send(
        self, method: str, raw_path: bytes, query: bytes, headers: Any, client: Any, read_body: Any
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        body = await read_body()
        self.sends.append((method, raw_path, query, body))
        if self.send_delay:
            await asyncio.sleep(self.send_delay)
        out = b"%s %s %d" % (method.encode(), raw_path, len(body))
        return 200, [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(out))], out

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        msg = await receive()
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        if scope["path"] == "/badheader":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1\r\nx-b: 2")]})
            await send({"type": "http.response.body", "body": b"no"})
            return
        body = b"%s %s q=%s body=%d" % (
            scope["method"].encode(),
            scope["path"].encode(),
            scope["query_string"],
            len(msg["body"]),
        )
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body[:5], "more_body": True})
        await send({"type": "http.response.body", "body": body[5:]})


def _server(app: StandIn, tls: ssl.SSLContext | None, limits: ServerSection) -> Http1Server:
    """The server as serve.py wires it, with the stand-in in the proxy's place."""
    return Http1Server(
        app,
        tls,
        limits,
        outbox=app.core.outbox,
        fast_prefix=b"/send/",
        fast=app.send_now,
        on_start=app.core.start,
        on_stop=app.core.stop,
    )


@pytest.fixture
def front(pki: Pki, server_cert: IssuedCertificate) -> Iterator[tuple[Http1Server, ServerThread, StandIn]]:
    app = StandIn()
    limits = ServerSection(
        cert=server_cert.cert_path,
        key=server_cert.key_path,
        max_body_bytes=2048,
        max_header_bytes=2048,
        keep_alive_timeout=1.0,
        request_read_timeout=1.0,
        graceful_timeout=5,
    )
    tls = server_context(ServerTLS(cert=server_cert.cert_path, key=server_cert.key_path))
    server = _server(app, tls, limits)
    thread = ServerThread(app, ServiceConfig(port=0), server=server).start()
    try:
        yield server, thread, app
    finally:
        thread.stop()


def _conn(pki: Pki, port: int) -> ssl.SSLSocket:
    ctx = client_context(pki.ca_bundle)
    ctx.check_hostname = False
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def _read_all(s: ssl.SSLSocket, until_closed: bool = True, expect: int = 1, timeout: float = 5) -> bytes:
    """Read until the peer closes (or until ``expect`` responses were seen)."""
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (TimeoutError, ssl.SSLError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
        if not until_closed and _complete_responses(data) >= expect:
            break
    return data


def _complete_responses(data: bytes) -> int:
    n, rest = 0, data
    while b"\r\n\r\n" in rest:
        head, _, rest = rest.partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 100"):
            continue
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        if len(rest) < length:
            break
        rest = rest[length:]
        n += 1
    return n


def test_send_and_asgi_routes_keep_alive(front: Any, pki: Pki) -> None:
    server, thread, app = front
    with _conn(pki, thread.port) as s:
        s.sendall(b"POST /send/dmp/a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
        first = _read_all(s, until_closed=False)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"POST /send/dmp/a 3")
        assert b"date: " in first and b"connection: close" not in first
        s.sendall(b"GET /healthz?y=2 HTTP/1.1\r\nHost: h\r\n\r\n")
        second = _read_all(s, until_closed=False)
        assert second.endswith(b"GET /healthz q=y=2 body=0") and b"content-length: 25\r\n" in second
    assert app.sends == [("POST", b"/send/dmp/a", b"x=1", b"abc")]
    assert server.app.core.started


@pytest.mark.parametrize("fast", [False, True])
def test_pipelined_requests_answered_in_order(front: Any, pki: Pki, fast: bool) -> None:
    _, thread, app = front
    app.fast = fast
    app.send_delay = 0.2  # the first answer is slow: the second must still come after it
    with _conn(pki, thread.port) as s:
        s.sendall(
            b"GET /send/a/1 HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /other HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /send/a/3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        )
        data = _read_all(s)
    first, second, third = data.find(b"GET /send/a/1 0"), data.find(b"GET /other"), data.find(b"GET /send/a/3 0")
    assert 0 < first < second < third
    assert data.count(b"HTTP/1.1 200") == 3 and data.endswith(b"GET /send/a/3 0")


def test_http10_closes_after_answer(front: Any, pki: Pki) -> None:
    _, thread, _ = front
    with _conn(pki, thread.port) as s:
        s.sendall(b"GET /send/a/b HTTP/1.0\r\n\r\n")
        data = _read_all(s)  # returns because the server closed
    assert data.startswith(b"HTTP/1.1 200") and b"connection: close" in data


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /send/a/b HTTP/1.1\r\nHost: h\r\nX-Big: " + b"y" * 4000 + b"\r\n\r\n", b"431"),
        (b"GET /" + b"a" * 4000 + b" HTTP/1.1\r\n\r\n", b"431"),
        (b"POST /send/a/b HTTP/1.1\r\nHost: h\r\nContent-Length: 999999\r\n\r\n", b"413"),
        (b"POST /connect HTTP/1.1\r\nHost: h\r\nContent-Length: 999999\r\n\r\n", b"413"),
        (b"POST /send/a/b HTTP/1.1\r\nHost: h\r\nContent-Length: nope\r\n\r\n", b"400"),
        (b"NOT HTTP AT ALL\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", b"400"),
    ],
)
def test_bad_requests_refused_and_closed(front: Any, pki: Pki, request_bytes: bytes, status: bytes) -> None:
    _, thread, app = front
    with _conn(pki, thread.port) as s:
        s.sendall(request_bytes)
        data = _read_all(s)  # the server closes after a refusal
    assert data.startswith(b"HTTP/1.1 " + status), data[:80]
    assert b"connection: close" in data and b'"code":' in data
    assert app.sends == []


def test_chunked_body_over_limit_refused(front: Any, pki: Pki) -> None:
    _, thread, app = front
    with _conn(pki, thread.port) as s:
        s.sendall(b"POST /send/a/b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):
            s.sendall(b"400\r\n" + b"z" * 1024 + b"\r\n")
        data = _read_all(s)
    assert data.startswith(b"HTTP/1.1 413") and app.sends == []


def test_expect_100_continue(front: Any, pki: Pki) -> None:
    _, thread, _ = front
    with _conn(pki, thread.port) as s:
        s.sendall(b"POST /send/a/b HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        s.settimeout(5)
        interim = s.recv(1024)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"data")
        final = _read_all(s, until_closed=False)
    assert final.startswith(b"HTTP/1.1 200") and final.endswith(b"POST /send/a/b 4")


def test_head_keeps_length_without_body(front: Any, pki: Pki) -> None:
    _, thread, _ = front
    with _conn(pki, thread.port) as s:
        s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        data = _read_all(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b""


def test_app_errors_become_500_without_leaking(front: Any, pki: Pki) -> None:
    _, thread, _ = front
    for path in (b"/boom", b"/badheader"):
        with _conn(pki, thread.port) as s:
            s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            data = _read_all(s)
        assert data.startswith(b"HTTP/1.1 500") and b"INTERNAL_ERROR" in data
        assert b"x-b" not in data


def test_idle_and_slow_connections_are_closed(front: Any, pki: Pki) -> None:
    _, thread, _ = front
    idle = _conn(pki, thread.port)
    idle.sendall(b"GET /send/a/b HTTP/1.1\r\nHost: h\r\n\r\n")
    assert _read_all(idle, until_closed=False).startswith(b"HTTP/1.1 200")
    slow = _conn(pki, thread.port)
    slow.sendall(b"GET /send/a/b HTTP/1.1\r\nHost")  # never finishes its head
    t0 = time.monotonic()
    assert _read_all(idle, timeout=6) == b""  # closed by the server (keep-alive timeout 1 s)
    assert _read_all(slow, timeout=6) == b""  # closed by the server (request read timeout 1 s)
    assert time.monotonic() - t0 < 5
    idle.close()
    slow.close()


@pytest.mark.parametrize("fast", [False, True])
def test_graceful_stop_finishes_requests_in_flight(pki: Pki, server_cert: IssuedCertificate, fast: bool) -> None:
    app = StandIn()
    app.fast = fast
    app.send_delay = 0.5
    tls = server_context(ServerTLS(cert=server_cert.cert_path, key=server_cert.key_path))
    limits = ServerSection(cert=server_cert.cert_path, key=server_cert.key_path, graceful_timeout=5)
    server = _server(app, tls, limits)
    thread = ServerThread(app, ServiceConfig(port=0), server=server).start()
    s = _conn(pki, thread.port)
    s.sendall(b"GET /send/a/slow HTTP/1.1\r\nHost: h\r\n\r\n")
    deadline = time.monotonic() + 30
    while not app.sends:  # the request is in flight (polled on state, not a fixed delay)
        assert time.monotonic() < deadline, "the request never reached the app"
        time.sleep(0.01)
    stopper = threading.Thread(target=thread.stop)
    stopper.start()
    data = _read_all(s)
    stopper.join(10)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"GET /send/a/slow 0")
    assert b"connection: close" in data  # no keep-alive past a stop
    assert app.core.stopped
    with pytest.raises(OSError):
        _conn(pki, thread.port)
    s.close()


def test_on_started_runs_once_listening(pki: Pki, server_cert: IssuedCertificate) -> None:
    """`confiance proxy serve` tunes the GC from this hook: after start-up, not before."""
    app = StandIn()
    limits = ServerSection(cert=server_cert.cert_path, key=server_cert.key_path)
    server = _server(app, None, limits)
    seen: list[bool] = []
    server.on_started = lambda: seen.append(app.core.started and not server.started)
    thread = ServerThread(app, ServiceConfig(port=0), server=server).start()
    try:
        assert seen == [True]
    finally:
        thread.stop()


def test_tune_gc_freezes_start_up_and_spaces_young_collections() -> None:
    import subprocess
    import sys

    code = (
        "import gc; from confiance.proxy.serve import tune_gc, GC_GEN0_THRESHOLD;"
        "before = gc.get_threshold(); tune_gc();"
        "assert gc.get_freeze_count() > 1000, gc.get_freeze_count();"
        "assert gc.get_threshold() == (GC_GEN0_THRESHOLD, *before[1:]), gc.get_threshold();"
        "assert gc.isenabled()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
