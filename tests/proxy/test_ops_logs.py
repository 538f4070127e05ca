"""Operator logs: JSON lines (parsed here as JSON), the text form, access lines that never
carry a session id, and dependency incidents logged once with their recovery."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from confiance.core import logs
from confiance.proxy.access_log import AccessLog, session_hash

SID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_by_default_when_not_a_tty_and_one_line_per_exception(restore_logging: None) -> None:
    out = io.StringIO()  # not a terminal
    assert logs.setup("INFO", stream=out) == "json"
    log = logging.getLogger("confiance.test")
    log.info("started", extra={"listen": ["127.0.0.1:8443"]})
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        log.exception("failed")
    text = out.getvalue()
    assert text.count("\n") == 2  # the traceback stays on its line
    first, second = _json_lines(out)
    assert first["message"] == "started" and first["level"] == "INFO" and first["logger"] == "confiance.test"
    assert first["listen"] == ["127.0.0.1:8443"]
    assert str(first["time"]).endswith("Z")
    assert second["level"] == "ERROR"
    assert "ValueError: bad\nthing" in str(second["exception"])
    assert "Traceback" in str(second["exception"])


def test_text_on_a_terminal_and_on_request(restore_logging: None) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    assert logs.setup("INFO", stream=out) == "text"
    logging.getLogger("confiance.test").warning("hello", extra={"k": 1})
    line = out.getvalue().strip()
    assert " WARNING confiance.test hello k=1" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    forced = io.StringIO()
    assert logs.setup("INFO", fmt="text", stream=forced) == "text"


def test_level_filters(restore_logging: None) -> None:
    out = io.StringIO()
    logs.setup("WARNING", fmt="json", stream=out)
    logging.getLogger("confiance.test").info("hidden")
    assert out.getvalue() == ""


def _access_logger(out: io.StringIO) -> logging.Logger:
    log = logging.getLogger(f"confiance.proxy.access.test{id(out)}")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    log.handlers[:] = [handler]
    return log


def test_access_line_fields_and_no_session_id() -> None:
    out = io.StringIO()
    access = AccessLog(logger=_access_logger(out))
    access.line("POST", "send", 200, 0.0123, service="dmp", client_id="lps-1", sid=SID, peer=("127.0.0.1", 5555))
    access.line("GET", "healthz", 200, 0.0001)
    first, second = _json_lines(out)
    assert first["message"] == "access"
    assert first["method"] == "POST" and first["route"] == "send" and first["service"] == "dmp"
    assert first["status"] == 200 and first["duration_ms"] == 12.3
    assert first["client_id"] == "lps-1" and first["peer"] == "127.0.0.1"
    assert first["session"] == session_hash(SID) and len(str(first["session"])) == 16
    assert SID not in out.getvalue() and SID.replace("-", "") not in out.getvalue()
    assert "service" not in second and "session" not in second and second["route"] == "healthz"


def test_access_lines_are_batched_on_the_loop_and_flushed() -> None:
    out = io.StringIO()
    access = AccessLog(logger=_access_logger(out), interval=3600, batch_max=3)

    async def scenario() -> None:
        access.line("GET", "send", 200, 0.001, sid=SID)
        access.line("GET", "send", 404, 0.001)
        assert out.getvalue() == ""  # waiting for the timer
        access.line("GET", "send", 502, 0.001)  # the batch is full: written now
        assert [x["status"] for x in _json_lines(out)] == [200, 404, 502]
        access.line("GET", "connect", 200, 0.5)
        access.flush()  # stop: what is left is written

    asyncio.run(scenario())
    assert [x["route"] for x in _json_lines(out)][-1] == "connect"


def test_access_log_disabled_below_info() -> None:
    out = io.StringIO()
    log = _access_logger(out)
    log.setLevel(logging.WARNING)
    access = AccessLog(logger=log)
    access.line("GET", "send", 200, 0.001)
    access.flush()
    assert not access.enabled and out.getvalue() == ""


def test_incident_logged_once_and_recovery_logged() -> None:
    out = io.StringIO()
    log = _access_logger(out)
    now = [100.0]
    inc = logs.Incident("redis", "redis://127.0.0.1:1/0", log, clock=lambda: now[0])
    inc.ok()
    for _ in range(5):
        inc.failed(ConnectionRefusedError("refused"))
    now[0] = 112.5
    inc.ok()
    inc.ok()
    lines = _json_lines(out)
    assert [x["level"] for x in lines] == ["ERROR", "WARNING"]
    assert lines[0]["dependency"] == "redis" and lines[0]["target"] == "redis://127.0.0.1:1/0"
    assert "ConnectionRefusedError" in str(lines[0]["error"])
    assert lines[1]["outage_seconds"] == 12.5 and lines[1]["failures"] == 5


def test_redact_url_drops_credentials() -> None:
    assert logs.redact_url("redis://user:pw@10.0.0.1:6380/2") == "redis://10.0.0.1:6380/2"
    assert logs.redact_url("postgresql+psycopg://u:p@db/traces") == "postgresql+psycopg://db/traces"
    assert logs.redact_url("sqlite:////var/lib/x.db") == "sqlite:////var/lib/x.db"


@pytest.mark.redis
def test_redis_on_a_wrong_port_logged_once_then_recovery(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Today's symptom: a Redis on a wrong port was silent even at debug."""
    from urllib.parse import urlparse

    from confiance.proxy.sessions import RedisStore, StoreUnavailable
    from tests.proxy.test_stores import TcpRelay

    relay = TcpRelay(urlparse(redis_url).port or 6379)  # nothing listens on relay.port yet
    store = RedisStore(f"redis://127.0.0.1:{relay.port}/0", prefix="t:ops:")
    caplog.set_level(logging.INFO, logger="confiance.proxy.sessions")

    async def attempt() -> bool:
        try:
            await store.get(SID)
        except StoreUnavailable:
            return False
        return True

    async def scenario() -> None:
        try:
            assert [await attempt() for _ in range(4)] == [False] * 4
            relay.start()
            ok = False
            for _ in range(50):  # the client reconnects on its next call
                if ok := await attempt():
                    break
                await asyncio.sleep(0.1)
            assert ok
            assert await attempt()
        finally:
            await store.close()
            relay.cut()

    asyncio.run(scenario())
    records = [r for r in caplog.records if r.name == "confiance.proxy.sessions"]
    assert [r.levelname for r in records] == ["ERROR", "WARNING"]
    assert records[0].__dict__["target"] == f"redis://127.0.0.1:{relay.port}/0"
    assert records[1].__dict__["failures"] >= 4


