"""The cold routes' ASGI exchange: one complete request in, one whole response out.

The routes behind it (connect, disconnect, traces, web login, health, metrics) are few and
cold; a minimal buffered exchange is all they need. Response headers are checked here
(names and values), since the app's bytes go to the client as they are.
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

_HEADER_NAME = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9a-zA-Z]+$")
_HEADER_VALUE = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")


async def asgi_exchange(
    app: Any, conn: Connection, req: Request, scheme: str, render_error: Callable[[HttpError], Answer]
) -> Answer:
    """Run the ASGI app on one complete request; return the whole response."""
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
        await app(scope, receive, send)
    except Exception:
        log.exception("internal error on %s", path)
        started = False
    finally:
        done.set()
    if not started:
        return render_error(INTERNAL_ERROR)
    for k, v in headers:
        if not _HEADER_NAME.match(k) or not _HEADER_VALUE.match(v):
            log.error("invalid response header refused on %s", path)
            return render_error(INTERNAL_ERROR)
    body = b"".join(chunks)
    if req.method == "HEAD":
        body = b""
    elif status not in (204, 304) and not 100 <= status < 200:
        headers.append((b"content-length", b"%d" % len(body)))
    else:
        body = b""
    return status, headers, body
