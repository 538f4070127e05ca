"""An HTTPS/1.1 server on a bare event-loop protocol: one fast route answered in the
protocol, everything else through a buffered ASGI exchange.

Why not uvicorn here (every other service uses it): measured on this project's benchmark
(docs/benchmarks/proxy.md), a relay behind uvicorn's ASGI cycle reached about a quarter of
an nginx worker, and the same relay on a bare event-loop protocol reached nginx's order of
magnitude with a lower tail latency. Per request the ASGI cycle builds scope and message
dicts, re-validates every response header, writes head and body separately and arms a
keep-alive timer; a relay needs none of it, because its response is complete (status,
headers, one body) when the upstream answers.

What this server does, and the limits it enforces (:class:`Limits`):

* HTTP/1.1 keep-alive and HTTP/1.0, ``Connection: close``, pipelining (answers in request
  order), ``Expect: 100-continue``;
* request head ≤ ``max_header_bytes`` (431), body ≤ ``max_body_bytes`` (413, decided from
  Content-Length before reading when possible), malformed requests 400 — each then closes;
* a request must arrive within ``request_read_timeout`` (slow clients are dropped), an idle
  keep-alive connection is closed after ``keep_alive_timeout``: one sweeper per server,
  not a timer per request;
* backpressure: a client that does not read its responses stops being read;
* graceful stop: stop accepting, let requests in flight finish (``graceful_timeout``),
  run ``on_stop`` (the application's drain), then close.

Requests are buffered whole before they are handled (bodies are capped), so each route
sees a complete request; the cold routes get a minimal buffered ASGI exchange.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .answers import Answer, HttpError, Respond, json_error
from .connection import Connection, DateHeader
from .outbox import Outbox


class Limits(Protocol):
    """The bounds a server enforces (the proxy passes its validated ``[server]`` section)."""

    max_header_bytes: int
    max_body_bytes: int
    request_read_timeout: float
    keep_alive_timeout: float
    graceful_timeout: float
    max_buffered_bytes_per_connection: int  # bodies held for unanswered requests, per connection
    max_buffered_bytes: int  # … and for the whole server


class FastRoute(Protocol):
    """A handler for the requests under one path prefix, called without ASGI: returns None
    when it answered (or will, once, through ``respond``), or what to await for the answer."""

    def __call__(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        body: bytes,
        respond: Respond,
    ) -> Awaitable[Answer] | None: ...


class Admit(Protocol):
    """Judges a fast-route request from its head, before its body is read: None admits it,
    an answer refuses it, an awaitable gives either later (reading waits meanwhile)."""

    def __call__(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]]
    ) -> Answer | Awaitable[Answer | None] | None: ...


class Http1Server:
    """Serves one ASGI app (and optionally one fast route) on listening sockets until asked
    to stop.

    ``started`` and ``should_exit`` follow uvicorn.Server's names so the same test runner
    (``core.server.ServerThread``) drives both kinds of server. ``on_start``/``on_stop``
    run before listening and after the last connection closed (the application's own
    start-up and drain); ``render_error`` turns the server's refusals into answers.
    """

    def __init__(
        self,
        app: Any,
        tls: ssl.SSLContext | None,
        limits: Limits,
        *,
        outbox: Outbox | None = None,
        fast_prefix: bytes = b"",
        fast: FastRoute | None = None,
        admit: Admit | None = None,
        render_error: Callable[[HttpError], Answer] = json_error,
        on_start: Callable[[], Awaitable[None]] | None = None,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock``: seconds for the idle and slow-request timeouts (the event loop's by
        default; tests move their own past a timeout instead of waiting for it)."""
        self.app = app
        self.tls = tls
        self.scheme = "https" if tls is not None else "http"
        self.limits = limits
        self.fast_prefix = fast_prefix
        self.fast = fast
        self.admit = admit
        self.held = 0  # body bytes held by all connections (measured: Connection.held)
        self.held_peak = 0
        self.reserved = 0  # body bytes reserved for unanswered requests (the bound)
        self.waiting: dict[Connection, int] = {}  # bodies waiting for a reservation, in order
        self.render_error = render_error
        self._on_start = on_start
        self._on_stop = on_stop
        self.clock = clock
        self.sweeps = 0  # sweeper passes so far (tests wait for one)
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.date = DateHeader()
        # Every write to a client goes through this outbox; share it with the upstream
        # pools so the writes of one loop pass leave together, in order (outbox.py).
        self.outbox = outbox or Outbox()
        self.started = False
        self.should_exit = False
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.on_started: Callable[[], None] | None = None  # called once listening
        # Listeners for operators only (/readyz, /metrics): no fast route there, and the app
        # sees scope["confiance.listener"] == "admin" (set before serve()).
        self.admin_sockets: list[socket.socket] = []

    async def serve(self, sockets: list[socket.socket]) -> None:
        self.loop = asyncio.get_running_loop()
        if self._on_start is not None:
            await self._on_start()
        servers: list[asyncio.Server] = []
        try:
            for sock in sockets:
                srv = await self.loop.create_server(lambda: Connection(self), sock=sock, ssl=self.tls, backlog=2048)
                servers.append(srv)
            for sock in self.admin_sockets:
                srv = await self.loop.create_server(lambda: Connection(self, admin=True), sock=sock, ssl=self.tls)
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
                tick = self.loop.time()
                if tick - last_sweep >= 1.0:
                    last_sweep = tick
                    now = self.clock() if self.clock is not None else tick
                    for conn in [c for c in self.connections if c.expired(now)]:
                        conn.close()
                    self.sweeps += 1
            await self._shutdown(servers)
        finally:
            for srv in servers:
                srv.close()
            if self._on_stop is not None:
                await self._on_stop()

    # -- memory for request bodies: reserved before a body is read, released once answered
    def reserve(self, conn: Connection, n: int) -> bool:
        """Reserve ``n`` bytes for a body of ``conn``; False: it waits (``conn.granted()`` later)."""
        if self._fits(conn, n):
            self.reserved += n
            conn.reserved += n
            return True
        self.waiting[conn] = n
        return False

    def _fits(self, conn: Connection, n: int) -> bool:
        # A lone request always fits (server-wide, and on its connection): waiting ends.
        limits = self.limits
        return (self.reserved == 0 or self.reserved + n <= limits.max_buffered_bytes) and (
            conn.reserved == 0 or conn.reserved + n <= limits.max_buffered_bytes_per_connection
        )

    def force_reserve(self, conn: Connection, n: int) -> None:
        """Count ``n`` bytes that are in memory already (they came in a read already made)."""
        self.reserved += n
        conn.reserved += n

    def unreserve(self, n: int) -> None:
        """``n`` reserved bytes were given back: grant waiting bodies that now fit, in order."""
        self.reserved -= n
        for conn, need in list(self.waiting.items()):
            if self._fits(conn, need):
                del self.waiting[conn]
                self.reserved += need
                conn.reserved += need
                conn.granted(need)

    def hold(self, n: int) -> None:
        self.held += n
        if self.held > self.held_peak:
            self.held_peak = self.held

    def unhold(self, n: int) -> None:
        self.held -= n

    def _request_exit(self) -> None:
        self.should_exit = True

    async def _shutdown(self, servers: list[asyncio.Server]) -> None:
        self.stopping = True
        for srv in servers:
            srv.close()  # stop accepting
        for conn in list(self.connections):
            if not conn.busy and not conn.queue:
                conn.close()
        # In flight: tasks (slow path, other routes) and /send answered by callback.
        deadline = self.loop.time() + self.limits.graceful_timeout
        while self.loop.time() < deadline:
            if not self.tasks and not any(c.busy for c in self.connections):
                break
            await asyncio.sleep(0.02)  # shutdown only: polling beats an event per request
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.connections):
            conn.close()
