"""The per-worker session cache (sessions/cache.py) and the Redis store around it.

The cache's rules are driven with a fake clock; the store's propagation runs two stores
(two workers or two instances: nothing distinguishes them but their connections) on the
real Redis. Waits are on conditions with a generous failure bound, never on a delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable

import pytest

from confiance.proxy.domain import ApiToken, Session, new_session
from confiance.proxy.sessions import RedisStore
from confiance.proxy.sessions.cache import SessionCache
from tests.proxy.harness import ManualClock, connect_body
from tests.proxy.test_stores import _redis_proxy, _sign, _wait_for

TOKENS = {"access_token": "at", "expires_in": 600, "refresh_token": "rt", "id_token": "idt", "session_state": "ss"}


def _session(now: float | None = None, idle: float = 50) -> Session:
    return new_session(
        client_id="lps",
        national_id="810000000001",
        tokens=TOKENS,
        now=time.time() if now is None else now,
        absolute_ttl=1000,
        idle_ttl=idle,
        dn=None,
    )


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# -- the cache's rules, without I/O


def test_nothing_served_until_the_channel_is_subscribed() -> None:
    clock = FakeClock()
    c = SessionCache(max_age=5, touch_interval=0, clock=clock)
    s = _session()
    c.remember(s.id, 0, s, s.last_used_at, c.seq)
    assert c.fresh(s.id) is None  # blind: read before the channel was known to be live
    c.sighted()
    assert c.fresh(s.id) is None  # copies from before the subscription are checked first
    c.remember(s.id, 0, s, s.last_used_at, c.seq)
    assert c.fresh(s.id) is s
    c.blind()
    assert c.fresh(s.id) is None


def test_a_copy_is_served_for_max_age_then_checked_again() -> None:
    clock = FakeClock()
    c = SessionCache(max_age=5, touch_interval=0, clock=clock)
    c.sighted()
    s = _session()
    c.remember(s.id, 0, s, s.last_used_at, c.seq)
    clock.t += 4.9
    assert c.fresh(s.id) is s
    clock.t += 0.2
    assert c.fresh(s.id) is None
    assert c.decoded(s.id, 0) is s  # the decoded copy still spares a decode if unchanged
    assert c.decoded(s.id, 1) is None


def test_max_age_zero_serves_nothing() -> None:
    c = SessionCache(max_age=0, touch_interval=0, clock=FakeClock())
    c.sighted()
    s = _session()
    c.remember(s.id, 0, s, s.last_used_at, c.seq)
    assert c.fresh(s.id) is None


def test_invalidations_drop_older_copies_only() -> None:
    c = SessionCache(max_age=5, touch_interval=0, clock=FakeClock())
    c.sighted()
    s = _session()
    c.remember(s.id, 3, s, s.last_used_at, c.seq)
    c.invalidate(s.id, 3)  # our own save, already cached at that version
    assert c.fresh(s.id) is s
    c.invalidate(s.id, 4)  # another worker saved a newer version
    assert c.fresh(s.id) is None and not c.known(s.id)
    c.remember(s.id, 4, s, s.last_used_at, c.seq)
    c.invalidate(s.id)  # deleted elsewhere
    assert c.fresh(s.id) is None


def test_a_read_that_raced_an_invalidation_is_not_trusted() -> None:
    c = SessionCache(max_age=5, touch_interval=0, clock=FakeClock())
    c.sighted()
    s = _session()
    seq = c.seq  # the store starts reading...
    c.invalidate(s.id)  # ...the session is deleted elsewhere meanwhile...
    c.remember(s.id, 0, s, s.last_used_at, seq)  # ...and the read's answer comes back
    assert c.fresh(s.id) is None


def test_uses_are_written_back_coalesced_and_kept_when_a_write_fails() -> None:
    clock = FakeClock()
    c = SessionCache(max_age=5, touch_interval=10, clock=clock)
    c.sighted()
    s = _session(now=5000.0)
    c.remember(s.id, 0, s, 5000.0, c.seq)
    s.last_used_at = 5004.0  # the relay marks it used
    assert c.due_touches() == []  # within touch_interval of what the store holds
    s.last_used_at = 5012.0
    due = c.due_touches()
    assert due == [(s.id, 5012.0, s.expires_at())]
    assert c.due_touches() == []  # written once
    c.requeue(due)  # the write failed: tried again
    assert c.due_touches() == due
    # A copy dropped by an invalidation keeps the use it carried.
    s.last_used_at = 5030.0
    c.invalidate(s.id, 1)
    assert c.due_touches() == [(s.id, 5030.0, s.expires_at())]
    # A deleted session's uses are not written.
    c.remember(s.id, 1, s, 5030.0, c.seq)
    s.last_used_at = 5050.0
    c.drop(s.id)
    assert c.due_touches() == []


def test_old_copies_are_evicted_and_memory_is_bounded() -> None:
    clock = FakeClock()
    c = SessionCache(max_age=5, touch_interval=0, clock=clock, max_entries=2, keep=60)
    c.sighted()
    a, b, d = _session(), _session(), _session()
    c.remember(a.id, 0, a, a.last_used_at, c.seq)
    clock.t += 100
    c.remember(b.id, 0, b, b.last_used_at, c.seq)
    c.evict()
    assert not c.known(a.id) and c.known(b.id)
    c.remember(a.id, 0, a, a.last_used_at, c.seq)
    a.last_used_at += 30  # used, not yet written back
    c.remember(d.id, 0, d, d.last_used_at, c.seq)  # full of fresh copies: they go, their uses stay
    assert len(c.entries) <= 2 and c.fresh(d.id) is d
    assert [sid for sid, _, _ in c.due_touches()] == [a.id]


# -- two stores on the real Redis


async def _until(cond: Callable[[], bool], what: str) -> None:
    """Wait for ``cond`` (a failure bound only, not a margin the test relies on)."""
    for _ in range(2000):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


@contextlib.asynccontextmanager
async def _two(redis_url: str, **kw: object) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores (workers or instances) on one Redis namespace, closed on the way out.
    Their cache clock stands still unless the test moves it: only an invalidation can
    retire a cached copy."""
    prefix = f"t:{secrets.token_hex(4)}:"
    kw.setdefault("monotonic", FakeClock())
    a = RedisStore(redis_url, touch_interval=0, prefix=prefix, **kw)  # type: ignore[arg-type]
    b = RedisStore(redis_url, touch_interval=0, prefix=prefix, **kw)  # type: ignore[arg-type]
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def _cached(store: RedisStore, sid: str) -> Session:
    """Read through ``store`` until its copy is served from the cache (channel subscribed)."""
    s = await store.get(sid)
    assert s is not None
    await _until(lambda: store.cache.live, "the invalidation channel is subscribed")
    s = await store.get(sid)
    assert s is not None and store.get_now(sid) is s
    return s


