"""A minimal keep-alive HTTP/1.1 client for the /send hot path.

Why not aiohttp here: profiling the relay showed aiohttp's per-request machinery (request
and response objects, multidicts, header normalisation, timers, tracing hooks) costing
more than everything else the proxy does. This client does only what a relay needs:
one pool per (origin, TLS identity), a request head assembled from bytes prebuilt once per
session+service (Host, Authorization), the response parsed by httptools (C, the parser
uvicorn uses), no timer per request (deadlines, checked by one sweep per pool while
requests are in flight: see :class:`Pool`). aiohttp stays for every other outbound call.

Safety: a request is retried on a fresh connection only when it was sent on a *reused*
keep-alive connection that the server closed before answering a single byte, and only
for idempotent methods (RFC 9110 §9.2.2). Response size is capped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import Callable
from typing import Any

import httptools

from confiance.core.errors import ConfianceError

from .outbox import Outbox

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class UpstreamError(ConfianceError):
    """A request the upstream did not answer usably; ``kind`` names which subclass, as the
    label operators see in metrics."""

    kind = "protocol"
    code = "UPSTREAM_ERROR"

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{self.kind}: {detail}")


class UpstreamDown(UpstreamError):
    """The connection could not be opened (refused, unreachable, TLS handshake failed)."""

    kind = "down"
    code = "UPSTREAM_DOWN"


class UpstreamTimeout(UpstreamError):
    """No complete answer in time (connecting, or the request's own limit)."""

    kind = "timeout"
    code = "UPSTREAM_TIMEOUT"


class UpstreamProtocol(UpstreamError):
    """A bad, oversized or cut-off answer."""

    kind = "protocol"


class _Stale(Exception):
    """A reused connection closed before any answer byte (safe to retry idempotent methods)."""


Result = tuple[int, list[tuple[bytes, bytes]], bytes]
OnDone = Callable[[Result | None, BaseException | None], None]


class _Conn(asyncio.Protocol):
    """One kept-alive upstream connection of a :class:`Pool`; one request in flight at a time.

    A request ends once: answered (``on_message_complete``), failed (bad or oversized
    answer, closed connection, deadline passed), and then the pool settles it (:meth:`Pool.settle`).
    That happens after the parser has returned, never from inside a parser callback, so
    whoever is told may reuse the connection at once. The request's own fields live here,
    not in a closure per request: on the hot path every object and call per request counts
    (bench/proxy/hotpath.py).
    """

    __slots__ = (
        "_body",
        "_close_delimited",
        "_feeding",
        "_got_bytes",
        "_headers",
        "_max",
        "_outcome",
        "_parser",
        "_size",
        "active",
        "body",
        "closed",
        "deadline",
        "head",
        "keep_alive",
        "limit_s",
        "method",
        "on_done",
        "pool",
        "transport",
        "used",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False  # answered once: from now on a silent close means "stale"
        self._max = pool.max_response
        self._parser: Any = None  # one per connection: llhttp parses message after message
        self.active = False  # a request is in flight
        self._outcome: tuple[Result | None, BaseException | None] | None = None
        self._feeding = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._got_bytes = False
        self._close_delimited = False
        self.keep_alive = False
        # The request in flight (kept for the single retry on a stale connection).
        self.method = ""
        self.head = b""
        self.body = b""
        self.limit_s = 0.0
        self.on_done: OnDone | None = None
        self.deadline = 0.0  # loop time by which the request in flight must be answered

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.active:  # bytes nobody asked for: the connection cannot be trusted
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            return
        self._got_bytes = True
        self._feeding = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocol(f"réponse HTTP invalide: {exc}"))
        self._feeding = False
        if self._outcome is not None:
            self._end()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.active or self._outcome is not None:
            return
        if self._close_delimited:
            self._settle(self._result(self._parser.get_status_code()), None)
        elif not self._got_bytes and self.used:
            self._settle(None, _Stale())
        else:
            self._settle(None, UpstreamProtocol("connexion fermée par le service"))

    # -- httptools callbacks
    def on_message_begin(self) -> None:
        if self._outcome is not None:
            # A second response in the same read: nobody asked for it. The first one is
            # delivered as it was; the connection is never used again, since the next
            # request's answer could be these bytes (responses must not be mixed up between
            # the requests, and so the users, that share a pooled connection).
            self.closed = True
        self._headers = []  # a fresh list: the one delivered with a response is not touched
        self._body = []
        self._size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        for k, _ in self._headers:
            if k == b"content-length" or k == b"transfer-encoding":
                return
        status = self._parser.get_status_code()
        self._close_delimited = status >= 200 and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max:
            self._fail(UpstreamProtocol("réponse trop volumineuse"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        p = self._parser
        status = p.get_status_code()
        if status < 200:  # interim response (RFC 9110 §15.2, e.g. 103): the final one follows
            return
        # Read keep-alive now: llhttp resets its state once the callback returns.
        self.keep_alive = bool(p.should_keep_alive())
        self._close_delimited = False
        if self.active and self._outcome is None:  # not failed meanwhile (oversized body)
            # Always inside feed_data: data_received delivers it once the parser returns.
            self._outcome = (self._result(status), None)

    # -- one request
    def begin(self, method: str, head: bytes, body: bytes, limit_s: float, on_done: OnDone) -> None:
        """Send one request (``head`` holds the request line, headers and blank line)."""
        if self._parser is None:
            self._parser = httptools.HttpResponseParser(self)
        self.active = True
        self._outcome = None  # (and again as each response begins: on_message_begin)
        self._headers = []
        self._body = []
        self._got_bytes = False
        self._close_delimited = False
        self.keep_alive = False
        self.method, self.head, self.body, self.limit_s, self.on_done = method, head, body, limit_s, on_done
        assert self.transport is not None
        pool = self.pool
        outbox = pool.outbox
        if len(body) < 65536:
            outbox.write(self.transport, head + body)
        else:
            outbox.write(self.transport, head)
            outbox.write(self.transport, body)
        self.deadline = pool.loop.time() + limit_s
        pool.in_flight(self)

    def expire(self) -> None:
        """The request's time is up (the pool's sweep)."""
        self._fail(UpstreamTimeout("délai dépassé"))

    def abort(self) -> None:
        """Forget the request in flight (its caller went away); the connection is dropped."""
        self.pool.landed(self)
        self.active = False
        self.on_done = None
        _discard(self)

    def _result(self, status: int) -> Result:
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        return status, self._headers, body

    def _fail(self, exc: BaseException) -> None:
        self._settle(None, exc)
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _settle(self, result: Result | None, exc: BaseException | None) -> None:
        if not self.active or self._outcome is not None:
            return
        self._outcome = (result, exc)
        if not self._feeding:
            self._end()

    def _end(self) -> None:
        (result, exc), self._outcome = self._outcome, None  # type: ignore[misc]
        self.pool.landed(self)
        self.active = False
        self.pool.settle(self, result, exc)


SWEEP_INTERVAL = 0.05  # seconds between deadline checks while requests are in flight


class Pool:
    """Keep-alive connections to one origin, presenting one TLS identity.

    Request time limits are deadlines, not timers: a request in flight is in a set, and
    one sweep every ``SWEEP_INTERVAL`` seconds (scheduled only while the set is not
    empty) fails those past their deadline. Why: a timer per request (``call_later`` then
    ``cancel``) cost 1.8 µs per request measured alone (uvloop), ≈ 6 µs of the proxy's CPU
    per relayed request in bench_proxy.py (docs/benchmarks/proxy.md, session 7), for
    limits counted in seconds; a request now times out at most ``SWEEP_INTERVAL`` after
    its limit.
    """

    def __init__(
        self,
        host: str,
        port: int,
        ssl_ctx: ssl.SSLContext | None,
        server_hostname: str | None,
        limit: int = 100,
        connect_timeout: float = 5.0,
        max_response: int = 32 * 1024 * 1024,
        outbox: Outbox | None = None,
    ) -> None:
        """``outbox``: the one requests are written through, shared by the pools of a proxy
        (outbox.py); its own by default."""
        self.outbox = outbox or Outbox()
        self.host, self.port = host, port
        self.ssl_ctx = ssl_ctx
        self.server_hostname = server_hostname
        self.connect_timeout = connect_timeout
        self.max_response = max_response
        self._idle: collections.deque[_Conn] = collections.deque()
        self.limit = limit
        self._busy = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._in_flight: set[_Conn] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]  # set at first use

    async def _connect(self) -> _Conn:
        try:
            _, proto = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: _Conn(self),
                    self.host,
                    self.port,
                    ssl=self.ssl_ctx,
                    server_hostname=self.server_hostname if self.ssl_ctx else None,
                ),
                self.connect_timeout,
            )
        except TimeoutError as exc:
            raise UpstreamTimeout("connexion au service trop lente") from exc
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamDown(type(exc).__name__) from exc
        return proto

    async def request(self, method: str, head: bytes, body: bytes, limit_s: float, fresh: bool = False) -> Result:
        """Send ``head`` (request line + headers + blank line, Content-Length included) and ``body``.

        ``fresh``: on a new connection (the retry after a stale one: a new connection
        cannot be stale, so a request is retried once at most)."""
        self.loop = loop = asyncio.get_running_loop()
        # A plain counter (not asyncio.Semaphore): no coroutine or lock object per request
        # unless the pool is actually full.
        while self._busy >= self.limit:
            waiter = loop.create_future()
            self._waiters.append(waiter)
            await waiter
        self._busy += 1
        try:
            conn = (None if fresh else self._take_idle()) or await self._connect()
        except BaseException:
            self._done()
            raise
        fut: asyncio.Future[Result] = loop.create_future()

        def settle(result: Result | None, exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is None:
                fut.set_result(result)  # type: ignore[arg-type]
            else:
                fut.set_exception(exc)

        conn.begin(method, head, body, limit_s, settle)
        try:
            return await fut
        except asyncio.CancelledError:
            if conn.on_done is settle and conn.active:  # still ours: give the slot back now
                conn.abort()
                self._done()
            raise

    def request_now(self, method: str, head: bytes, body: bytes, limit_s: float, on_done: OnDone) -> bool:
        """:meth:`request` without a coroutine, when a kept-alive connection is idle.

        ``on_done(result, error)`` is called once, from the connection's data callback
        (or the deadline sweep). Returns False, calling nothing, when it would have to wait (pool
        full) or connect: the caller then uses :meth:`request`. Same rules as ``request``,
        including the single retry of an idempotent request on a stale connection.
        """
        if self._busy >= self.limit:
            return False
        conn = self._take_idle()
        if conn is None:
            return False
        self._busy += 1
        conn.begin(method, head, body, limit_s, on_done)
        return True

    # -- deadlines (see the class docstring)
    def in_flight(self, conn: _Conn) -> None:
        """(For its connections.) ``conn`` sent a request; its deadline is set."""
        self._in_flight.add(conn)
        if self._sweep is None:
            self._sweep = self.loop.call_later(SWEEP_INTERVAL, self._expire_overdue)

    def landed(self, conn: _Conn) -> None:
        """(For its connections.) ``conn``'s request ended (answered, failed, dropped)."""
        self._in_flight.discard(conn)

    def _expire_overdue(self) -> None:
        self._sweep = None
        now = self.loop.time()
        for conn in [c for c in self._in_flight if c.deadline <= now]:
            if conn in self._in_flight:  # not ended by what an earlier expiry set off
                conn.expire()
        if self._in_flight:
            self._sweep = self.loop.call_later(SWEEP_INTERVAL, self._expire_overdue)

    # -- connection handling shared by request and request_now
    def _take_idle(self) -> _Conn | None:
        while self._idle:
            c = self._idle.pop()
            if not c.closed:
                return c
        return None

    def settle(self, conn: _Conn, result: Result | None, exc: BaseException | None) -> None:
        """(For its connections.) A request ended: the connection goes back or away, the slot is freed, the
        caller is told, and a stale connection's idempotent request is sent once more."""
        on_done, conn.on_done = conn.on_done, None
        if exc is None and conn.keep_alive and not conn.closed:
            conn.used = True
            self._idle.append(conn)
        else:
            _discard(conn)
        self._done()
        if on_done is None:
            return
        if isinstance(exc, _Stale):
            if conn.method in IDEMPOTENT:
                retry = self.loop.create_task(self.request(conn.method, conn.head, conn.body, conn.limit_s, fresh=True))
                retry.add_done_callback(lambda t: on_done(*_outcome(t)))
                return
            exc = UpstreamProtocol("connexion fermée par le service")
        on_done(result, exc)

    def _done(self) -> None:
        self._busy -= 1
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                break

    def close(self) -> None:
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        while self._idle:
            c = self._idle.pop()
            if c.transport is not None:
                with contextlib.suppress(Exception):
                    c.transport.close()


def _discard(conn: _Conn) -> None:
    conn.closed = True
    if conn.transport is not None:
        conn.transport.close()


def _outcome(task: asyncio.Task[Any]) -> tuple[Any, BaseException | None]:
    if task.cancelled():
        return None, asyncio.CancelledError()
    exc = task.exception()
    return (None, exc) if exc is not None else (task.result(), None)
