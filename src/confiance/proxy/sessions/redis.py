"""Sessions in Redis: several proxy instances on several hosts serve the same sessions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from confiance.core.logs import Incident, redact_url

from ..domain import Session
from .base import SessionStore, StoreUnavailable, copy_session
from .cache import SessionCache
from .codec import SessionCodec

# Redis layout (prefix p): {p}s:{sid} hash {v: version, t: last_used_at, d: JSON};
# {p}exp zset sid -> expiry; {p}l:{name} lease; {p}p:{key} pending; {p}inval the
# invalidation channel ("sid" when deleted, "sid version" when saved: sessions/cache.py).
# A touch only moves the last-seen time forward: workers write theirs back in batches.
_SAVE_LUA = """
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
redis.call('PUBLISH', KEYS[3], ARGV[6] .. ' ' .. ARGV[2])
return 1
"""
_CREATE_LUA = """
redis.call('HSET', KEYS[1], 'v', ARGV[1], 't', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
return 1
"""
_DELETE_LUA = """
local d = redis.call('HGET', KEYS[1], 'd')
if not d then return false end
local t = redis.call('HGET', KEYS[1], 't')
local v = redis.call('HGET', KEYS[1], 'v')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[1])
return {d, t, v}
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_TOUCH_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local t = redis.call('HGET', KEYS[1], 't')
if t and tonumber(t) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 't', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