@pytest.mark.redis
def test_delete_on_one_instance_is_refused_by_the_other(redis_url: str) -> None:
    async def run() -> None:
        async with _two(redis_url) as (a, b):
            s = _session()
            await a.create(s)
            await _cached(a, s.id)
            await _cached(b, s.id)
            assert await a.delete(s.id) is not None
            assert a.get_now(s.id) is None  # at once on the deleting worker
            await _until(lambda: b.get_now(s.id) is None, "the other worker drops its copy")
            assert await b.get(s.id) is None
            assert not b.cache.known(s.id)

    asyncio.run(run())


@pytest.mark.redis
def test_renewed_tokens_reach_the_other_instance(redis_url: str) -> None:
    async def run() -> None:
        async with _two(redis_url) as (a, b):
            s = _session()
            s.api_tokens["svc"] = ApiToken("old", time.time() + 600)
            await a.create(s)
            await _cached(b, s.id)
            work = await _cached(a, s.id)
            new = Session.from_dict(work.to_dict())
            new.api_tokens["svc"] = ApiToken("new", time.time() + 600)
            assert await a.save(new, work.version)
            mine = a.get_now(s.id)
            assert mine is not None and mine.api_tokens["svc"].access_token == "new"  # no read needed here
            await _until(lambda: b.get_now(s.id) is None, "the other worker drops the old tokens")
            theirs = await b.get(s.id)
            assert theirs is not None and theirs.api_tokens["svc"].access_token == "new"
            assert theirs.version == work.version + 1

    asyncio.run(run())


