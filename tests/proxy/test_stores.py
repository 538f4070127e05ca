"""Session stores (memory, SQLite, Redis) behave alike; Redis scale-out and fail-closed; PostgreSQL traces."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import time
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest

from confiance.proxy.domain import ApiToken, Session, new_session
from confiance.proxy.sessions import MemoryStore, RedisStore, SessionStore, SqliteStore, StoreUnavailable
from confiance.proxy.traces import TraceStore
from confiance.proxy.tracewriter import TraceWriter
from tests.fixtures_psc import PscHandle
from tests.proxy.harness import ManualClock, RunningProxy, connect_body, proxy_config, start_proxy

TOKENS = {"access_token": "at", "expires_in": 120, "refresh_token": "rt", "id_token": "idt", "session_state": "ss"}


def _session(nid: str = "810000000001", client: str = "lps") -> Session:
    return new_session(
        client_id=client, national_id=nid, tokens=TOKENS, now=time.time(), absolute_ttl=100, idle_ttl=50, dn=None
    )


async def _contract(store: SessionStore) -> None:
    s = _session()
    await store.create(s)
    second = _session()  # the same professional and LPS, another workstation
    await store.create(second)
    got = await store.get(s.id)
    assert got is not None and got.national_id == s.national_id
    other = await store.get(second.id)
    assert other is not None and other.id != s.id and other.national_id == s.national_id  # several sessions
    # Compare-and-set: a stale copy never overwrites a newer one (rotated refresh tokens).
    a = Session.from_dict(got.to_dict())
    b = Session.from_dict(got.to_dict())
    a.psc_refresh_token = "rt2"
    a.api_tokens["svc"] = ApiToken("api", time.time() + 100)
    assert await store.save(a, got.version)
    b.psc_refresh_token = "stale"
    assert not await store.save(b, got.version)
    fresh = await store.get(s.id)
    assert fresh is not None and fresh.psc_refresh_token == "rt2" and fresh.api_tokens["svc"].access_token == "api"
    # Leases: one holder at a time, released by its owner only.
    assert await store.acquire("refresh:x", "me", 5)
    assert not await store.acquire("refresh:x", "you", 5)
    await store.release("refresh:x", "you")
    assert not await store.acquire("refresh:x", "you", 5)
    await store.release("refresh:x", "me")
    assert await store.acquire("refresh:x", "you", 0.2)
    await asyncio.sleep(0.3)
    assert await store.acquire("refresh:x", "me", 5)  # expired lease (crashed holder)
    # Pending authorization requests are single-use.
    await store.put_pending("st", {"a": 1}, 10)
    assert await store.pop_pending("st") == {"a": 1}
    assert await store.pop_pending("st") is None
    # Expiry index and deletion (only one deleter wins).
    assert s.id not in await store.expired(time.time())
    assert s.id in await store.expired(time.time() + 60)
    assert await store.count() >= 1
    assert (await store.delete(s.id)) is not None
    assert await store.delete(s.id) is None
    assert await store.get(s.id) is None
    assert await store.get(second.id) is not None  # ending one session leaves the other
    await store.close()


def test_memory_store() -> None:
    asyncio.run(_contract(MemoryStore()))


def test_sqlite_store(tmp_path: Path) -> None:
    asyncio.run(_contract(SqliteStore(f"sqlite:///{tmp_path}/s.db")))


def test_sqlite_store_survives_restart(tmp_path: Path) -> None:
    async def run() -> None:
        s = _session()
        st = SqliteStore(f"sqlite:///{tmp_path}/s.db")
        await st.create(s)
        await st.close()
        st2 = SqliteStore(f"sqlite:///{tmp_path}/s.db")
        assert (await st2.get(s.id)) is not None
        await st2.close()

    asyncio.run(run())


def test_sqlite_store_from_one_session_per_user_keeps_sessions(tmp_path: Path) -> None:
    """A file made when ``user_key`` was UNIQUE is rebuilt without it, sessions kept."""
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/old.db"
    old = sa.MetaData()
    sa.Table(
        "proxy_sessions",
        old,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_key", sa.String(300), nullable=False, unique=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_used_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False, index=True),
        sa.Column("data", sa.Text, nullable=False),
    )
    engine = sa.create_engine(url)
    old.create_all(engine)
    s = _session()
    with engine.begin() as c:
        c.execute(
            sa.text("INSERT INTO proxy_sessions VALUES (:id, :k, 0, :t, :e, :d)"),
            {
                "id": s.id,
                "k": f"lps\x1f{s.national_id}",
                "t": s.last_used_at,
                "e": s.expires_at(),
                "d": json.dumps(s.to_dict()),
            },
        )
    engine.dispose()

    async def run() -> None:
        st = SqliteStore(url)
        assert (await st.get(s.id)) is not None  # kept
        await st.create(_session())  # same professional and LPS: no longer refused
        assert await st.count() == 2
        assert s.id in await st.expired(time.time() + 60)  # the expiry index is back
        await st.close()

    asyncio.run(run())


@pytest.mark.redis
def test_redis_store(redis_url: str) -> None:
    asyncio.run(_contract(RedisStore(redis_url, prefix=f"t:{secrets.token_hex(4)}:")))


class TcpRelay:
    """A cuttable TCP path to Redis: simulates Redis being lost and coming back."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self.lsock: socket.socket | None = None

    def start(self) -> None:
        self._stop.clear()
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        ls.settimeout(0.1)
        self.lsock = ls
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        assert self.lsock is not None
        while not self._stop.is_set():
            try:
                c, _ = self.lsock.accept()
            except (TimeoutError, OSError):
                continue
            u = socket.create_connection(("127.0.0.1", self.target))
            self._socks += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._stop.set()
        if self.lsock is not None:
            self.lsock.close()
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
        self._socks.clear()
        time.sleep(0.2)


