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
from tests.proxy.harness import ManualClock


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
        self.admitted: list[bytes] = []  # heads judged by admit (the proxy checks the session cookie there)
        self.hold = 0.0  # seconds the ASGI route /hold takes

    def admit(self, method: str, target: bytes, headers: Any) -> Any:
        """Like the proxy's Relay.admit: a caller without the cookie is refused from the head."""
        self.admitted.append(target)
        if (b"cookie", b"ok") in headers:
            return None
        body = b'{"code":"SESSION_NOT_FOUND"}'
        return 401, [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))], body

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
        if scope["path"] == "/hold":
            await asyncio.sleep(self.hold)
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


def _server(app: StandIn, tls: ssl.SSLContext | None, limits: ServerSection, clock: Any = None) -> Http1Server:
    """The server as serve.py wires it, with the stand-in in the proxy's place."""
    return Http1Server(
        app,
        tls,
        limits,
        outbox=app.core.outbox,
        fast_prefix=b"/send/",
        fast=app.send_now,
        admit=app.admit,
        on_start=app.core.start,
        on_stop=app.core.stop,
        clock=clock,
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
        s.sendall(b"POST /send/dmp/a?x=1 HTTP/1.1\r\nHost: h\r\nCookie: ok\r\nContent-Length: 3\r\n\r\nabc")
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
        (b"GET /" + b"a" * 4000 + b" HTTP/1.1\r\n\r\n", b"414"),
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
        s.sendall(b"POST /send/a/b HTTP/1.1\r\nHost: h\r\nCookie: ok\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):
            s.sendall(b"400\r\n" + b"z" * 1024 + b"\r\n")
        data = _read_all(s)
    assert data.startswith(b"HTTP/1.1 413") and app.sends == []


def test_expect_100_continue(front: Any, pki: Pki) -> None:
    _, thread, _ = front
    with _conn(pki, thread.port) as s:
        s.sendall(
            b"POST /send/a/b HTTP/1.1\r\nHost: h\r\nCookie: ok\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
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


def _open(s: ssl.SSLSocket) -> bool:
    """The server has not closed this connection (nothing to read yet, no EOF)."""
    s.setblocking(False)
    try:
        return s.recv(1) != b""
    except (ssl.SSLWantReadError, BlockingIOError):
        return True
    finally:
        s.setblocking(True)


def _sweeps_after(server: Http1Server, n: int) -> None:
    """Wait (polling state) until the server's sweeper has run ``n`` more times."""
    target = server.sweeps + n
    deadline = time.monotonic() + 60
    while server.sweeps < target:
        assert time.monotonic() < deadline, "the sweeper never ran"
        time.sleep(0.05)


def test_idle_and_slow_connections_are_closed(pki: Pki, server_cert: IssuedCertificate) -> None:
    """Closed once the server's clock passes the keep-alive / request-read timeout, not
    before: the clock is moved by the test (no real-time margin)."""
    app = StandIn()
    clock = ManualClock()
    limits = ServerSection(
        cert=server_cert.cert_path, key=server_cert.key_path, keep_alive_timeout=1.0, request_read_timeout=1.0
    )
    tls = server_context(ServerTLS(cert=server_cert.cert_path, key=server_cert.key_path))
    server = _server(app, tls, limits, clock=clock)
    thread = ServerThread(app, ServiceConfig(port=0), server=server).start()
    try:
        idle = _conn(pki, thread.port)
        idle.sendall(b"GET /send/a/b HTTP/1.1\r\nHost: h\r\n\r\n")
        assert _read_all(idle, until_closed=False).startswith(b"HTTP/1.1 200")
        slow = _conn(pki, thread.port)
        slow.sendall(b"GET /send/a/b HTTP/1.1\r\nHost")  # never finishes its head
        _sweeps_after(server, 2)
        assert _open(idle) and _open(slow)  # the clock has not moved: within both timeouts
        clock.advance(1.5)
        _sweeps_after(server, 2)
        assert _read_all(idle, timeout=30) == b""  # closed by the server (keep-alive timeout 1 s)
        assert _read_all(slow, timeout=30) == b""  # closed by the server (request read timeout 1 s)
        idle.close()
        slow.close()
    finally:
        thread.stop()


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


# ---------------------------------------------------------------- issue 16 §2: nothing unseen, bounded, RFC 9112
@pytest.mark.parametrize("fast", [False, True])
def test_pipelined_requests_before_a_bad_one_get_their_answers(front: Any, pki: Pki, fast: bool) -> None:
    """Valid requests followed by an invalid one in the same read: each valid one is
    answered, in order, then the 400, then the close. A relayed request is never hidden
    behind a 400 (the caller would believe it did not happen)."""
    _, thread, app = front
    app.fast = fast
    app.send_delay = 0.2  # the relayed answer comes after the bad request was parsed
    with _conn(pki, thread.port) as s:
        s.sendall(
            b"GET /send/a/1 HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /other HTTP/1.1\r\nHost: h\r\n\r\n"
            b"NOT HTTP AT ALL\r\n\r\n"
            b"GET /send/a/never HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        data = _read_all(s)
    assert [m[0] for m in app.sends] == ["GET"] and app.sends[0][1] == b"/send/a/1"
    first, second, bad = data.find(b"GET /send/a/1 0"), data.find(b"GET /other"), data.find(b"HTTP/1.1 400")
    assert 0 < first < second < bad, data
    assert data.count(b"HTTP/1.1 ") == 3 and b"connection: close" in data[bad:]
    assert b"never" not in data


def test_body_of_an_unknown_caller_is_never_read(front: Any, pki: Pki) -> None:
    """A /send announcing a body is judged from its head: without a session it is refused
    (401) and the connection closed before any of the body is read or buffered."""
    server, thread, app = front
    with _conn(pki, thread.port) as s:
        s.sendall(b"POST /send/a/b HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n")  # head only
        data = _read_all(s)  # answered and closed without waiting for the body
    assert data.startswith(b"HTTP/1.1 401") and b"connection: close" in data
    assert app.admitted == [b"/send/a/b"] and app.sends == []
    with _conn(pki, thread.port) as s:  # head and part of the body in one write: still never buffered
        s.sendall(b"POST /send/a/b HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n" + b"x" * 1000)
        data = _read_all(s)
    assert data.startswith(b"HTTP/1.1 401") and app.sends == []
    assert server.held_peak == 0 and server.held == 0


def test_expect_100_continue_without_session_is_refused(front: Any, pki: Pki) -> None:
    _, thread, app = front
    with _conn(pki, thread.port) as s:
        s.sendall(b"POST /send/a/b HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        data = _read_all(s)
    assert data.startswith(b"HTTP/1.1 401") and b"100 Continue" not in data
    assert app.sends == []


def test_bodies_held_for_queued_requests_are_bounded(pki: Pki, server_cert: IssuedCertificate) -> None:
    """Pipelined bodies waiting behind a slow answer: past the per-connection and total
    bounds the server stops reading, and every request is still answered (no connection
    waits for memory forever: one request at a time is always admitted)."""
    app = StandIn()
    app.hold = 0.02
    body_size, per_request, conns = 1_000_000, 16, 2
    limits = ServerSection(
        cert=server_cert.cert_path,
        key=server_cert.key_path,
        max_body_bytes=1_048_576,
        max_buffered_bytes_per_connection=1_048_576,
        max_buffered_bytes=1_048_576,
    )
    tls = server_context(ServerTLS(cert=server_cert.cert_path, key=server_cert.key_path))
    server = _server(app, tls, limits)
    thread = ServerThread(app, ServiceConfig(port=0), server=server).start()
    request = b"POST /hold HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % body_size + b"z" * body_size
    answers: list[int] = []

    def client() -> None:
        with _conn(pki, thread.port) as s:
            s.sendall(request * per_request)
            answers.append(_complete_responses(_read_all(s, until_closed=False, expect=per_request, timeout=60)))

    try:
        workers = [threading.Thread(target=client) for _ in range(conns)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
    finally:
        thread.stop()
    assert answers == [per_request] * conns
    unbounded = conns * per_request * body_size  # what pipelining alone would hold (32 MB)
    one_read = 1_048_576  # generous: what a TLS transport may deliver at once before the server can pause
    # Bodies are read only once reserved (≤ the total bound, plus one lone request), beyond
    # what a single read brought in before the connection paused.
    bound = limits.max_buffered_bytes + limits.max_body_bytes + conns * one_read
    assert server.held_peak <= bound < unbounded, (server.held_peak, bound)
    assert server.held == 0 and server.reserved == 0 and not server.waiting


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /other HTTP/1.1\r\n\r\n", b"400"),  # HTTP/1.1 without Host
        (b"GET /other HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400"),  # two Host lines
        (b"GET /other HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", b"400"),
        (b"GET /other HTTP/2.0\r\nHost: h\r\n\r\n", b"505"),
        (b"GET /other HTTP/3.0\r\nHost: h\r\n\r\n", b"505"),
        (b"POST /other HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", b"501"),
        (b"POST /other HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", b"501"),
        (  # chunked twice: invalid framing (the parser's own refusal)
            b"POST /other HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"400",
        ),
        (b"GET /other HTTP/1.1\r\nHost: h\r\nExpect: something-else\r\n\r\n", b"417"),
        (b"CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n", b"400"),
    ],
)
def test_rfc9112_framing_rules(front: Any, pki: Pki, request_bytes: bytes, status: bytes) -> None:
    _, thread, app = front
    with _conn(pki, thread.port) as s:
        s.sendall(request_bytes)
        data = _read_all(s)
    assert data.startswith(b"HTTP/1.1 " + status), data[:80]
    assert b"connection: close" in data and b'"code":' in data
    assert app.sends == []