def test_batched_json_lines_equal_the_formatters(restore_logging: None) -> None:
    """The access log's fast path writes exactly what the JSON formatter would."""
    out = io.StringIO()
    logs.setup("INFO", fmt="json", stream=out)
    log = logging.getLogger("confiance.proxy.access")
    assert logs.batch_handler(log) is not None
    fields = {"method": "GET", "route": "send", "status": 200, "duration_ms": 1.5, "session": "ab", "peer": "::1"}
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, "access", (), None, extra=fields)
    expected = logging.getLogger().handlers[0].format(record)
    assert logs.json_line(record.created, "INFO", log.name, "access", fields) == expected
    access = AccessLog()
    access.line("GET", "send", 200, 0.0015, service="dmp", client_id="lps", sid=SID, peer=("::1", 1))
    line = json.loads(out.getvalue())
    assert line["logger"] == "confiance.proxy.access" and line["session"] == session_hash(SID)
    assert line["service"] == "dmp" and line["duration_ms"] == 1.5 and str(line["time"]).endswith("Z")


def test_access_fast_path_lines_equal_the_record_path(restore_logging: None) -> None:
    """The access log's cached fragments (a session's fields encoded once) give, line for
    line and byte for byte, what the LogRecord path and the JSON formatter write, whatever
    the fields: absent ones, characters JSON escapes, durations of every size."""
    fast_out, slow_out = io.StringIO(), io.StringIO()
    logs.setup("INFO", fmt="json", stream=fast_out)
    fast = AccessLog(interval=3600, batch_max=10_000)
    assert logs.batch_handler(fast.log) is not None
    slow_log = logging.getLogger("confiance.proxy.access")  # same name: same "logger" field
    calls = [
        ("GET", "send", 200, 0.0015, "dmp", "lps-1", SID, ("127.0.0.1", 1)),
        ("GET", "send", 200, 0.0, "dmp", "lps-1", SID, ("127.0.0.1", 1)),  # same session: cached
        ("POST", "send", 502, 12.3456789, "dmp", "lps-1", SID, ("127.0.0.1", 2)),
        ("GET", "healthz", 200, 0.0001, None, None, None, None),
        ("DELETE", "other", 404, 1e-7, None, 'lps "é\\n\u2028', None, ("::1", 3)),
        ("PUT", "send", 413, 3600.0004999, "x" * 40, None, "not-a-uuid", None),
    ]

    async def scenario() -> None:
        for method, route, status, seconds, service, client_id, sid, peer in calls:
            fast.line(method, route, status, seconds, service, client_id, sid, peer)
        fast.flush()

    asyncio.run(scenario())
    stamped = [(json.loads(x)["time"], x) for x in fast_out.getvalue().split("\n") if x]
    assert len(stamped) == len(calls)
    handler = logging.getLogger().handlers[0]
    for (when, line), (method, route, status, seconds, service, client_id, sid, peer) in zip(
        stamped, calls, strict=True
    ):
        extra: dict[str, object] = {"method": method, "route": route, "status": status}
        extra["duration_ms"] = round(seconds * 1000, 3)
        extra.update({k: v for k, v in (("service", service), ("client_id", client_id)) if v is not None})
        if sid is not None:
            extra["session"] = session_hash(sid)
        if peer is not None:
            extra["peer"] = peer[0]
        record = slow_log.makeRecord(slow_log.name, logging.INFO, __file__, 0, "access", (), None, extra=extra)
        expected = json.loads(handler.format(record))
        expected["time"] = when  # the record path stamps the record's own creation time
        assert json.loads(line) == expected
        assert line == json.dumps(expected, ensure_ascii=False, separators=(",", ":"))
    assert SID not in fast_out.getvalue() and slow_out.getvalue() == ""


