"""The outbox (confiance.proxy.http1.outbox): writes of one loop pass leave together, in order."""

from __future__ import annotations

import asyncio

import pytest

from confiance.proxy.http1.outbox import Outbox


class _Transport:
    def __init__(self, log: list[tuple[str, bytes]], name: str, fail: bool = False) -> None:
        self.log, self.name, self.fail = log, name, fail
        self.closing = False

    def write(self, data: bytes) -> None:
        if self.fail:
            raise RuntimeError("broken")
        self.log.append((self.name, data))

    def is_closing(self) -> bool:
        return self.closing


def test_writes_leave_at_the_end_of_the_pass_in_order() -> None:
    async def main() -> None:
        log: list[tuple[str, bytes]] = []
        box = Outbox()
        a, b = _Transport(log, "a"), _Transport(log, "b")
        box.write(a, b"1")  # type: ignore[arg-type]
        box.write(b, b"2")  # type: ignore[arg-type]
        box.write(a, b"3")  # type: ignore[arg-type]
        assert log == []  # nothing before the pass ends
        await asyncio.sleep(0)
        assert log == [("a", b"1"), ("b", b"2"), ("a", b"3")]
        box.write(a, b"4")  # type: ignore[arg-type]  # a new pass schedules a new flush
        await asyncio.sleep(0)
        assert log[-1] == ("a", b"4")

    asyncio.run(main())


def test_flush_now_skips_closed_transports_and_survives_a_broken_one(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        log: list[tuple[str, bytes]] = []
        box = Outbox()
        gone, broken, ok = _Transport(log, "gone"), _Transport(log, "broken", fail=True), _Transport(log, "ok")
        box.write(gone, b"x")  # type: ignore[arg-type]
        box.write(broken, b"y")  # type: ignore[arg-type]
        box.write(ok, b"z")  # type: ignore[arg-type]
        gone.closing = True  # its request failed meanwhile
        box.flush()  # before a close: at once
        assert log == [("ok", b"z")]
        await asyncio.sleep(0)  # the scheduled flush finds nothing left
        assert log == [("ok", b"z")]

    asyncio.run(main())
    assert "write to a connection failed" in caplog.text