class RedisStore(SessionStore):
    """Sessions in Redis: several proxy instances serve the same sessions.

    Keys outlive the session by ``grace`` seconds so the sweeper can still revoke the
    tokens of an expired session. Each worker keeps the sessions it serves decoded in a
    :class:`SessionCache` (sessions/cache.py): a /send with a cached session reads nothing
    from Redis (:attr:`get_now`), deletes and saves reach every worker through the
    invalidation channel, and last-seen times are written back every ``sync_interval``.
    """

    def __init__(
        self,
        url: str,
        touch_interval: float = 5.0,
        prefix: str = "confiance:proxy:",
        grace: float = 3600,
        codec: SessionCodec | None = None,
        cache_max_age: float = 5.0,
        sync_interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        """``cache_max_age``: how long a cached session is served before it is checked
        against Redis again (0: never served from the cache); ``sync_interval``: how often
        last-seen times are written back and the invalidation channel is pinged."""
        self.codec = codec or SessionCodec()
        import redis.asyncio as aioredis

        self.url = url
        self.r = aioredis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=10, decode_responses=False
        )
        self.p = prefix
        self.channel = f"{prefix}inval"
        # Named so an operator (CLIENT LIST) sees which connections follow the channel.
        self.subscriber_name = f"confiance-proxy-inval-{secrets.token_hex(4)}"
        self.grace = grace
        self.touch_interval = touch_interval
        self.sync_interval = sync_interval
        self.cache = SessionCache(cache_max_age, touch_interval, monotonic)
        # The hot path (relay.py): the cached session if it may be served without a read.
        self.get_now: Callable[[str], Session | None] = self.cache.fresh
        self._tasks: list[asyncio.Task[None]] = []
        self._save = self.r.register_script(_SAVE_LUA)
        self._create = self.r.register_script(_CREATE_LUA)
        self._delete = self.r.register_script(_DELETE_LUA)
        self._release = self.r.register_script(_RELEASE_LUA)
        self._touch = self.r.register_script(_TOUCH_LUA)
        # ops: an unreachable Redis is logged once, and its recovery (core/logs.py)
        logger = logging.getLogger("confiance.proxy.sessions")
        self.incident = Incident("redis", redact_url(url), logger)
        self.channel_incident = Incident("redis invalidation channel", redact_url(url), logger)

    def _k(self, sid: str) -> str:
        return f"{self.p}s:{sid}"

    async def _call(self, coro: Any) -> Any:
        import redis.exceptions as rex

        try:
            result = await coro
        except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
            self.incident.failed(exc)
            raise StoreUnavailable(f"Redis injoignable: {type(exc).__name__}") from exc
        except rex.ResponseError as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc
        self.incident.ok()
        return result

    # -- the worker's background tasks, started by its first read
    def _start(self) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        # The write-back runs even without serving from the cache (cache_max_age = 0): the
        # relay marks uses on the copies the store returns.
        self._tasks = [loop.create_task(self._sync_loop(), name="session-touches")]
        if self.cache.max_age > 0:
            self._tasks.append(loop.create_task(self._listen(), name="session-invalidations"))

    async def _listen(self) -> None:
        """Follow the invalidation channel; the cache is blind whenever it is not subscribed.

        A dedicated connection without retries: a reconnect done silently by the client
        would hide the messages lost meanwhile. Silence is checked with a PING every
        ``sync_interval``: two silent intervals and the connection is taken as dead."""
        import redis.asyncio as aioredis
        import redis.exceptions as rex
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        delay = 0.1
        while True:
            sub = aioredis.Redis.from_url(
                self.url,
                socket_timeout=5.0,
                socket_connect_timeout=2.0,
                retry=Retry(NoBackoff(), 0),
                client_name=self.subscriber_name,
            )
            ps = sub.pubsub()
            try:
                await ps.subscribe(self.channel)
                pinged = False
                while True:
                    msg = await ps.get_message(timeout=self.sync_interval)
                    if msg is None:
                        if pinged:
                            raise rex.TimeoutError("no answer on the invalidation channel")
                        await ps.ping()
                        pinged = True
                        continue
                    pinged = False
                    if self._on_message(msg):
                        delay = 0.1
            except asyncio.CancelledError:
                raise
            except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
                self.incident.failed(exc)  # Redis itself: one incident with the store's calls
            except Exception as exc:  # e.g. SUBSCRIBE refused by an ACL: blind, then retry
                self.channel_incident.failed(exc)
            finally:
                self.cache.blind()
                with contextlib.suppress(Exception):
                    await ps.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await sub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _on_message(self, msg: dict[str, Any]) -> bool:
        kind = msg.get("type")
        if kind == "subscribe":
            self.cache.sighted()
            self.channel_incident.ok()
            self.incident.ok()
            return True
        if kind == "message":
            sid, _, version = bytes(msg["data"]).decode("ascii", "replace").partition(" ")
            self.cache.invalidate(sid, int(version) if version.isdigit() else None)
        return False

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval)
            with contextlib.suppress(StoreUnavailable):
                await self.flush()

    async def flush(self) -> int:
        """Write back the last-seen times due (one pipelined round trip); evict old copies."""
        self.cache.evict()
        due = self.cache.due_touches()
        if not due:
            return 0
        pipe = self.r.pipeline(transaction=False)
        exp = f"{self.p}exp"
        for sid, t, expires in due:
            await self._touch(keys=[self._k(sid), exp], args=[t, expires, sid], client=pipe)  # queued
        try:
            await self._call(pipe.execute())
        except StoreUnavailable:
            self.cache.requeue(due)
            raise
        return len(due)

    # -- the store
    async def get(self, sid: str) -> Session | None:
        self._start()
        seq = self.cache.seq
        k = self._k(sid)
        if self.cache.known(sid):
            v, t = await self._call(self.r.hmget(k, ["v", "t"]))
            d = None
        else:
            v, t, d = await self._call(self.r.hmget(k, ["v", "t", "d"]))
        if v is None:
            self.cache.drop(sid)
            return None
        version = int(v)
        s = self.cache.decoded(sid, version)
        if s is None:
            if d is None:
                d = await self._call(self.r.hget(k, "d"))
                if d is None:
                    return None
            s = self.codec.load(d, sid)
            s.version = version
        written = float(t) if t is not None else s.last_used_at
        s.last_used_at = max(s.last_used_at, written)
        self.cache.remember(sid, version, s, written, seq)
        return s

    def _pxat(self, s: Session) -> int:
        return int((s.absolute_expires_at + self.grace) * 1000)

    async def create(self, session: Session) -> None:
        await self._call(
            self._create(
                keys=[self._k(session.id), f"{self.p}exp"],
                args=[
                    session.version,
                    session.last_used_at,
                    self.codec.dump(session),
                    self._pxat(session),
                    session.expires_at(),
                    session.id,
                ],
            )
        )

    async def save(self, session: Session, expected_version: int) -> bool:
        new = copy_session(session)
        new.version = expected_version + 1
        seq = self.cache.seq
        ok = await self._call(
            self._save(
                keys=[self._k(session.id), f"{self.p}exp", self.channel],
                args=[
                    str(expected_version),
                    str(expected_version + 1),
                    self.codec.dump(new),
                    self._pxat(session),
                    session.expires_at(),
                    session.id,
                ],
            )
        )
        if ok:
            session.version = expected_version + 1
            # This worker serves the new tokens at once; the others drop their copy when
            # the message published by the script reaches them.
            self.cache.remember(session.id, new.version, new, float("-inf"), seq)
        return bool(ok)

    async def touch(self, session: Session, now: float) -> None:
        if now - session.last_used_at < self.touch_interval:
            return
        session.last_used_at = now
        await self._call(
            self._touch(keys=[self._k(session.id), f"{self.p}exp"], args=[now, session.expires_at(), session.id])
        )
        self.cache.wrote_touch(session.id, now)

    async def delete(self, sid: str) -> Session | None:
        self.cache.drop(sid)
        res = await self._call(self._delete(keys=[self._k(sid), f"{self.p}exp", self.channel], args=[sid]))
        self.cache.drop(sid)
        if not res:
            return None
        s = self.codec.load(res[0], sid)
        if res[1] is not None:
            s.last_used_at = max(s.last_used_at, float(res[1]))
        return s

    async def expired(self, now: float, limit: int = 100) -> list[str]:
        ids = await self._call(self.r.zrangebyscore(f"{self.p}exp", "-inf", now, start=0, num=limit))
        return [i.decode() for i in ids]

    async def count(self) -> int:
        return int(await self._call(self.r.zcard(f"{self.p}exp")))

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        return bool(await self._call(self.r.set(f"{self.p}l:{name}", owner, nx=True, px=int(ttl * 1000))))

    async def release(self, name: str, owner: str) -> None:
        await self._call(self._release(keys=[f"{self.p}l:{name}"], args=[owner]))

    async def put_pending(self, key: str, data: dict[str, Any], ttl: float) -> None:
        await self._call(self.r.set(f"{self.p}p:{key}", json.dumps(data), px=int(ttl * 1000)))

    async def pop_pending(self, key: str) -> dict[str, Any] | None:
        raw = await self._call(self.r.getdel(f"{self.p}p:{key}"))
        if raw is None:
            return None
        data: dict[str, Any] = json.loads(raw)
        return data

    async def ping(self) -> None:
        await self._call(self.r.ping())

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        with contextlib.suppress(StoreUnavailable):
            await self.flush()  # the last uses of this worker
        await self.r.aclose()