def _redis_proxy(  # type: ignore[no-untyped-def]
    pki, server_cert, psc, api, tmp, url: str, prefix: str, clock: ManualClock | None = None, **sessions
) -> RunningProxy:
    """A proxy on the real Redis under ``prefix`` (several share it: workers, instances)."""
    cfg = proxy_config(
        pki,
        server_cert,
        psc,
        api,
        tmp,
        sessions={"store": "redis", "url": url, "redis_prefix": prefix, "touch_interval": 0, **sessions},
    )
    return start_proxy(cfg, pki, clock=clock)


def _wait_for(cond: Any, what: str = "condition") -> None:
    """Wait for ``cond`` from the test thread (a failure bound, not a margin the test relies on)."""
    for _ in range(2000):
        if cond():
            return
        time.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def _sign(c: Any, psc: PscHandle, nid: str, conn: dict[str, str]) -> int:
    body = {
        "nationalId": nid,
        "clientID": psc.mtls_client_id,
        "proxy_session_id": conn["proxy_session_id"],
        "session_state": conn["session_state"],
    }
    return int(c.post("/send/signsessiondata/signsessiondata", json=body).status_code)


@pytest.mark.redis
def test_two_instances_share_sessions(pki, server_cert, psc_sandbox, api_services, redis_url, tmp_path) -> None:
    prefix = f"t:{secrets.token_hex(4)}:"
    a = _redis_proxy(pki, server_cert, psc_sandbox, api_services, tmp_path, redis_url, prefix)
    b = _redis_proxy(pki, server_cert, psc_sandbox, api_services, tmp_path, redis_url, prefix)
    try:
        nid = psc_sandbox.identities[14]["national_id"]
        with a.client() as ca, b.client() as cb:
            conn = ca.post("/connect", json=connect_body(psc_sandbox, nid)).json()
            # The other instance knows the session (304 for its cookie) and serves it.
            cb.cookies.set("proxy_session_id", conn["proxy_session_id"])
            assert cb.post("/connect", json=connect_body(psc_sandbox, nid)).status_code == 304
            assert _sign(cb, psc_sandbox, nid, conn) == 200
            assert _sign(ca, psc_sandbox, nid, conn) == 200
            assert cb.delete("/disconnect").status_code == 200
            # a hears of it on the invalidation channel (test_session_cache.py)
            _wait_for(lambda: not a.core.store.cache.known(conn["proxy_session_id"]))  # type: ignore[attr-defined]
            assert _sign(ca, psc_sandbox, nid, conn) == 401
    finally:
        a.stop()
        b.stop()


