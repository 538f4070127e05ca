"""Operator logs: stdlib ``logging``, one line per event, JSON lines or text.

Why JSON by default when stderr is not a terminal: a service run by systemd, a container
runtime or `confiance up` is read by a log collector, which needs one parsable object per
line (exceptions included: JSON escapes their newlines, so a traceback never spreads over
forty lines that a collector would take for forty events). On a terminal a human reads
the text form. The encoding is python-json-logger's (orjson backend), not ours.

Fields of a JSON line: ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``,
``message``, then whatever the call passed in ``extra=`` (the access log puts the
request's fields there), and ``exception`` when there is one. Callers log identifiers,
never a secret, a token or a national id.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any, Literal

import orjson
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.orjson import OrjsonFormatter

LogFormat = Literal["json", "text"]
LEVELS = ("debug", "info", "warning", "error")

_RESERVED = frozenset(RESERVED_ATTRS) | {"message", "asctime"}


_second: tuple[int, str] = (-1, "")
_milli: tuple[int, str] = (-1, "")


def utc_iso(created: float) -> str:
    """``2026-12-06T04:05:43.123Z`` (the millisecond ``created`` falls in).

    Why cached: the access log stamps thousands of lines per second, a dozen or so per
    millisecond; the last millisecond's text and the last second's are kept."""
    global _second, _milli
    ms = int(created * 1000)
    cached = _milli  # one read: another thread may replace it, never half of it
    if cached[0] == ms:
        return cached[1]
    sec, frac = divmod(ms, 1000)
    day = _second
    if day[0] != sec:
        day = _second = (sec, datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    text = f"{day[1]}.{frac:03d}Z"
    _milli = (ms, text)
    return text


class JsonFormatter(OrjsonFormatter):
    """One JSON object per line: time, level, logger, message, extras, exception."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "exception"},
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_iso(record.created)


def json_line(created: float, level: str, logger: str, message: str, fields: dict[str, Any]) -> str:
    """The line :class:`JsonFormatter` writes for such a record, without building one
    (the access log writes thousands per second; tested equal)."""
    return orjson.dumps(
        {"time": utc_iso(created), "level": level, "logger": logger, "message": message, **fields},
        option=orjson.OPT_NON_STR_KEYS,
    ).decode()


class JsonStreamHandler(logging.StreamHandler):
    """The handler :func:`setup` installs in JSON mode; it also takes whole batches of
    lines already encoded by :func:`json_line` (one write, one flush)."""

    def write_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        with self.lock:  # type: ignore[union-attr]
            self.stream.write("\n".join(lines) + "\n")
            self.flush()


def batch_handler(log: logging.Logger, level: int = logging.INFO) -> JsonStreamHandler | None:
    """The one JSON handler a record of ``log`` at ``level`` would reach, if that is all
    it would reach (no filter, no other handler): lines can then bypass LogRecords."""
    current: logging.Logger | None = log
    while current is not None:
        if current.filters:
            return None
        if current.handlers:
            hs = current.handlers
            if len(hs) == 1 and type(hs[0]) is JsonStreamHandler and not hs[0].filters and hs[0].level <= level:
                return hs[0]
            return None
        current = current.parent if current.propagate else None
    return None


class TextFormatter(logging.Formatter):
    """``time LEVEL logger message key=value…``: the same fields as JSON, for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_iso(record.created)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{k}={v}" for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")]
        if not extras:
            return line
        head, sep, tail = line.partition("\n")  # extras stay on the event's line, before a traceback
        return head + " " + " ".join(extras) + sep + tail


def resolve_format(fmt: LogFormat | None, stream: IO[str]) -> LogFormat:
    """``None`` means: text on a terminal, JSON lines otherwise."""
    if fmt is not None:
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else TextFormatter()


def setup(level: str = "INFO", fmt: LogFormat | None = None, stream: IO[str] | None = None) -> LogFormat:
    """Configure the root logger (replacing any previous setup); returns the format in use."""
    out: IO[str] = stream if stream is not None else sys.stderr
    chosen = resolve_format(fmt, out)
    handler = JsonStreamHandler(out) if chosen == "json" else logging.StreamHandler(out)
    handler.setFormatter(formatter(chosen))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # one INFO line per outbound request (trust-list refreshes, introspection) drowns the logs
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    return chosen


class Incident:
    """A dependency's health as the logs tell it: one line when it fails, one when it is back.

    Why: a store on a wrong port fails every request; a line per failure would bury the
    logs (and cost the hot path), no line at all left operators blind (a Redis on a wrong
    port was silent even at ``debug``). :meth:`ok` is called on every success, so it is
    one attribute test while nothing is wrong.
    """

    __slots__ = ("clock", "dependency", "down", "failures", "log", "since", "target")

    def __init__(
        self, dependency: str, target: str, log: logging.Logger, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.dependency = dependency
        self.target = target  # host:port or URL without credentials
        self.log = log
        self.clock = clock
        self.down = False
        self.since = 0.0
        self.failures = 0

    def failed(self, error: BaseException | str) -> None:
        self.failures += 1
        if self.down:
            return
        self.down = True
        self.since = self.clock()
        reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.log.error(
            "dependency unavailable: %s at %s",
            self.dependency,
            self.target,
            extra={"dependency": self.dependency, "target": self.target, "error": reason},
        )

    def ok(self) -> None:
        if not self.down:
            return
        self.down = False
        self.log.warning(
            "dependency recovered: %s at %s",
            self.dependency,
            self.target,
            extra={
                "dependency": self.dependency,
                "target": self.target,
                "outage_seconds": round(self.clock() - self.since, 3),
                "failures": self.failures,
            },
        )
        self.failures = 0


def redact_url(url: str) -> str:
    """``scheme://host:port/path`` of a store URL, without user or password (safe to log)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    if not host:
        return f"{parts.scheme}://{parts.path}" if parts.scheme else "<invalid url>"
    return f"{parts.scheme}://{host}{port}{parts.path}"
