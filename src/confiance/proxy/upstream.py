"""A minimal keep-alive HTTP/1.1 client for the /send hot path.

Why not aiohttp here: profiling the relay showed aiohttp's per-request machinery (request
and response objects, multidicts, header normalisation, timers, tracing hooks) costing
more than everything else the proxy does. This client does only what a relay needs:
one pool per (origin, TLS identity), a request head assembled from bytes prebuilt once per
session+service (Host, Authorization), the response parsed by httptools (C, the parser
uvicorn uses), a single timer per request. aiohttp stays for every other outbound call.

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

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class UpstreamError(Exception):
    """``kind`` is "down" (cannot connect), "timeout", or "protocol" (bad/closed answer)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class _Stale(Exception):
    """A reused connection closed before any answer byte (safe to retry idempotent methods)."""


Result = tuple[int, list[tuple[bytes, bytes]], bytes]
OnDone = Callable[[Result | None, BaseException | None], None]


class _Conn(asyncio.Protocol):
    """One kept-alive upstream connection; one request in flight at a time.

    The outcome of a request goes to one callback (``start``): on the hot path it writes
    the relayed answer from here, without a trip through the event loop's ready queue;
    :meth:`Pool.request` passes one that settles its future. It is delivered once the
    parser has returned, never from inside a parser callback, so a callback may reuse the
    connection.
    """

    __slots__ = (
        "_active",
        "_body",
        "_close_delimited",
        "_feeding",
        "_framed",
        "_got_bytes",
        "_headers",
        "_keep_alive",
        "_max",
        "_on_done",
        "_outcome",
        "_parser",
        "_size",
        "closed",
        "transport",
        "used",
    )

    def __init__(self, max_bytes: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False
        self._max = max_bytes
        self._on_done: OnDone | None = None
        self._outcome: tuple[Result | None, BaseException | None] | None = None
        self._feeding = False
        self._parser: Any = None  # one per connection: llhttp parses message after message
        self._active = False  # a request is in flight
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._got_bytes = False
        self._close_delimited = False
        self._framed = False  # the response declared its length (Content-Length or chunked)
        self._keep_alive = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._active:  # bytes nobody asked for: the connection cannot be trusted
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            return
        self._got_bytes = True
        self._feeding = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError("protocol", f"réponse HTTP invalide: {exc}"))
        finally:
            self._feeding = False
        outcome, self._outcome = self._outcome, None
        if outcome is not None:
            self._deliver(*outcome)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self._waiting():
            return
        if self._close_delimited and self._active:
            self._complete()
        elif not self._got_bytes and self.used:
            self._settle(None, _Stale())
        else:
            self._settle(None, UpstreamError("protocol", "connexion fermée par le service"))

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or name == b"transfer-encoding":
            self._framed = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if not self._framed:
            status = self._parser.get_status_code()
            self._close_delimited = status >= 200 and status not in (204, 304)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max:
            self._fail(UpstreamError("protocol", "réponse trop volumineuse"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        # Read keep-alive now: llhttp resets its state once the callback returns.
        self._keep_alive = bool(self._parser.should_keep_alive())
        self._close_delimited = False
        self._complete()

    # -- internals
    def _waiting(self) -> bool:
        return self._on_done is not None and self._outcome is None

    def _complete(self) -> None:
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._settle((self._parser.get_status_code(), self._headers, body), None)

    def _fail(self, exc: BaseException) -> None:
        self._settle(None, exc)
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def expire(self) -> None:
        """The request's time is up (timer callback)."""
        self._fail(UpstreamError("timeout", "délai dépassé"))

    def _settle(self, result: Result | None, exc: BaseException | None) -> None:
        if not self._waiting():
            return
        if self._feeding:
            self._outcome = (result, exc)
        else:
            self._deliver(result, exc)

    def _deliver(self, result: Result | None, exc: BaseException | None) -> None:
        cb, self._on_done = self._on_done, None
        if cb is not None:
            cb(result, exc)

    def _reset(self) -> None:
        if self._parser is None:
            self._parser = httptools.HttpResponseParser(self)
        self._active = True
        self._outcome = None
        self._headers = []
        self._body = []
        self._size = 0
        self._got_bytes = False
        self._close_delimited = False
        self._framed = False
        self._keep_alive = False

    def start(self, on_done: OnDone) -> None:
        self._reset()
        self._on_done = on_done

    def reusable(self) -> bool:
        return not self.closed and self._keep_alive

    def finish(self) -> None:
        self._active = False
        self._on_done = None


class Pool:
    """Keep-alive connections to one origin, presenting one TLS identity."""

    def __init__(
        self,
        host: str,
        port: int,
        ssl_ctx: ssl.SSLContext | None,
        server_hostname: str | None,
        limit: int = 100,
        connect_timeout: float = 5.0,
        max_response: int = 32 * 1024 * 1024,
    ) -> None:
        self.host, self.port = host, port
        self.ssl_ctx = ssl_ctx
        self.server_hostname = server_hostname
        self.connect_timeout = connect_timeout
        self.max_response = max_response
        self._idle: collections.deque[_Conn] = collections.deque()
        self.limit = limit
        self._busy = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Conn(self.max_response),
                    self.host,
                    self.port,
                    ssl=self.ssl_ctx,
                    server_hostname=self.server_hostname if self.ssl_ctx else None,
                ),
                self.connect_timeout,
            )
        except TimeoutError as exc:
            raise UpstreamError("timeout", "connexion au service trop lente") from exc
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError("down", type(exc).__name__) from exc
        return proto

    async def request(self, method: str, head: bytes, body: bytes, limit_s: float) -> Result:
        """Send ``head`` (request line + headers + blank line, Content-Length included) and ``body``."""
        loop = asyncio.get_running_loop()
        # A plain counter (not asyncio.Semaphore): no coroutine or lock object per request
        # unless the pool is actually full.
        while self._busy >= self.limit:
            waiter = loop.create_future()
            self._waiters.append(waiter)
            await waiter
        self._busy += 1
        try:
            for attempt in (0, 1):
                conn = self._take_idle() or await self._connect()
                fut = self._dispatch(loop, conn, head, body, limit_s)
                try:
                    result = await fut
                except _Stale:
                    if attempt == 0 and method in IDEMPOTENT:
                        continue
                    raise UpstreamError("protocol", "connexion fermée par le service") from None
                except BaseException:
                    _discard(conn)
                    raise
                self._release(conn)
                return result
            raise UpstreamError("protocol", "connexion fermée par le service")
        finally:
            self._done()

    def request_now(self, method: str, head: bytes, body: bytes, limit_s: float, on_done: OnDone) -> bool:
        """:meth:`request` without a coroutine, when a kept-alive connection is idle.

        ``on_done(result, error)`` is called once, from the connection's data callback
        (or the timer's). Returns False, calling nothing, when it would have to wait (pool
        full) or connect: the caller then uses :meth:`request`. Same rules as ``request``,
        including the single retry of an idempotent request on a stale connection.
        """
        if self._busy >= self.limit:
            return False
        conn = self._take_idle()
        if conn is None:
            return False
        loop = asyncio.get_running_loop()
        self._busy += 1

        def done(result: Result | None, exc: BaseException | None) -> None:
            timer.cancel()
            if exc is None:
                self._release(conn)
                self._done()
                on_done(result, None)
                return
            _discard(conn)
            self._done()
            if isinstance(exc, _Stale):
                if method in IDEMPOTENT:
                    retry = loop.create_task(self.request(method, head, body, limit_s))
                    retry.add_done_callback(lambda t: on_done(*_outcome(t)))
                    return
                exc = UpstreamError("protocol", "connexion fermée par le service")
            on_done(None, exc)

        conn.start(done)
        self._write(conn, head, body)
        timer = loop.call_later(limit_s, conn.expire)
        return True

    # -- connection handling shared by request and request_now
    def _take_idle(self) -> _Conn | None:
        while self._idle:
            c = self._idle.pop()
            if not c.closed:
                return c
        return None

    def _dispatch(
        self, loop: asyncio.AbstractEventLoop, conn: _Conn, head: bytes, body: bytes, limit_s: float
    ) -> asyncio.Future[Result]:
        fut: asyncio.Future[Result] = loop.create_future()

        def settle(result: Result | None, exc: BaseException | None) -> None:
            if fut.done():  # the caller was cancelled
                return
            if exc is None:
                fut.set_result(result)  # type: ignore[arg-type]
            else:
                fut.set_exception(exc)

        conn.start(settle)
        self._write(conn, head, body)
        timer = loop.call_later(limit_s, conn.expire)  # one timer, cheaper than asyncio.timeout
        fut.add_done_callback(lambda _f: timer.cancel())
        return fut

    @staticmethod
    def _write(conn: _Conn, head: bytes, body: bytes) -> None:
        assert conn.transport is not None
        conn.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            conn.transport.write(body)

    def _release(self, conn: _Conn) -> None:
        if conn.reusable():
            conn.finish()
            conn.used = True  # from now on a silent close means "stale", not "failed"
            self._idle.append(conn)
        else:
            conn.finish()
            _discard(conn)

    def _done(self) -> None:
        self._busy -= 1
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                break

    def close(self) -> None:
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
