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

from .answers import INTERNAL_ERROR, Answer, HttpError, Refused
from .asgi_bridge import Streamed, asgi_exchange

if TYPE_CHECKING:
    from .server import Http1Server

log = logging.getLogger("confiance.proxy.http1")

PIPELINE_MAX = 16  # complete requests queued on one connection before we stop reading it


def _invalid(message: str) -> HttpError:
    return HttpError(400, "INVALID_REQUEST", message)


_UNSUPPORTED_VERSION = HttpError(505, "HTTP_VERSION_NOT_SUPPORTED", "version HTTP non prise en charge (1.0 ou 1.1)")


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
    expect_continue: bool = False
    reserved: int = 0  # body bytes reserved for it on the server (released once answered)


# Header names the parser callbacks look at (RFC 9112 rules below); others pass untouched.
_WATCHED = frozenset({b"expect", b"transfer-encoding", b"upgrade"})


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
    """One client connection: parser callbacks build requests, answered one at a time, in order.

    Rules beyond parsing (RFC 9112 and what a relay owes its callers):

    * a refusal found while parsing (malformed, oversized, or a caller refused from the
      head) is written after the answers of the requests before it, then the connection
      closes: a pipelined request that was handled always gets its own answer;
    * a request to the fast route that announces a body (or ``Expect: 100-continue``) is
      judged from its head (``admit``) before its body is read; refused, it is answered
      and the connection closed without reading the body;
    * bodies held for unanswered requests are bounded per connection and per server: a
      body is read only once its size (Content-Length, or the body limit when chunked) is
      reserved; otherwise reading waits until answers release reservations. One request
      at a time is always admitted, so waiting always ends;
    * missing (HTTP/1.1) or repeated ``Host`` → 400, a version other than 1.0/1.1 → 505,
      a transfer coding other than ``chunked`` alone → 501, an ``Expect`` other than
      ``100-continue`` → 417.
    """

    def __init__(self, server: Http1Server, admin: bool = False) -> None:
        self.server = server
        self.admin = admin  # accepted on an admin listener: no fast route, the app is told
        self.fast_prefix = server.fast_prefix
        self.fast = None if admin else server.fast
        self.admit = None if admin else server.admit
        self.limits = server.limits
        self._max_head = server.limits.max_header_bytes
        self.loop = server.loop
        self._now = server.clock or server.loop.time
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
        self.last_active = self._now()
        self.request_started: float | None = None  # first byte of a request not yet complete
        self.held = 0  # body bytes received and not yet answered (measured)
        self.reserved = 0  # body bytes reserved on the server for unanswered requests
        self.awaiting_memory = False  # a body waits for its reservation: not read meanwhile
        self._pending: tuple[Request, int] | None = None  # that request and the bytes it needs
        self._final: Answer | None = None  # the refusal that ends this connection, once earlier answers are out
        self._admitting: Request | None = None  # a head being judged by an awaited ``admit``
        # Per-request parse state
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._chunked = False
        self._upgrade = False
        self._current: Request | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._expect_continue = False
        self._handling: Request | None = None  # the request being answered (one at a time)
        self._respond_bound = self._respond  # bound once: the fast route's callback
        self._writable: asyncio.Event | None = None  # a streamed answer waits on it (made then)

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
        if self._writable is not None:
            self._writable.set()
        self.server.connections.discard(self)
        self.queue.clear()
        self._free_all()

    def data_received(self, data: bytes) -> None:
        if self._final is not None or self.closing:
            return  # nothing after a refusal is read
        self.last_active = self._now()
        if self.request_started is None:
            self.request_started = self.last_active
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(self.server.render_error(_invalid("mise à niveau de protocole non prise en charge")))
        except httptools.HttpParserError as exc:
            # httptools wraps what a callback raised; our own refusals carry their status.
            why = exc.__context__
            if isinstance(why, Refused):
                self._refuse(why.answer)
            elif isinstance(why, HttpError):
                self._refuse(self.server.render_error(why))
            elif str(exc) == "Invalid HTTP version":
                self._refuse(self.server.render_error(_UNSUPPORTED_VERSION))
            else:
                self._refuse(self.server.render_error(_invalid("requête HTTP invalide")))

    def pause_writing(self) -> None:
        # The client is not reading its responses: stop reading its requests.
        self.write_paused = True
        self.update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._writable is not None:
            self._writable.set()
        self.update_reading()

    # ------------------------------------------------------------------ httptools callbacks
    # Per-request parse state is reset when a request completes (on_message_complete), not
    # in an on_message_begin callback: one Python call less per request. A request that
    # fails mid-way ends the connection, so its leftovers are never read.
    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self._max_head:
            # RFC 9110 §15.5.15: a request target longer than the server will read is a 414.
            raise HttpError(414, "URI_TOO_LONG", f"URI trop longue (max {self._max_head} octets)")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._max_head:
            raise self._head_too_large()
        name = name.lower()
        if name in _WATCHED:  # rare: Host is counted once the head is complete
            self._watch(name, value)
        self._headers.append((name, value))

    def _watch(self, name: bytes, value: bytes) -> None:
        if name == b"upgrade":
            self._upgrade = True
        elif name == b"expect":
            if value.strip().lower() != b"100-continue" or self._expect_continue:
                raise HttpError(417, "EXPECTATION_FAILED", "seule l'attente 100-continue est prise en charge")
            self._expect_continue = True
        elif value.strip().lower() != b"chunked" or self._chunked:
            # RFC 9112 §6.1: a server that does not understand a transfer coding answers 501.
            raise HttpError(501, "NOT_IMPLEMENTED", "seul le codage de transfert chunked est pris en charge")
        else:
            self._chunked = True

    def on_headers_complete(self) -> None:
        p = self.parser
        version = p.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _UNSUPPORTED_VERSION
        method = p.get_method().decode("ascii")
        if (self._upgrade and p.should_upgrade()) or method == "CONNECT":
            # A protocol switch or a tunnel: refused before the request is queued.
            raise _invalid("mise à niveau de protocole non prise en charge")
        keep_alive = bool(p.should_keep_alive()) and version == "1.1"
        req = Request(method, self._url, self._headers, keep_alive, version)
        self._current = req
        announced = self._chunked
        declared = 0
        hosts = 0
        for k, v in self._headers:
            if k == b"host":
                hosts += 1
            elif k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    raise _invalid("Content-Length invalide") from None
                if declared > self.limits.max_body_bytes:
                    raise self._too_large()
                announced = declared > 0
        if hosts != 1 and (hosts > 1 or version == "1.1"):
            raise _invalid("en-tête Host manquant" if hosts == 0 else "en-tête Host répété")
        expect = self._expect_continue
        req.expect_continue = expect
        if announced:
            need = declared if not self._chunked else self.limits.max_body_bytes
            if self.awaiting_memory:
                # An earlier request of this read waits for memory; this one's bytes came in
                # the same read (already in memory): counted, and nothing more is read.
                self.server.force_reserve(self, need)
                req.reserved = need
            elif self.server.reserve(self, need):
                req.reserved = need
            else:
                self._pending = (req, need)
                self.awaiting_memory = True
                self.update_reading()
        if (announced or expect) and self.admit is not None and self._url.startswith(self.fast_prefix):
            # The caller is judged from the head, before any of its body is read.
            verdict = self.admit(req.method, self._url, self._headers)
            if verdict is None:
                pass
            elif isinstance(verdict, tuple):
                raise Refused(verdict)
            else:
                self._admitting = req
                self.update_reading()
                task = self.loop.create_task(self._judge(req, verdict))
                self.server.tasks.add(task)
                task.add_done_callback(self.server.tasks.discard)
                return
        if expect and self.transport is not None:
            self.outbox.write(self.transport, CONTINUE)

    async def _judge(self, req: Request, verdict: Awaitable[Answer | None]) -> None:
        """An awaited ``admit`` (a shared session store): reading waits for its verdict."""
        try:
            refusal = await verdict
        except Exception:
            log.exception("internal error on %s", self.fast_prefix.decode("latin-1"))
            refusal = self.server.render_error(INTERNAL_ERROR)
        self._admitting = None
        if self.closing:
            return
        if refusal is None:
            if req.expect_continue and self.transport is not None and req is self._current:
                self.outbox.write(self.transport, CONTINUE)
            self.update_reading()
            return
        req.keep_alive = False
        if req is self._current:
            self._current = None
            self._refuse(refusal)
        elif req in self.queue:
            self.queue.remove(req)
            self._free(req)
            self._refuse(refusal)
        # else: already handed to its handler, which judges the caller again and answers.

    def on_body(self, body: bytes) -> None:
        n = len(body)
        self._body_size += n
        if self._body_size > self.limits.max_body_bytes:
            raise self._too_large()
        self._body.append(body)
        self.held += n
        self.server.hold(n)

    def on_message_complete(self) -> None:
        req = self._current
        if req is None:  # refused from its head meanwhile (awaited verdict)
            self._reset_parse()
            return
        self._current = None
        if self._pending is not None and self._pending[0] is req:
            self._complete_unreserved(req, self._pending[1])
        if self._body:
            req.body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            self._body = []
        # _reset_parse() inlined: one call less per request on the hot path.
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._body_size = 0
        self._chunked = False
        self._upgrade = False
        self._expect_continue = False
        self.request_started = None
        self.queue.append(req)
        if len(self.queue) >= PIPELINE_MAX:
            self.update_reading()
        if self._handling is None:
            self._next()

    def _reset_parse(self) -> None:
        if self._body:
            self._body = []
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._body_size = 0
        self._chunked = False
        self._upgrade = False
        self._expect_continue = False
        self.request_started = None

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
                log.exception("internal error on %s", self.fast_prefix.decode("latin-1"))
                self._respond(self.server.render_error(INTERNAL_ERROR), close=True)
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
            log.exception("internal error on %s", self.fast_prefix.decode("latin-1"))
            self._respond(self.server.render_error(INTERNAL_ERROR), close=True)
            return
        self._respond(answer)

    async def _asgi(self, req: Request) -> None:
        answer = await asgi_exchange(self.server.app, self, req, self.server.scheme, self.server.render_error)
        if isinstance(answer, Streamed):
            await self._stream(req, answer)
        else:
            self._respond(answer)

    async def _stream(self, req: Request, s: Streamed) -> None:
        """Send a response as the app produces it (chunked; HTTP/1.0: until close), waiting
        while the client does not read. An app failure mid-body closes the connection
        without the terminator: the client sees a truncated response, not a complete one."""
        chunked = req.version != "1.0"
        keep_alive = req.keep_alive and chunked and not self.server.stopping
        complete = False
        try:
            if self.transport is None or self.closing:
                return
            head = [STATUS_LINES.get(s.status) or _status_line(s.status), self.server.date.value]
            for k, v in s.headers:
                head += (k, b": ", v, b"\r\n")
            if chunked:
                head.append(b"transfer-encoding: chunked\r\n")
            if not keep_alive:
                head.append(b"connection: close\r\n")
            head.append(b"\r\n")
            self._writable = asyncio.Event()
            self.outbox.write(self.transport, b"".join(head))
            async for chunk in s:
                if self._gone():
                    return
                if chunk:
                    self.outbox.write(self.transport, b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                    self.last_active = self._now()
                if self.write_paused:  # the client reads slowly: produce no further meanwhile
                    self._writable.clear()
                    if self.write_paused:
                        await self._writable.wait()
            if s.failed or self._gone():
                self.close()
                return
            if chunked:
                self.outbox.write(self.transport, b"0\r\n\r\n")
            complete = True
        finally:
            if not complete:  # the client went away (or we stop): the app stops producing
                s.stop()
        self._respond_done(req, keep_alive)

    def _respond(self, answer: Answer, close: bool = False) -> None:
        """Answer the request being handled, then go on with the connection."""
        req = self._handling
        if req is None or self.transport is None or self.closing:
            return
        status, headers, body = answer
        keep_alive = req.keep_alive and not close and not self.server.stopping
        self._write(status, headers, body if req.method != "HEAD" else b"", keep_alive)
        self._respond_done(req, keep_alive)

    def _gone(self) -> bool:
        return self.transport is None or self.closing

    def _respond_done(self, req: Request, keep_alive: bool) -> None:
        """The answer to ``req`` is written: close, or go on with the next request."""
        self.last_active = self._now()
        self._handling = None
        if req.reserved or req.body:
            self._free(req)
        if not keep_alive:
            self.close()
            return
        if self.queue:
            self._next()
        elif self._final is not None:
            self._write_final()
            return
        if self.read_paused:
            self.update_reading()

    def _refuse(self, answer: Answer) -> None:
        """A refusal that ends the connection, written once the requests before it are
        answered (in order); nothing more is read meanwhile."""
        if self._final is not None or self.closing:
            return
        self._final = answer
        self.request_started = None
        if self._body:
            self.held -= (n := sum(len(b) for b in self._body))
            self.server.unhold(n)
            self._body = []
        current = self._current
        if current is not None and current.reserved:  # refused: its body will never come
            self.reserved -= current.reserved
            self.server.unreserve(current.reserved)
            current.reserved = 0
        if self._pending is not None:
            self._pending = None
            self.awaiting_memory = False
            self.server.waiting.pop(self, None)
        self.update_reading()
        if self._handling is None and not self.queue:
            self._write_final()

    def _write_final(self) -> None:
        if self.transport is not None and not self.closing and self._final is not None:
            self._write(*self._final, keep_alive=False)
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
        self._free_all()
        if self.transport is not None and not self.transport.is_closing():
            self.outbox.flush()  # an answer queued for this connection goes out first
            self.transport.close()

    def _too_large(self) -> HttpError:
        return _over_limit(413, "BODY_TOO_LARGE", "corps de requête", self.limits.max_body_bytes)

    def _head_too_large(self) -> HttpError:
        return _over_limit(431, "HEADERS_TOO_LARGE", "en-têtes", self._max_head)

    # ------------------------------------------------------------------ reading and memory
    def _complete_unreserved(self, req: Request, need: int) -> None:
        """A body that waited for memory arrived whole in reads already made: it is held,
        so it is counted; reading may go on."""
        self.server.waiting.pop(self, None)
        self._pending = None
        self.server.force_reserve(self, need)
        req.reserved = need
        self.awaiting_memory = False
        self.update_reading()

    def _free(self, req: Request) -> None:
        """An answered (or dropped) request's body and reservation are given back."""
        if req.body:
            self.held -= len(req.body)
            self.server.unhold(len(req.body))
        if req.reserved:
            self.reserved -= req.reserved
            self.server.unreserve(req.reserved)
            req.reserved = 0

    def _free_all(self) -> None:
        """The connection is gone: everything it held or reserved is given back."""
        self.server.waiting.pop(self, None)
        self._pending = None
        self.awaiting_memory = False
        held, reserved, self.held, self.reserved = self.held, self.reserved, 0, 0
        if held:
            self.server.unhold(held)
        if reserved:
            self.server.unreserve(reserved)

    def granted(self, need: int) -> None:
        """(Called by the server, which reserved ``need`` bytes.) The body waiting for
        memory may be read now."""
        if self._pending is not None:
            self._pending[0].reserved = need
            self._pending = None
        self.awaiting_memory = False
        self.update_reading()

    def update_reading(self) -> None:
        """Read, or not: paused while the client does not read its answers, while enough
        requests are queued, while a head is judged, after a refusal, and while a body
        waits for memory to be reserved."""
        if self.closing or self.transport is None:
            return
        pause = (
            self.awaiting_memory
            or self.write_paused
            or len(self.queue) >= PIPELINE_MAX
            or self._final is not None
            or self._admitting is not None
        )
        if pause and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
        elif not pause and self.read_paused:
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