@pytest.mark.redis
def test_redis_lost_fails_closed_and_recovers(pki, server_cert, psc_sandbox, api_services, redis_url, tmp_path) -> None:
    from urllib.parse import urlparse

    relay = TcpRelay(urlparse(redis_url).port or 6379)
    relay.start()
    prefix = f"t:{secrets.token_hex(4)}:"
    db = urlparse(redis_url).path or "/0"
    p = _redis_proxy(
        pki, server_cert, psc_sandbox, api_services, tmp_path, f"redis://127.0.0.1:{relay.port}{db}", prefix
    )
    try:
        nid = psc_sandbox.identities[15]["national_id"]
        with closing(p.client()) as c:
            conn = c.post("/connect", json=connect_body(psc_sandbox, nid)).json()
            ok_before = sum(_sign(c, psc_sandbox, nid, conn) == 200 for _ in range(5))
            assert ok_before == 5
            relay.cut()
            _wait_for(lambda: not p.core.store.cache.live)  # type: ignore[attr-defined]  # stops serving its cache
            during = [_sign(c, psc_sandbox, nid, conn) for _ in range(5)]
            assert during == [503] * 5  # fail closed: never served without its session
            assert c.get("/readyz").status_code == 503
            relay.start()
            deadline = time.time() + 10
            after = 0
            while time.time() < deadline:
                after = _sign(c, psc_sandbox, nid, conn)
                if after == 200:
                    break
                time.sleep(0.2)
            assert after == 200
            assert c.get("/readyz").status_code == 200
        sends = [t for t in p.traces() if t.get("proxy_id_session") == conn["proxy_session_id"] and t["type"] == "SEND"]
        assert len(sends) == 6  # every relayed request has its trace, none lost
    finally:
        p.stop()
        relay.cut()


@pytest.mark.postgres
def test_traces_on_postgres(postgres_schema_url: str) -> None:
    store = TraceStore(postgres_schema_url)

    async def run() -> None:
        w = TraceWriter(store, flush_interval=0.01)
        w.start()
        for i in range(200):
            w.submit({"type": "SEND", "i": i}, 1000.0 + i)
        await w.write({"type": "DISCONNECT"}, 5000.0)
        await w.close()

    asyncio.run(run())
    check = store.verify()
    assert check.ok and check.checked == 201
    assert len(store.query(1000.0, 1099.0)) == 100
    store.close()


def test_trace_writer_keeps_batch_while_db_down(tmp_path: Path) -> None:
    """A failed batch is retried, not dropped: the DB coming back gets every trace."""
    store = TraceStore(f"sqlite:///{tmp_path}/t.db")
    real = store.append
    fails = {"n": 3}

    def flaky(items: list[tuple[float, dict[str, Any]]]) -> None:
        if fails["n"] > 0:
            fails["n"] -= 1
            raise OSError("disque indisponible")
        real(items)

    store.append = flaky  # type: ignore[method-assign]

    async def run() -> None:
        w = TraceWriter(store, flush_interval=0.01)
        w.start()
        for i in range(20):
            w.submit({"type": "SEND", "i": i}, 1000.0 + i)
        await w.write({"type": "DISCONNECT"}, 2000.0)
        await w.close()

    asyncio.run(run())
    assert store.verify().checked == 21


def test_trace_queue_bound(tmp_path: Path) -> None:
    from confiance.proxy.traces import TraceQueueFull

    async def run() -> None:
        w = TraceWriter(TraceStore(f"sqlite:///{tmp_path}/t.db"), queue_max=2)
        w.submit({"type": "SEND"})
        w.submit({"type": "SEND"})
        assert w.full()
        with pytest.raises(TraceQueueFull):
            w.submit({"type": "SEND"})
        w.submit({"type": "SEND"}, force=True)  # already relayed: kept
        assert w.pending() == 3

    asyncio.run(run())


