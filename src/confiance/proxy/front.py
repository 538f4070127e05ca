"""The proxy's HTTP/1.1 protocol: ``/send`` answered without ASGI, the rest through it.

Why: measured on this project's benchmark (docs/benchmarks/proxy.md), a relay whose
inbound side is uvicorn's ASGI cycle tops out at about a quarter of an nginx worker, while
the same relay written directly on the event loop's protocol reaches nginx's order of
magnitude: per request, the ASGI cycle builds message dicts, validates and lower-cases every
response header, writes head and body separately, and runs the app's own dispatch. The
hot path needs none of that: its response is complete (status, headers, one body) when the
upstream answers.

So this protocol extends the server's (``TLSExposingProtocol``, itself uvicorn's httptools
protocol) and keeps all of its connection handling: parsing, keep-alive and its timeout,
pipelining order, flow control, graceful shutdown, the task set the server waits for.
Only the request cycle differs for ``/send/…``: a :class:`SendCycle` reads the (bounded)
body, calls :meth:`ProxyApp.handle_send` and writes the response in one ``write``. Every
other path (connect, disconnect, traces, web login, health, metrics) gets uvicorn's
ordinary ASGI cycle. The cycle follows the duck type uvicorn's protocol drives
(``body``, ``more_body``, ``message_event``, ``keep_alive``, ``response_complete``,
``disconnected``, ``run_asgi``); uvicorn is pinned, and tests/proxy run every /send
through this class, so a change there fails loudly.
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import TYPE_CHECKING, Any

from confiance.core.server import TLSExposingProtocol

from .domain import ProxyError

if TYPE_CHECKING:
    from .app import ProxyApp

log = logging.getLogger("confiance.proxy")

SEND_PREFIX = b"/send/"
HIGH_WATER = 65536  # stop reading a body from the socket past this many buffered bytes


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1")


STATUS_LINES = {code: _status_line(code) for code in range(100, 600)}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
ERROR_500 = b'{"code":"INTERNAL_ERROR","message":"erreur interne du proxy","metadata":{}}'


class SendCycle:
    """One ``/send`` request on a connection, driven by the protocol's parser callbacks."""

    __slots__ = (
        "body",
        "client",
        "default_headers",
        "disconnected",
        "expect_continue",
        "flow",
        "headers",
        "keep_alive",
        "message_event",
        "method",
        "more_body",
        "on_response",
        "proxy",
        "query",
        "raw_path",
        "response_complete",
        "transport",
    )

    def __init__(self, protocol: ProxyProtocol, proxy: ProxyApp, raw_path: bytes, query: bytes) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport = protocol.transport
        self.flow = protocol.flow
        self.default_headers: list[tuple[bytes, bytes]] = protocol.server_state.default_headers
        self.method: str = protocol.scope["method"]
        self.headers: list[tuple[bytes, bytes]] = protocol.headers
        self.client: tuple[str, int] | None = protocol.client
        self.raw_path = raw_path
        self.query = query
        self.expect_continue = protocol.expect_100_continue
        self.keep_alive = protocol.parser.should_keep_alive() and protocol.parser.get_http_version() == "1.1"
        self.on_response = protocol.on_response_complete
        # Fields the protocol's on_body / on_message_complete / connection_lost update.
        self.body = bytearray()
        self.more_body = True
        self.message_event = asyncio.Event()
        self.response_complete = False
        self.disconnected = False

    async def read_body(self) -> bytes:
        """The whole request body, refused past ``server.max_body_bytes`` (413)."""
        limit = self.proxy.max_body
        for k, v in self.headers:
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    raise ProxyError(400, "INVALID_REQUEST", "Content-Length invalide") from None
                if declared > limit:
                    raise _too_large(limit)
        if self.more_body and self.expect_continue and not self.transport.is_closing():
            self.transport.write(CONTINUE)
        while self.more_body and not self.disconnected:
            if len(self.body) > limit:
                raise _too_large(limit)
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected:
            raise ProxyError(400, "CLIENT_DISCONNECTED", "requête interrompue")
        if len(self.body) > limit:
            raise _too_large(limit)
        return bytes(self.body)

    async def run_asgi(self, _app: Any) -> None:
        """Named for the protocol's contract; runs the hot path, not an ASGI app."""
        try:
            status, headers, body = await self.proxy.handle_send(
                self.method, self.raw_path, self.query, self.headers, self.client, self.read_body
            )
        except Exception:
            log.exception("erreur interne sur /send")
            status, headers, body = 500, [(b"content-type", b"application/json")], ERROR_500
            headers.append((b"content-length", b"%d" % len(body)))
            self.keep_alive = False
        if self.disconnected:
            return
        if self.flow.write_paused:
            await self.flow.drain()
        parts = [STATUS_LINES[status]]
        for k, v in self.default_headers:
            parts += (k, b": ", v, b"\r\n")
        for k, v in headers:
            parts += (k, b": ", v, b"\r\n")
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.transport.write(b"".join(parts))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()


def _too_large(limit: int) -> ProxyError:
    return ProxyError(413, "BODY_TOO_LARGE", f"corps de requête trop volumineux (max {limit} octets)")


class ProxyProtocol(TLSExposingProtocol):
    """uvicorn's httptools protocol with the /send cycle swapped in (see module docstring)."""

    proxy: ProxyApp  # set on the subclass made by protocol_for()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if not isinstance(cycle, SendCycle):
            super().on_body(body)
            return
        if cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_headers_complete(self) -> None:
        url = self.url
        if not url.startswith(SEND_PREFIX) or self.parser.should_upgrade():
            super().on_headers_complete()
            return
        self.scope["method"] = self.parser.get_method().decode("ascii")
        raw_path, _, query = url.partition(b"?")
        raw_path = raw_path.partition(b"#")[0]
        cycle = SendCycle(self, self.proxy, raw_path, query)
        previous = self.cycle
        self.cycle = cycle  # type: ignore[assignment]
        if previous is None or previous.response_complete:
            self._start_asgi_task(cycle, self.app)  # type: ignore[arg-type]
        else:
            # A pipelined request: answered after the one in flight, as HTTP/1.1 requires.
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))  # type: ignore[arg-type]


def protocol_for(proxy: ProxyApp) -> type[ProxyProtocol]:
    """A protocol class bound to one proxy app (uvicorn instantiates the class itself)."""
    return type("BoundProxyProtocol", (ProxyProtocol,), {"proxy": proxy})
