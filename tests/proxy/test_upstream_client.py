"""The hot-path HTTP/1.1 client against scripted raw servers: framing, keep-alive, retries, limits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from confiance.proxy.http1.client import SWEEP_INTERVAL, Pool, UpstreamError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await reader.readexactly(length) if length else b""
    return head, body


async def _with_server(handler: Handler, test: Callable[[Pool, dict[str, int]], Awaitable[None]]) -> dict[str, int]:
    stats = {"connections": 0, "requests": 0}

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        try:
            await handler(reader, writer, stats["connections"])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Pool("127.0.0.1", port, None, None, limit=4, connect_timeout=2, max_response=1000)
    try:
        await test(pool, stats)
    finally:
        pool.close()
        server.close()
    return stats


def _head(method: str = "GET", path: str = "/x", extra: bytes = b"") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nhost: t\r\n".encode() + extra + b"\r\n"


def test_keep_alive_reuse_and_framing() -> None:
    async def handler(reader, writer, _n) -> None:
        while True:
            head, body = await _read_request(reader)
            if head.startswith(b"GET /chunked"):
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: %d\r\nx-a: 1\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    async def test(pool: Pool, stats) -> None:
        for i in range(5):
            status, headers, body = await pool.request(
                "POST", _head("POST", extra=b"content-length: 2\r\n"), b"%02d" % i, 2
            )
            assert status == 201 and body == b"%02d" % i and (b"x-a", b"1") in headers
        status, _, body = await pool.request("GET", _head(path="/chunked"), b"", 2)
        assert status == 200 and body == b"abcde"
        assert stats["connections"] == 1

    asyncio.run(_with_server(handler, test))


def test_close_delimited_body() -> None:
    async def handler(reader, writer, _n) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil-eof")
        await writer.drain()

    async def test(pool: Pool, _stats) -> None:
        status, _, body = await pool.request("GET", _head(), b"", 2)
        assert status == 200 and body == b"until-eof"

    asyncio.run(_with_server(handler, test))


def test_unsolicited_response_never_reaches_the_next_request() -> None:
    """A service that sends a second response in the same packet (nobody asked for it):
    the first is delivered untouched and the connection is dropped, so that the extra
    bytes can never be taken for the answer to the next request on that connection."""

    async def handler(reader, writer, n) -> None:
        while True:
            head, _ = await _read_request(reader)
            if b"/first" in head:
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-for: first\r\n\r\nfirst"
                    b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nx-for: stolen\r\n\r\nsto"  # and the rest later
                )
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\nconn-%d" % (len(b"conn-%d" % n), n))
            await writer.drain()

    async def test(pool: Pool, stats) -> None:
        status, headers, body = await pool.request("GET", _head(path="/first"), b"", 2)
        assert (status, body) == (200, b"first") and headers == [(b"content-length", b"5"), (b"x-for", b"first")]
        status, _, body = await pool.request("GET", _head(path="/second"), b"", 2)
        assert (status, body) == (200, b"conn-2")  # its own answer, on a new connection
        assert stats["connections"] == 2

    asyncio.run(_with_server(handler, test))


def test_interim_responses_are_skipped() -> None:
    async def handler(reader, writer, _n) -> None:
        while True:
            await _read_request(reader)
            writer.write(
                b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n"
                b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"
            )
            await writer.drain()

    async def test(pool: Pool, stats) -> None:
        for _ in range(2):
            status, headers, body = await pool.request("GET", _head(), b"", 2)
            assert (status, body, headers) == (201, b"ok", [(b"content-length", b"2")])
        assert stats["connections"] == 1  # kept alive

    asyncio.run(_with_server(handler, test))


def test_stale_connection_retried_for_get_only() -> None:
    async def handler(reader, writer, n) -> None:
        # First connection answers once then closes silently after the next request arrives.
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        if n == 1:
            await _read_request(reader)
            return  # closes without answering
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async def test_get(pool: Pool, stats) -> None:
        assert (await pool.request("GET", _head(), b"", 2))[0] == 200
        assert (await pool.request("GET", _head(), b"", 2))[0] == 200  # retried on a new connection
        assert stats["connections"] == 2

    asyncio.run(_with_server(handler, test_get))

    async def test_post(pool: Pool, _stats) -> None:
        assert (await pool.request("GET", _head(), b"", 2))[0] == 200
        with pytest.raises(UpstreamError) as ei:  # a POST may have been processed: never replayed
            await pool.request("POST", _head("POST", extra=b"content-length: 1\r\n"), b"x", 2)
        assert ei.value.kind == "protocol"

    asyncio.run(_with_server(handler, test_post))


def test_each_request_has_its_own_deadline_and_an_idle_pool_sweeps_nothing() -> None:
    """Time limits are deadlines checked by the pool's sweep: a request past its own limit
    fails (never before it), one with a longer limit on the same pool is still answered,
    and once nothing is in flight no sweep stays scheduled (an idle proxy never wakes)."""
    release = asyncio.Event()

    async def handler(reader, writer, _n) -> None:
        await _read_request(reader)
        await release.wait()  # answers only once the short request has timed out
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.5)

    async def test(pool: Pool, _stats) -> None:
        loop = asyncio.get_running_loop()
        long = asyncio.create_task(pool.request("GET", _head(path="/long"), b"", 30))
        t0 = loop.time()
        with pytest.raises(UpstreamError) as ei:
            await pool.request("GET", _head(path="/short"), b"", 0.2)
        assert ei.value.kind == "timeout" and loop.time() - t0 >= 0.2
        assert not long.done()  # its own deadline is 30 s away
        release.set()
        status, _, body = await long
        assert (status, body) == (200, b"ok")
        assert not pool._in_flight
        # The sweep already scheduled runs once more, finds nothing and is not renewed (its
        # deadline comes before this sleep's: the loop runs it first, whatever the load).
        await asyncio.sleep(2 * SWEEP_INTERVAL)
        assert pool._sweep is None

    asyncio.run(_with_server(handler, test))


def test_timeout_refused_oversize_garbage() -> None:
    async def handler(reader, writer, n) -> None:
        head, _ = await _read_request(reader)
        if b"/slow" in head:
            await asyncio.sleep(60)  # never answers in time: only the pool's deadline sweep can end the request
        elif b"/big" in head:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000)
        else:
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    async def test(pool: Pool, _stats) -> None:
        with pytest.raises(UpstreamError) as ei:
            await pool.request("GET", _head(path="/slow"), b"", 0.3)
        assert ei.value.kind == "timeout"
        with pytest.raises(UpstreamError) as ei:
            await pool.request("GET", _head(path="/big"), b"", 2)
        assert ei.value.kind == "protocol"
        with pytest.raises(UpstreamError) as ei:
            await pool.request("GET", _head(path="/garbage"), b"", 2)
        assert ei.value.kind == "protocol"

    asyncio.run(_with_server(handler, test))

    async def refused() -> None:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with pytest.raises(UpstreamError) as ei:
            await Pool("127.0.0.1", port, None, None).request("GET", _head(), b"", 1)
        assert ei.value.kind == "down"

    asyncio.run(refused())


def test_pool_limit_queues_requests() -> None:
    async def handler(reader, writer, _n) -> None:
        while True:
            await _read_request(reader)
            await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()

    async def test(pool: Pool, stats) -> None:
        results = await asyncio.gather(*(pool.request("GET", _head(), b"", 5) for _ in range(12)))
        assert [r[0] for r in results] == [200] * 12
        assert stats["connections"] <= 4  # the pool limit

    asyncio.run(_with_server(handler, test))


def _now(pool: Pool, method: str, head: bytes, body: bytes, limit: float) -> asyncio.Future[Any] | None:
    """request_now's callback as a future (None when it declined)."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def done(result: Any, exc: BaseException | None) -> None:
        assert not fut.done(), "on_done called twice"
        if exc is None:
            fut.set_result(result)
        else:
            fut.set_exception(exc)

    return fut if pool.request_now(method, head, body, limit, done) else None


