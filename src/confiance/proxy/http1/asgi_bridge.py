"""The cold routes' ASGI exchange: one complete request in, one whole response out.

The routes behind it (connect, disconnect, traces, web login, health, metrics) are few and
cold; a minimal buffered exchange is all they need. Response headers are checked here
(names and values), since the app's bytes go to the client as they are.

One exception: a response that declares no length and whose body, sent in several parts,
grows past ``STREAM_AFTER`` (``GET /traces``: every trace of a window, however many) is
handed over as a :class:`Streamed` answer from there on. Its chunks pass through a small bounded queue, so the app waits
while the client reads and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .answers import INTERNAL_ERROR, Answer, HttpError

if TYPE_CHECKING:
    from .connection import Connection, Request

log = logging.getLogger("confiance.proxy.http1")

STREAM_AFTER = 256 * 1024  # bytes buffered before a multi-part body is streamed instead

_HEADER_NAME = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9a-zA-Z]+$")
_HEADER_VALUE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")


class Streamed:
    """A response sent as it is produced: status, headers, then chunks from the app.

    ``failed`` is set when the app raised mid-body: the connection is then closed without
    the body's terminator, so the client sees a truncated response, never a short one
    that looks complete."""

    QUEUE = 4  # chunks produced ahead of the client

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status, self.headers = status, headers
        self.failed = False
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(self.QUEUE)
        self.aborted = asyncio.Event()  # the response is over for the client
        self.producer: asyncio.Future[None] | None = None  # the app, still producing

    def stop(self) -> None:
        """The client went away mid-body: stop the app rather than let it read on."""
        self.aborted.set()
        if self.producer is not None and not self.producer.done():
            self.producer.cancel()

    async def put(self, chunk: bytes | None) -> None:
        if not self.aborted.is_set():
            put = asyncio.ensure_future(self._queue.put(chunk))
            stop = asyncio.ensure_future(self.aborted.wait())
            await asyncio.wait({put, stop}, return_when=asyncio.FIRST_COMPLETED)
            for f in (put, stop):
                f.cancel()

    def __aiter__(self) -> Streamed:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._queue.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


async def asgi_exchange(
    app: Any, conn: Connection, req: Request, scheme: str, render_error: Callable[[HttpError], Answer]
) -> Answer | Streamed:
    """Run the ASGI app on one complete request; return the whole response (or a
    :class:`Streamed` one, see the module docstring)."""
    raw_path, _, query = req.target.partition(b"?")
    path = raw_path.decode("latin-1")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": req.version,
        "server": conn.local,
        "client": conn.peer,
        "scheme": scheme,
        "method": req.method,
        "root_path": "",
        "path": urllib.parse.unquote(path) if "%" in path else path,
        "raw_path": raw_path,
        "query_string": query,
        "headers": req.headers,
        "state": {},
        "confiance.listener": "admin" if conn.admin else "public",
    }
    if conn.tls_ext is not None:
        scope["extensions"] = {"tls": conn.tls_ext}
    body_sent = False
    done = asyncio.Event()
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []
    started = False
    stream: Streamed | None = None
    buffered = 0
    streaming: asyncio.Future[Streamed] = asyncio.get_running_loop().create_future()

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
            nonlocal stream, buffered
            more = bool(message.get("more_body", False))
            chunk = bytes(message.get("body", b""))
            if stream is not None:
                await stream.put(chunk)
                if not more:
                    await stream.put(None)
                    done.set()
                return
            if (
                more
                and buffered + len(chunk) > STREAM_AFTER
                and req.method != "HEAD"
                and status not in (204, 304)
                and all(k != b"content-length" for k, _ in headers)
                and _valid(headers, path)
            ):
                stream = Streamed(status, headers)
                streaming.set_result(stream)
                await stream.put(b"".join([*chunks, chunk]))
                chunks.clear()
                return
            chunks.append(chunk)
            buffered += len(chunk)
            if not more:
                done.set()

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except Exception:
            log.exception("internal error on %s", path)
            if stream is not None:
                stream.failed = True
                await stream.put(None)
            raise
        finally:
            done.set()

    task = asyncio.ensure_future(run())
    waiters: set[asyncio.Future[Any]] = {task, streaming}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if streaming.done():
        conn.server.tasks.add(task)  # the app goes on producing while the client reads
        task.add_done_callback(conn.server.tasks.discard)
        task.add_done_callback(_retrieve)
        streaming.result().producer = task
        return streaming.result()
    streaming.cancel()
    if task.exception() is not None:
        started = False
    if not started:
        return render_error(INTERNAL_ERROR)
    if not _valid(headers, path):
        return render_error(INTERNAL_ERROR)
    body = b"".join(chunks)
    if req.method == "HEAD":
        body = b""
    elif status not in (204, 304) and not 100 <= status < 200:
        headers.append((b"content-length", b"%d" % len(body)))
    else:
        body = b""
    return status, headers, body


def _valid(headers: list[tuple[bytes, bytes]], path: str) -> bool:
    for k, v in headers:
        if not _HEADER_NAME.match(k) or not _HEADER_VALUE.match(v):
            log.error("invalid response header refused on %s", path)
            return False
    return True


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # logged in run(); retrieved so asyncio does not log it again
