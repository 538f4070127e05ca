"""One access line per request, at a cost the relay can afford.

What a line says (logger ``confiance.proxy.access``, message ``access``): ``method``,
``route`` (``send``, ``connect``, ``healthz``…), ``service`` (for /send), ``status``,
``duration_ms``, ``client_id`` (the LPS), ``session`` (the first 16 hex digits of the
SHA-256 of the session id: enough to follow one session across lines and workers, not the
cookie itself, which is a bearer credential) and ``peer`` (the TCP peer's address). Never a
token, never a national id, never a body.

Why batched: building a ``LogRecord``, formatting it and writing it costs several
microseconds, as much as a third of what a relayed /send costs the proxy (profiled). On
the request path a line is one tuple appended to a list; the lines are encoded and written
together, at most ``interval`` seconds later (one timer per batch, armed by the batch's
first line) or as soon as ``batch_max`` lines wait. When the logs go, as JSON, to the plain
stream handler ``core.logs.setup`` installs, a batch skips ``LogRecord``s: each line is
the dict orjson encodes (the very line the JSON formatter would write; tested equal) and
the batch is one write. Any other setup (text, extra handlers, filters) gets records. The ``time`` of each line is when the request was
answered, not when the batch was written. :meth:`flush` at stop writes what is left.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Any

import orjson

from confiance.core.logs import batch_handler, utc_iso

LOGGER = "confiance.proxy.access"
_HASH_CACHE_MAX = 50_000

# time, method, route, service, status, seconds, client_id, session id, peer
_Line = tuple[float, str, str, str | None, int, float, str | None, str | None, str | None]


def _fields(values: dict[str, Any]) -> str:
    """``"a":1,"b":"x"``: the members of the JSON object, without its braces."""
    return orjson.dumps(values).decode()[1:-1]


def session_hash(sid: str) -> str:
    """What the logs show of a session id: not reversible (ids are 122 random bits)."""
    return hashlib.sha256(sid.encode("ascii", "replace")).hexdigest()[:16]


class AccessLog:
    def __init__(
        self,
        enabled: bool = True,
        logger: logging.Logger | None = None,
        interval: float = 0.1,
        batch_max: int = 512,
    ) -> None:
        self.log = logger or logging.getLogger(LOGGER)
        # Decided once: a proxy at WARNING pays nothing per request.
        self.enabled = enabled and self.log.isEnabledFor(logging.INFO)
        self.interval = interval
        self.batch_max = batch_max
        self._pending: list[_Line] = []
        self._timer: asyncio.TimerHandle | None = None
        self._hashes: dict[str, str] = {}
        # Encoded once (see _json_lines): the start of every line, then per (method,
        # route) and per (service, client, session, peer) what the line says of them.
        self._prefix = _fields({"level": "INFO", "logger": self.log.name, "message": "access"}) + ","
        self._head: dict[tuple[str, str], str] = {}
        self._tails: dict[tuple[str | None, str | None, str | None, str | None], str] = {}

    def line(
        self,
        method: str,
        route: str,
        status: int,
        seconds: float,
        service: str | None = None,
        client_id: str | None = None,
        sid: str | None = None,
        peer: tuple[str, int] | None = None,
    ) -> None:
        """Record one answered request (called on the event loop thread)."""
        if not self.enabled:
            return
        pending = self._pending
        pending.append(
            (time.time(), method, route, service, status, seconds, client_id, sid, peer[0] if peer else None)
        )
        if len(pending) >= self.batch_max:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)
            except RuntimeError:  # no event loop (a tool, a test): write now
                self.flush()

    def flush(self) -> None:
        """Write the waiting lines (timer, full batch, or stop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        if not pending:
            return
        log = self.log
        fast = batch_handler(log)
        if fast is not None:  # JSON to a plain stream: the same lines, no LogRecord
            fast.write_lines(self._json_lines(pending))
            return
        for t, method, route, service, status, seconds, client_id, sid, peer in pending:
            extra: dict[str, Any] = {
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                **self._who_fields(service, client_id, sid, peer),
            }
            record = log.makeRecord(log.name, logging.INFO, __file__, 0, "access", (), None, extra=extra)
            record.created = t
            record.msecs = (t - int(t)) * 1000
            log.handle(record)

    def _json_lines(self, pending: list[_Line]) -> list[str]:
        """The lines :func:`json_line` would write for these requests, field for field.

        Why not ``json_line`` per line: a line is mostly what the previous lines of the
        same session already said (method, route, service, client, session, peer). That
        part is encoded once per distinct value and kept; per line only the time, the
        status and the duration are formatted (tested equal to the formatter's lines)."""
        head = self._head
        tails = self._tails
        lines: list[str] = []
        append = lines.append
        for t, method, route, service, status, seconds, client_id, sid, peer in pending:
            what = head.get((method, route))
            if what is None:
                what = head[(method, route)] = self._prefix + _fields({"method": method, "route": route})
            who = tails.get((service, client_id, sid, peer))
            if who is None:
                if len(tails) >= _HASH_CACHE_MAX:
                    tails.clear()
                who = tails[(service, client_id, sid, peer)] = self._who(service, client_id, sid, peer)
            # float repr is the shortest round-trip form, as orjson writes it.
            append(
                f'{{"time":"{utc_iso(t)}",{what},"status":{status},"duration_ms":{round(seconds * 1000, 3)!r}{who}}}'
            )
        return lines

    def _who(self, service: str | None, client_id: str | None, sid: str | None, peer: str | None) -> str:
        fields = self._who_fields(service, client_id, sid, peer)
        return "," + _fields(fields) if fields else ""

    def _who_fields(
        self, service: str | None, client_id: str | None, sid: str | None, peer: str | None
    ) -> dict[str, Any]:
        """What a line says of who asked: only the fields that have a value."""
        fields: dict[str, Any] = {}
        if service is not None:
            fields["service"] = service
        if client_id is not None:
            fields["client_id"] = client_id
        if sid is not None:
            fields["session"] = self._hash(sid)
        if peer is not None:
            fields["peer"] = peer
        return fields

    def _hash(self, sid: str) -> str:
        h = self._hashes.get(sid)
        if h is None:
            if len(self._hashes) >= _HASH_CACHE_MAX:
                self._hashes.clear()
            h = self._hashes[sid] = session_hash(sid)
        return h


class ObservedApp:
    """The ASGI app of the cold routes (everything but /send), measured: per request one
    access line and the route's metrics (count by status code, duration histogram).

    Why here rather than in each handler: every route gets the same treatment, including
    the ones nobody thought of (health, metrics, 404s), and the handlers stay about ANS.
    Unknown paths are reported as route ``other``: a path is the caller's to choose, and
    neither the logs nor the metrics' label set should grow with what callers try.
    """

    ROUTES = frozenset({"connect", "disconnect", "traces", "authorize", "callback", "healthz", "readyz", "metrics"})

    def __init__(self, app: Any, access: AccessLog, metrics: Any) -> None:
        self.app = app
        self.access = access
        self.metrics = metrics

    def __getattr__(self, name: str) -> Any:
        # The wrapped app's attributes (``core``…) read through: callers holding the
        # server's app see the proxy's app.
        return getattr(self.app, name)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def observed_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            seconds = time.perf_counter() - t0
            name = scope["path"].strip("/").split("/", 1)[0]
            route = name if name in self.ROUTES else "other"
            self.metrics.request(route, status, seconds)
            self.access.line(
                scope["method"], route, status, seconds, sid=_cookie_sid(scope["headers"]), peer=scope.get("client")
            )


def _cookie_sid(headers: list[tuple[bytes, bytes]]) -> str | None:
    for k, v in headers:
        if k == b"cookie":
            for part in v.split(b";"):
                n, _, val = part.strip().partition(b"=")
                if n == b"proxy_session_id" and val:
                    return val.decode("latin-1")
    return None