def test_request_now_only_on_idle_connection_and_same_rules() -> None:
    """The callback path: same answers, same single retry of an idempotent request on a
    stale connection, never a replayed POST, timeouts; None when it would have to connect."""

    async def handler(reader, writer, n) -> None:
        while True:
            head, body = await _read_request(reader)
            if b"/close" in head and n == 1:
                return  # closes the reused connection without answering
            if b"/slow" in head:
                await asyncio.sleep(5)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    async def test(pool: Pool, stats) -> None:
        assert _now(pool, "GET", _head(), b"", 2) is None  # nothing idle yet: caller connects
        assert (await pool.request("POST", _head("POST", extra=b"content-length: 2\r\n"), b"hi", 2))[2] == b"hi"
        fut = _now(pool, "POST", _head("POST", extra=b"content-length: 3\r\n"), b"abc", 2)
        assert fut is not None and (await fut)[2] == b"abc"
        assert stats["connections"] == 1
        fut = _now(pool, "GET", _head(path="/close"), b"", 2)  # stale: retried on a new connection
        assert fut is not None and (await fut)[0] == 200
        assert stats["connections"] == 2
        fut = _now(pool, "GET", _head(path="/slow"), b"", 0.3)
        assert fut is not None
        with pytest.raises(UpstreamError) as ei:
            await fut
        assert ei.value.kind == "timeout"
        assert pool._busy == 0  # every path gave its slot back

    asyncio.run(_with_server(handler, test))

    async def handler_post(reader, writer, n) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        if n == 1:
            await _read_request(reader)  # then closes without answering

    async def test_post(pool: Pool, stats) -> None:
        assert (await pool.request("GET", _head(), b"", 2))[0] == 200
        fut = _now(pool, "POST", _head("POST", extra=b"content-length: 1\r\n"), b"x", 2)
        assert fut is not None
        with pytest.raises(UpstreamError) as ei:  # a POST may have been processed: never replayed
            await fut
        assert ei.value.kind == "protocol" and stats["connections"] == 1
        assert pool._busy == 0

    asyncio.run(_with_server(handler_post, test_post))
