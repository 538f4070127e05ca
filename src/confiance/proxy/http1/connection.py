"""One client connection of :class:`~.server.Http1Server`: requests parsed by httptools,
answered one at a time and in order, each answer written whole through the outbox.

Why a bare ``asyncio.Protocol`` and not uvicorn's: see ``server.py``. Per-request parse
state is reset when a request completes, not in an ``on_message_begin`` callback (one
Python call less per request); a request that fails mid-way closes the connection, so its
leftovers are never read.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import http
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httptools

from confiance.core.server import tls_extension

from .answers import INTERNAL_ERROR, Answer, HttpError
from .asgi_bridge import asgi_exchange

if TYPE_CHECKING:
    from .server import Http1Server

log = logging.getLogger("confiance.proxy.http1")

PIPELINE_MAX = 16  # complete requests queued on one connection before we stop reading it


def _invalid(message: str) -> HttpError:
    return HttpError(400, "INVALID_REQUEST", message)


def _over_limit(status: int, code: str, what: str, limit: int) -> HttpError:
    return HttpError(status, code, f"{what} trop volumineux (max {limit} octets)")


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


class DateHeader:
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

    def __init__(self, server: Http1Server) -> None:
        self.server = server
        self.fast_prefix = server.fast_prefix
        self.fast = server.fast
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
            self._reject(why if isinstance(why, HttpError) else _invalid("requête HTTP invalide"))

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
        fast = self.fast
        if fast is not None and req.target.startswith(self.fast_prefix):
            raw_path, _, query = req.target.partition(b"?")
            try:
                pending = fast(req.method, raw_path, query, req.headers, self.peer, req.body, self._respond_bound)
            except Exception:
                log.exception("erreur interne sur %s", self.fast_prefix.decode("latin-1"))
                self._reject(INTERNAL_ERROR)
                return
            if pending is None:
                return  # answered, or will be from a callback
            task = self.loop.create_task(self._fast_awaited(pending))
        else:
            task = self.loop.create_task(self._asgi(req))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    async def _fast_awaited(self, pending: Awaitable[Answer]) -> None:
        """A fast-route request that its handler answers on an awaited path."""
        try:
            answer = await pending
        except Exception:
            log.exception("erreur interne sur %s", self.fast_prefix.decode("latin-1"))
            self._reject(INTERNAL_ERROR)
            return
        self._respond(answer)

    async def _asgi(self, req: Request) -> None:
        self._respond(await asgi_exchange(self.server.app, self, req, self.server.scheme, self.server.render_error))

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
            self.close()
            return
        if self.queue:
            self._next()
        if self.read_paused and len(self.queue) < PIPELINE_MAX and not self.write_paused:
            self._resume_reading()

    def _reject(self, exc: HttpError) -> None:
        """Answer an error that ends the connection (the rest of the input is unusable)."""
        if self.transport is not None and not self.closing:
            self._write(*self.server.render_error(exc), keep_alive=False)
        self.close()

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

    def close(self) -> None:
        """Close now, after what is queued for this connection."""
        self.closing = True
        self.queue.clear()
        if self.transport is not None and not self.transport.is_closing():
            self.outbox.flush()  # an answer queued for this connection goes out first
            self.transport.close()

    def _too_large(self) -> HttpError:
        return _over_limit(413, "BODY_TOO_LARGE", "corps de requête", self.limits.max_body_bytes)

    def _head_too_large(self) -> HttpError:
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