@pytest.mark.redis
def test_a_lost_channel_serves_nothing_stale(redis_url: str) -> None:
    """Messages published while a worker's subscription is down are lost: once back, it
    checks every copy against Redis before serving it."""
    import redis.asyncio as aioredis

    async def run() -> None:
        async with _two(redis_url) as (a, b), aioredis.Redis.from_url(redis_url) as admin:
            s = _session()
            await a.create(s)
            await _cached(b, s.id)
            seq = b.cache.seq
            clients = await admin.client_list(_type="pubsub")
            mine = [c for c in clients if c.get("name") == b.subscriber_name]
            assert len(mine) == 1
            await admin.client_kill_filter(_id=mine[0]["id"])
            assert await a.delete(s.id) is not None  # b is not listening: its message is lost
            await _until(lambda: b.cache.seq != seq and b.cache.live, "the channel is subscribed again")
            assert b.get_now(s.id) is None
            assert await b.get(s.id) is None

    asyncio.run(run())


@pytest.mark.redis
def test_a_change_behind_the_channel_is_seen_within_max_age(redis_url: str) -> None:
    """A key removed by hand (no message) is served at most ``cache_max_age`` longer."""
    import redis.asyncio as aioredis

    async def run() -> None:
        clock = FakeClock()
        async with (
            _two(redis_url, monotonic=clock, cache_max_age=5.0) as (a, b),
            aioredis.Redis.from_url(redis_url) as admin,
        ):
            s = _session()
            await a.create(s)
            await _cached(b, s.id)
            await admin.delete(b._k(s.id))
            clock.t += 4.0
            assert b.get_now(s.id) is not None  # within the documented bound
            clock.t += 1.5
            assert b.get_now(s.id) is None
            assert await b.get(s.id) is None

    asyncio.run(run())


@pytest.mark.redis
def test_idle_time_is_written_back_and_only_moves_forward(redis_url: str) -> None:
    async def run() -> None:
        async with _two(redis_url) as (a, b):
            t0 = time.time()
            s = _session(now=t0, idle=100)
            await a.create(s)
            on_a = await _cached(a, s.id)
            on_b = await _cached(b, s.id)
            on_b.last_used_at = t0 + 60  # used on b (what the relay does)
            on_a.last_used_at = t0 + 30  # used on a, earlier
            assert await b.flush() == 1  # one pipelined write-back
            assert await a.flush() == 1  # older: does not move the store's time back
            assert await b.flush() == 0  # nothing new
            assert s.id not in await a.expired(t0 + 150)  # idle deadline follows the last use
            assert s.id in await a.expired(t0 + 161)
            a.cache.blind()  # force a store read on a
            fresh = await a.get(s.id)
            assert fresh is not None and fresh.last_used_at == t0 + 60
            assert fresh.expired(t0 + 150) is None

    asyncio.run(run())


@pytest.mark.redis
def test_without_the_cache_nothing_is_served_from_it_and_uses_are_still_written(redis_url: str) -> None:
    async def run() -> None:
        async with _two(redis_url, cache_max_age=0.0) as (a, b):
            t0 = time.time()
            s = _session(now=t0, idle=100)
            await a.create(s)
            got = await b.get(s.id)
            assert got is not None and b.get_now(s.id) is None
            assert [t.get_name() for t in b._tasks] == ["session-touches"]  # no channel to follow
            got.last_used_at = t0 + 60  # the relay marks the copy the store returned
            assert await b.flush() == 1
            assert s.id not in await a.expired(t0 + 150)

    asyncio.run(run())