def _key() -> str:
    import base64
    import os

    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_tokens_encrypted_at_rest(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from confiance.proxy.sessions import SessionCodec

    key = _key()
    s = _session()
    s.psc_refresh_token = "REFRESH-SECRET-" + secrets.token_hex(8)

    async def run() -> None:
        if kind == "sqlite":
            store: Any = SqliteStore(f"sqlite:///{tmp_path}/s.db", codec=SessionCodec(key))
        else:
            redis_url = request.getfixturevalue("redis_url")
            store = RedisStore(redis_url, prefix=f"t:{secrets.token_hex(4)}:", codec=SessionCodec(key))
        await store.create(s)
        if kind == "sqlite":
            raw = Path(f"{tmp_path}/s.db").read_bytes() + (
                Path(f"{tmp_path}/s.db-wal").read_bytes() if Path(f"{tmp_path}/s.db-wal").exists() else b""
            )
        else:
            raw = await store.r.hget(store._k(s.id), "d")
        assert s.psc_refresh_token.encode() not in raw
        got = await store.get(s.id)
        assert got is not None and got.psc_refresh_token == s.psc_refresh_token
        # Another key cannot read it (fails closed, as an unreachable store would).
        if kind == "sqlite":
            other: Any = SqliteStore(f"sqlite:///{tmp_path}/s.db", codec=SessionCodec(_key()))
            with pytest.raises(StoreUnavailable):
                await other.get(s.id)
        await store.close()

    asyncio.run(run())


def test_trace_query_filters_inside_blocks(tmp_path: Path) -> None:
    """Blocks straddling the requested window give back only the traces inside it, in order."""
    store = TraceStore(f"sqlite:///{tmp_path}/t.db")
    store.append([(1000.0 + i, {"type": "SEND", "i": i}) for i in range(10)])
    store.append([(1010.0 + i, {"type": "SEND", "i": 10 + i}) for i in range(10)])
    assert [r["i"] for r in store.query(1003.0, 1005.0)] == [3, 4, 5]
    assert [r["i"] for r in store.query(1008.0, 1011.5)] == [8, 9, 10, 11]
    assert [r["i"] for r in store.query(1015.0, None)] == [15, 16, 17, 18, 19]
    assert [r["i"] for r in store.query(0.0, None, limit=3)] == [0, 1, 2]
    assert store.query(2000.0, None) == []
    check = store.verify()
    assert check.ok and check.checked == 20
    store.close()


def test_trace_blocks_keep_any_text_and_the_keeper_frame_round_trips(tmp_path: Path) -> None:
    """Blocks are UTF-8 JSON hashed as stored: accents and non-JSON values (as text) read
    back and verify; the frame the proxy sends its keeper carries the same block."""
    from confiance.proxy.traces import Block

    store = TraceStore(f"sqlite:///{tmp_path}/t.db")
    rec = {
        "type": "CONNECT",
        "dn": "CN=Hôpital Sainte-Élise,O=Établissement",
        "z": 1,
        "a": [1.5, None],
        "when": tmp_path,
    }
    block = Block.of([(1000.0, rec), (999.5, {"type": "SEND"})])
    assert (block.count, block.ts_min, block.ts_max) == (2, 999.5, 1000.0)
    frame = block.framed()
    size, count, ts_min, ts_max = Block.HEADER.unpack(frame[: Block.HEADER.size])
    assert frame[Block.HEADER.size :] == block.body and (size, count, ts_min, ts_max) == (
        len(block.body),
        2,
        999.5,
        1000.0,
    )
    store.append_block(Block(frame[Block.HEADER.size :], count, ts_min, ts_max))
    assert store.query(0.0, None) == [{**rec, "when": str(tmp_path)}, {"type": "SEND"}]
    check = store.verify()
    assert check.ok and check.checked == 2
    store.close()


def test_trace_keeper_started_with_the_writer(tmp_path: Path) -> None:
    """The keeper runs before the first trace: a CONNECT must not wait for it to start."""
    from confiance.proxy.tracewriter import KeeperAppender

    url = f"sqlite:///{tmp_path}/t.db"
    keeper = KeeperAppender(url)

    async def run() -> None:
        w = TraceWriter(TraceStore(url), appender=keeper)
        w.start()
        for _ in range(500):
            if keeper.pid is not None:
                break
            await asyncio.sleep(0.01)
        assert keeper.pid is not None and w.pending() == 0 and w.written == 0
        await w.close()

    asyncio.run(run())
    assert keeper.pid is None


def test_trace_keeper_restarted_when_it_dies(tmp_path: Path) -> None:
    """The keeper process killed between batches: the next batch starts a new one, none lost."""
    import os
    import signal

    from confiance.proxy.tracewriter import KeeperAppender

    url = f"sqlite:///{tmp_path}/t.db"
    store = TraceStore(url)
    keeper = KeeperAppender(url)
    pids = []

    async def run() -> None:
        w = TraceWriter(store, flush_interval=0.01, appender=keeper)
        w.start()
        await w.write({"type": "DISCONNECT", "i": 0}, 1000.0)
        pids.append(keeper.pid)
        assert keeper.pid is not None
        os.kill(keeper.pid, signal.SIGKILL)
        await asyncio.sleep(0.2)
        for i in range(1, 50):
            w.submit({"type": "SEND", "i": i}, 1000.0 + i)
        await w.write({"type": "DISCONNECT", "i": 50}, 1050.0)
        pids.append(keeper.pid)
        await w.close()

    asyncio.run(run())
    assert pids[0] != pids[1] and pids[1] is not None
    assert keeper.pid is None  # closed with the writer
    check = store.verify()
    assert check.ok and check.checked == 51
    assert [r["i"] for r in store.query(0, None)] == list(range(51))
    store.close()


@pytest.mark.postgres
def test_trace_keeper_reports_database_errors(postgres_schema_url: str) -> None:
    """A commit that fails in the keeper is reported; the writer keeps the batch and retries."""
    import sqlalchemy as sa

    from confiance.proxy.tracewriter import KeeperAppender

    store = TraceStore(postgres_schema_url)
    keeper = KeeperAppender(postgres_schema_url)

    async def run() -> None:
        await keeper([(1.0, {"type": "SEND", "i": 0})])
        with store.engine.begin() as c:  # the database loses the table under the keeper
            c.execute(sa.text("ALTER TABLE proxy_trace_blocks RENAME TO hidden_blocks"))
        with pytest.raises(OSError, match=r"proxy_trace_blocks"):
            await keeper([(2.0, {"type": "SEND", "i": 1})])
        w = TraceWriter(store, flush_interval=0.01, appender=keeper)
        w.start()
        w.submit({"type": "SEND", "i": 1}, 2.0)
        await asyncio.sleep(0.3)  # failing and retrying meanwhile
        assert w.pending() == 1 and w.failures > 0
        with store.engine.begin() as c:
            c.execute(sa.text("ALTER TABLE hidden_blocks RENAME TO proxy_trace_blocks"))
        await w.write({"type": "DISCONNECT", "i": 2}, 3.0)
        await w.close()

    asyncio.run(run())
    assert [r["i"] for r in store.query(0, None)] == [0, 1, 2]
    assert store.verify().ok
    store.close()


def test_trace_flush_covers_batches_in_flight_and_queued(tmp_path: Path) -> None:
    """flush() returns once every trace queued before it is committed — including a trace
    of a batch already being written — without waiting for the batch timer."""
    store = TraceStore(f"sqlite:///{tmp_path}/t.db")

    async def slow_append(items: list[tuple[float, Any]]) -> None:
        await asyncio.sleep(0.2)
        store.append(items)

    async def run() -> None:
        w = TraceWriter(store, flush_interval=5.0, appender=slow_append)
        for i in range(5):
            w.submit({"type": "SEND", "i": i}, 1000.0 + i)
        w.start()
        await asyncio.sleep(0.05)  # the writer has taken those 5 and is writing them
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await w.flush(timeout=3.0)  # the last of them was in flight
        assert w.written == 5
        for i in range(5, 8):
            w.submit({"type": "SEND", "i": i}, 1000.0 + i)
        assert await w.flush(timeout=3.0)  # queued, not yet taken
        assert w.written == 8 and loop.time() - t0 < 2.0
        assert await w.flush(timeout=0.01)  # nothing queued
        await w.close()

    asyncio.run(run())
    assert store.verify().checked == 8
