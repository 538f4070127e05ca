"""The proxy's own HTTPS/1.1 server: ``/send`` answered in the protocol, the rest via ASGI.

Why not uvicorn here (every other service uses it): measured on this project's benchmark
(docs/benchmarks/proxy.md), a relay behind uvicorn's ASGI cycle reached about a quarter of
an nginx worker, and the same relay on a bare event-loop protocol reached nginx's order of
magnitude with a lower tail latency. Per request the ASGI cycle builds scope and message
dicts, re-validates every response header, writes head and body separately and arms a
keep-alive timer; the hot path needs none of it, because a /send response is complete
(status, headers, one body) when the upstream answers.

What this server does, and the limits it enforces (all from ``[server]``):

* HTTP/1.1 keep-alive and HTTP/1.0, ``Connection: close``, pipelining (answers in request
  order), ``Expect: 100-continue``;
* request head ≤ ``max_header_bytes`` (431), body ≤ ``max_body_bytes`` (413, decided from
  Content-Length before reading when possible), malformed requests 400 — each then closes;
* a request must arrive within ``request_read_timeout`` (slow clients are dropped), an idle
  keep-alive connection is closed after ``keep_alive_timeout``: one sweeper per server,
  not a timer per request;
* backpressure: a client that does not read its responses stops being read;
* graceful stop: stop accepting, let requests in flight finish (``graceful_timeout``),
  drain traces (the app's core), then close.

Requests are buffered whole before they are handled (bodies are capped, and /send needs
the whole body before it can relay), so each route sees a complete request. The non-/send
routes (connect, disconnect, traces, web login, health, metrics) are few and cold; they get
a minimal buffered ASGI exchange with the Starlette router.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import gc
import http
import logging
import re
import signal
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httptools

from confiance.core.server import tls_extension

from .app import Answer, ProxyApp, error_answer
from .domain import ProxyError, internal_error
from .outbox import Outbox

if TYPE_CHECKING:
    from .config import ProxyConfig, ServerSection

log = logging.getLogger("confiance.proxy.front")

SEND_PREFIX = b"/send/"
PIPELINE_MAX = 16  # complete requests queued on one connection before we stop reading it
_HEADER_NAME = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9a-zA-Z]+$")
_HEADER_VALUE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")


def _invalid(message: str) -> ProxyError:
    return ProxyError(400, "INVALID_REQUEST", message, metadata={})


def _over_limit(status: int, code: str, what: str, limit: int) -> ProxyError:
    return ProxyError(status, code, f"{what} trop volumineux (max {limit} octets)", metadata={})


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1")


STATUS_LINES = {code: _status_line(code) for code in range(100, 600)}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(slots=True)
class Request:
    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    version: str
    body: bytes = b""


class _DateHeader:
    """``date:`` header bytes, formatted once per second by the server's tick (every
    0.1 s), not read from the clock per response: one call less on every answer."""

    def __init__(self) -> None:
        self._second = -1
        self.value = b""
        self.tick()

    def tick(self) -> None:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self.value = b"date: " + email.utils.formatdate(now, usegmt=True).encode("ascii") + b"\r\n"


class Connection(asyncio.Protocol):
    """One client connection: parser callbacks build requests, one handled at a time."""

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.app = server.app
        self.limits = server.limits
        self._max_head = server.limits.max_header_bytes
        self.loop = server.loop
        self.outbox = server.outbox
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer: tuple[str, int] | None = None
        self.local: tuple[str, int] | None = None
        self.tls_ext: dict[str, Any] | None = None
        self.queue: collections.deque[Request] = collections.deque()
        self.closing = False
        self.read_paused = False
        self.write_paused = False
        self.last_active = self.loop.time()
        self.request_started: float | None = None  # first byte of a request not yet complete
        # Per-request parse state
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._current: Request | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._expect_continue = False
        self._handling: Request | None = None  # the request being answered (one at a time)
        self._respond_bound = self._respond  # bound once: the /send fast path's callback

    @property
    def busy(self) -> bool:
        """A request is being handled (its answer not written yet)."""
        return self._handling is not None

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if peer else None
        local = transport.get_extra_info("sockname")
        self.local = (str(local[0]), int(local[1])) if local else None
        self.tls_ext = tls_extension(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        self.queue.clear()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if self.request_started is None:
            self.request_started = self.last_active
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(_invalid("mise à niveau de protocole non prise en charge"))
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raised; our own refusals carry their status.
            why = exc.__context__
            self._reject(why if isinstance(why, ProxyError) else _invalid("requête HTTP invalide"))

    def pause_writing(self) -> None:
        # The client is not reading its responses: stop reading its requests.
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if len(self.queue) < PIPELINE_MAX:
            self._resume_reading()

    # ------------------------------------------------------------------ httptools callbacks
    # Per-request parse state is reset when a request completes (on_message_complete), not
    # in an on_message_begin callback: one Python call less per request. A request that
    # fails mid-way closes the connection, so its leftovers are never read.
    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self._max_head:
            raise self._head_too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._max_head:
            raise self._head_too_large()
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        p = self.parser
        version = p.get_http_version()
        keep_alive = bool(p.should_keep_alive()) and version == "1.1"
        req = Request(p.get_method().decode("ascii"), self._url, self._headers, keep_alive, version)
        self._current = req
        for k, v in self._headers:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    raise _invalid("Content-Length invalide") from None
                if declared > self.limits.max_body_bytes:
                    raise self._too_large()
        if self._expect_continue and self.transport is not None:
            self.outbox.write(self.transport, CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.limits.max_body_bytes:
            raise self._too_large()
        self._body.append(body)

    def on_message_complete(self) -> None:
        req = self._current
        assert req is not None
        self._current = None
        if self._body:
            req.body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            self._body = []
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._body_size = 0
        self._expect_continue = False
        self.request_started = None
        self.queue.append(req)
        if len(self.queue) >= PIPELINE_MAX:
            self._pause_reading()
        if self._handling is None:
            self._next()

    # ------------------------------------------------------------------ handling
    def _next(self) -> None:
        if self.closing or not self.queue:
            return
        req = self.queue.popleft()
        self._handling = req
        if req.target.startswith(SEND_PREFIX):
            raw_path, _, query = req.target.partition(b"?")
            try:
                pending = self.app.send_now(
                    req.method, raw_path, query, req.headers, self.peer, req.body, self._respond_bound
                )
            except Exception:
                log.exception("erreur interne sur /send")
                self._reject(internal_error())
                return
            if pending is None:
                return  # answered, or will be from the upstream's data callback
            task = self.loop.create_task(self._send(pending))
        else:
            task = self.loop.create_task(self._asgi(req))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    async def _send(self, pending: Awaitable[Answer]) -> None:
        """A /send that the app answers on its awaited path (see ``ProxyApp.send_now``)."""
        try:
            answer = await pending
        except Exception:
            log.exception("erreur interne sur /send")
            self._reject(internal_error())
            return
        self._respond(answer)

    async def _asgi(self, req: Request) -> None:
        self._respond(await self.server.asgi_exchange(self, req))

    def _respond(self, answer: Answer) -> None:
        """Answer the request being handled, then go on with the connection."""
        req = self._handling
        if req is None or self.transport is None or self.closing:
            return
        status, headers, body = answer
        keep_alive = req.keep_alive and not self.server.stopping
        self._write(status, headers, body if req.method != "HEAD" else b"", keep_alive)
        self.last_active = self.loop.time()
        self._handling = None
        if not keep_alive:
            self._close()
            return
        if self.queue:
            self._next()
        if self.read_paused and len(self.queue) < PIPELINE_MAX and not self.write_paused:
            self._resume_reading()

    def _reject(self, exc: ProxyError) -> None:
        """Answer an error that ends the connection (the rest of the input is unusable)."""
        if self.transport is not None and not self.closing:
            self._write(*error_answer(exc), keep_alive=False)
        self._close()

    def _write(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool) -> None:
        """One whole response in one write."""
        assert self.transport is not None
        parts = [STATUS_LINES.get(status) or _status_line(status), self.server.date.value]
        for k, v in headers:
            parts += (k, b": ", v, b"\r\n")
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.outbox.write(self.transport, b"".join(parts))

    def _close(self) -> None:
        self.closing = True
        self.queue.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.outbox.flush()  # an answer queued for this connection goes out first
            self.transport.close()

    def _too_large(self) -> ProxyError:
        return _over_limit(413, "BODY_TOO_LARGE", "corps de requête", self.limits.max_body_bytes)

    def _head_too_large(self) -> ProxyError:
        return _over_limit(431, "HEADERS_TOO_LARGE", "en-têtes", self._max_head)

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closing:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closing:
            self.read_paused = False
            self.transport.resume_reading()

    # ------------------------------------------------------------------ sweeper
    def expired(self, now: float) -> bool:
        """Idle past the keep-alive timeout, or a request taking too long to arrive."""
        if self.busy or self.queue:
            return False
        if self.request_started is not None:
            return now - self.request_started > self.limits.request_read_timeout
        return now - self.last_active > self.limits.keep_alive_timeout


class ProxyServer:
    """Runs the proxy app on one or more listening sockets until asked to stop.

    ``started`` and ``should_exit`` follow uvicorn.Server's names so the same test runner
    (``core.server.ServerThread``) drives both kinds of server. ``limits`` is the validated
    ``[server]`` section itself: its bounds and defaults live in one place (``config.py``).
    """

    def __init__(self, app: ProxyApp, tls: ssl.SSLContext | None, limits: ServerSection) -> None:
        self.app = app
        self.tls = tls
        self.limits = limits
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.date = _DateHeader()
        # Every write to a client goes through the outbox the upstream pools use too, so the
        # writes of one loop pass leave together, in order (outbox.py).
        self.outbox: Outbox = app.core.outbox
        self.started = False
        self.should_exit = False
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.on_started: Callable[[], None] | None = None  # called once listening

    async def serve(self, sockets: list[socket.socket]) -> None:
        self.loop = asyncio.get_running_loop()
        await self.app.core.start()
        servers: list[asyncio.Server] = []
        try:
            for sock in sockets:
                srv = await self.loop.create_server(lambda: Connection(self), sock=sock, ssl=self.tls, backlog=2048)
                servers.append(srv)
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    self.loop.add_signal_handler(sig, self._request_exit)
            if self.on_started is not None:
                self.on_started()
            self.started = True
            last_sweep = self.loop.time()
            while not self.should_exit:
                await asyncio.sleep(0.1)
                self.date.tick()
                now = self.loop.time()
                if now - last_sweep >= 1.0:
                    last_sweep = now
                    for conn in [c for c in self.connections if c.expired(now)]:
                        conn._close()
            await self._shutdown(servers)
        finally:
            for srv in servers:
                srv.close()
            await self.app.core.stop()

    def _request_exit(self) -> None:
        self.should_exit = True

    async def _shutdown(self, servers: list[asyncio.Server]) -> None:
        self.stopping = True
        for srv in servers:
            srv.close()  # stop accepting
        for conn in list(self.connections):
            if not conn.busy and not conn.queue:
                conn._close()
        # In flight: tasks (slow path, other routes) and /send answered by callback.
        deadline = self.loop.time() + self.limits.graceful_timeout
        while self.loop.time() < deadline:
            if not self.tasks and not any(c.busy for c in self.connections):
                break
            await asyncio.sleep(0.02)  # shutdown only: polling beats an event per request
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.connections):
            conn._close()

    # ------------------------------------------------------------------ buffered ASGI
    async def asgi_exchange(self, conn: Connection, req: Request) -> Answer:
        """Run the ASGI app on one complete request; return the whole response."""
        raw_path, _, query = req.target.partition(b"?")
        path = raw_path.decode("latin-1")
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": req.version,
            "server": conn.local,
            "client": conn.peer,
            "scheme": "https" if self.tls is not None else "http",
            "method": req.method,
            "root_path": "",
            "path": urllib.parse.unquote(path) if "%" in path else path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": req.headers,
            "state": {},
        }
        if conn.tls_ext is not None:
            scope["extensions"] = {"tls": conn.tls_ext}
        body_sent = False
        done = asyncio.Event()
        status = 500
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        started = False

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": req.body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, headers, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                # Framing is ours (the body is buffered); for HEAD the app's length stands.
                drop = (b"transfer-encoding", b"connection") + (() if req.method == "HEAD" else (b"content-length",))
                headers = [
                    (bytes(k).lower(), bytes(v)) for k, v in message.get("headers", []) if bytes(k).lower() not in drop
                ]
            elif message["type"] == "http.response.body":
                chunks.append(bytes(message.get("body", b"")))
                if not message.get("more_body", False):
                    done.set()

        try:
            await self.app(scope, receive, send)
        except Exception:
            log.exception("erreur interne sur %s", path)
            started = False
        finally:
            done.set()
        if not started:
            return error_answer(internal_error())
        for k, v in headers:
            if not _HEADER_NAME.match(k) or not _HEADER_VALUE.match(v):
                log.error("en-tête de réponse invalide refusé sur %s", path)
                return error_answer(internal_error())
        body = b"".join(chunks)
        if req.method == "HEAD":
            body = b""
        elif status not in (204, 304) and not 100 <= status < 200:
            headers.append((b"content-length", b"%d" % len(body)))
        else:
            body = b""
        return status, headers, body


def build_server(cfg: ProxyConfig, store: Any = None, clock: Callable[[], float] | None = None) -> ProxyServer:
    """The proxy app and its server, from a validated configuration."""
    from confiance.core.tls import ClientAuth, ServerTLS, server_context

    from .core import ProxyCore

    s = cfg.server
    tls = ServerTLS(cert=s.cert, key=s.key, ca_bundle=s.ca_bundle, crl=s.crl, client_auth=ClientAuth(s.client_auth))
    core = ProxyCore(cfg, store=store) if clock is None else ProxyCore(cfg, store=store, clock=clock)
    return ProxyServer(ProxyApp(core), server_context(tls), s)


GC_GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the relay's back, once the process is set up.

    Why: with CPython's defaults (a collection every 700 new container objects) the
    collector cost the /send hot path ≈ 4 of ≈ 18 µs per request (bench/proxy/hotpath.py:
    ``gc.disable()`` saved as much as this does). A relayed request allocates a dozen
    short-lived tuples and lists that reference counting frees at once; a collection every
    ≈ 50 requests instead scans whatever is alive at that moment (requests in flight, queued
    traces), and the older generations it promotes them to hold every module, class and
    config object loaded at start, which their collections walk again. So: what exists once
    started is frozen (never scanned again), and young collections run every 10,000
    container allocations instead of 700. Cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def run(server: ProxyServer, sockets: list[socket.socket]) -> None:
    """Serve in the foreground on uvloop until SIGINT/SIGTERM."""
    import uvloop

    server.on_started = tune_gc  # once the app has started (stores, trace writer, keeper)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(server.serve(sockets))