# -- two proxies on the real Redis, end to end


def _counting_reads(store: RedisStore) -> list[int]:
    """Count the store reads made from now on (the relay's hot path should make none)."""
    calls = [0]
    read = store.get

    async def get(sid: str) -> Session | None:
        calls[0] += 1
        return await read(sid)

    store.get = get  # type: ignore[method-assign]
    return calls


@pytest.mark.redis
def test_two_proxies_relay_from_the_cache_and_refuse_a_session_ended_on_the_other(
    pki, server_cert, psc_sandbox, api_services, redis_url, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    prefix = f"t:{secrets.token_hex(4)}:"
    a = _redis_proxy(pki, server_cert, psc_sandbox, api_services, tmp_path, redis_url, prefix)
    b = _redis_proxy(pki, server_cert, psc_sandbox, api_services, tmp_path, redis_url, prefix)
    try:
        nid = psc_sandbox.identities[14]["national_id"]
        with a.client() as ca, b.client() as cb:
            r = ca.post("/connect", json=connect_body(psc_sandbox, nid))
            assert r.status_code == 200, r.text
            conn = r.json()
            sid = conn["proxy_session_id"]
            cb.cookies.set("proxy_session_id", sid)
            assert _sign(cb, psc_sandbox, nid, conn) == 200  # read from Redis; b starts listening
            store = b.core.store
            assert isinstance(store, RedisStore)
            _wait_for(lambda: store.cache.live, "b follows the invalidation channel")
            assert _sign(cb, psc_sandbox, nid, conn) == 200  # checked once more, now cached
            reads = _counting_reads(store)
            assert [_sign(cb, psc_sandbox, nid, conn) for _ in range(5)] == [200] * 5
            assert reads[0] == 0  # no Redis read on the hot path
            assert ca.delete("/disconnect").status_code == 200
            _wait_for(lambda: not store.cache.known(sid), "b drops the session ended on a")
            assert _sign(cb, psc_sandbox, nid, conn) == 401
            assert _sign(ca, psc_sandbox, nid, conn) == 401
    finally:
        a.stop()
        b.stop()


@pytest.mark.redis
def test_idle_time_spent_on_one_proxy_keeps_the_session_alive_on_the_other(
    pki, server_cert, psc_sandbox, api_services, redis_url, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    prefix = f"t:{secrets.token_hex(4)}:"
    clock = ManualClock()
    a = _redis_proxy(pki, server_cert, psc_sandbox, api_services, tmp_path, redis_url, prefix, clock, idle_ttl=30)
    b = _redis_proxy(pki, server_cert, psc_sandbox, api_services, tmp_path, redis_url, prefix, clock, idle_ttl=30)
    try:
        nid = psc_sandbox.identities[15]["national_id"]
        with a.client() as ca, b.client() as cb:
            conn = ca.post("/connect", json=connect_body(psc_sandbox, nid)).json()
            cb.cookies.set("proxy_session_id", conn["proxy_session_id"])
            assert _sign(cb, psc_sandbox, nid, conn) == 200
            store = b.core.store
            assert isinstance(store, RedisStore)
            _wait_for(lambda: store.cache.live, "b follows the invalidation channel")
            clock.advance(20)
            assert _sign(cb, psc_sandbox, nid, conn) == 200  # used on b at +20
            loop = store._tasks[0].get_loop()
            asyncio.run_coroutine_threadsafe(store.flush(), loop).result(10)  # b's write-back, now
            clock.advance(20)
            # +40: idle for 40 s on a's side of things, but used 20 s ago on b.
            assert _sign(ca, psc_sandbox, nid, conn) == 200
            clock.advance(31)
            # +71: 31 s since the last use anywhere: over on both.
            assert _sign(cb, psc_sandbox, nid, conn) == 401
            assert _sign(ca, psc_sandbox, nid, conn) == 401
    finally:
        a.stop()
        b.stop()