def test_batch_path_not_taken_when_other_handlers_listen(restore_logging: None) -> None:
    logs.setup("INFO", fmt="json", stream=io.StringIO())
    log = logging.getLogger("confiance.proxy.access")
    extra = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(extra)
    assert logs.batch_handler(log) is None  # two handlers: records, so both see the lines
    logs.setup("INFO", fmt="text", stream=io.StringIO())
    assert logs.batch_handler(log) is None


def test_utc_timestamps() -> None:
    from confiance.core.logs import utc_iso

    assert utc_iso(0.0) == "1970-01-01T00:00:00.000Z"
    assert utc_iso(1_800_000_000.9996) == "2027-01-15T08:00:00.999Z"
    assert utc_iso(1_800_000_001.25) == "2027-01-15T08:00:01.250Z"


def test_trace_database_outage_logged_once_then_recovery(tmp_path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    """A database that refuses batches: one ERROR however many retries, one recovery line."""
    from confiance.proxy.traces import TraceStore
    from confiance.proxy.tracewriter import TraceWriter

    store = TraceStore(f"sqlite:///{tmp_path}/t.db")
    calls = {"n": 0}

    async def flaky(items: list[object]) -> None:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise OSError("database is down")
        await asyncio.to_thread(store.append, items)

    caplog.set_level(logging.INFO, logger="confiance.proxy")

    async def scenario() -> None:
        writer = TraceWriter(store, 0.01, 100, 1000, appender=flaky)
        writer.start()
        await writer.write({"type": "CONNECT", "x": 1}, 1.0)
        await writer.close()

    asyncio.run(scenario())
    store.close()
    mine = [r for r in caplog.records if "dependency" in r.getMessage()]
    assert [r.levelname for r in mine] == ["ERROR", "WARNING"]
    assert mine[0].__dict__["target"].startswith("sqlite:///") and mine[1].__dict__["failures"] == 3
