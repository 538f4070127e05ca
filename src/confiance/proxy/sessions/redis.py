"""Sessions in Redis: several proxy instances on several hosts serve the same sessions."""

from __future__ import annotations

import json
import logging
from typing import Any

from confiance.core.logs import Incident, redact_url

from ..domain import Session
from .base import SessionStore, StoreUnavailable, copy_session
from .codec import SessionCodec

# Redis layout (prefix p): {p}s:{sid} hash {v: version, t: last_used_at, d: JSON};
# {p}exp zset sid -> expiry; {p}l:{name} lease; {p}p:{key} pending.
_SAVE_LUA = """
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
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
return {d, t, v}
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_TOUCH_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 't', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""


class RedisStore(SessionStore):
    """Sessions in Redis: several proxy instances serve the same sessions.

    Keys outlive the session by ``grace`` seconds so the sweeper can still revoke the
    tokens of an expired session; a parsed-session cache keyed by version avoids decoding
    the JSON on every request (one HMGET round trip on the hot path).
    """

    def __init__(
        self,
        url: str,
        touch_interval: float = 5.0,
        prefix: str = "confiance:proxy:",
        grace: float = 3600,
        codec: SessionCodec | None = None,
    ):
        self.codec = codec or SessionCodec()
        import redis.asyncio as aioredis

        self.r = aioredis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=10, decode_responses=False
        )
        self.p = prefix
        self.grace = grace
        self.touch_interval = touch_interval
        self._cache: dict[str, tuple[bytes, Session]] = {}
        self._save = self.r.register_script(_SAVE_LUA)
        self._create = self.r.register_script(_CREATE_LUA)
        self._delete = self.r.register_script(_DELETE_LUA)
        self._release = self.r.register_script(_RELEASE_LUA)
        self._touch = self.r.register_script(_TOUCH_LUA)
        # ops: an unreachable Redis is logged once, and its recovery (core/logs.py)
        self.incident = Incident("redis", redact_url(url), logging.getLogger("confiance.proxy.sessions"))

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

    async def get(self, sid: str) -> Session | None:
        v, t = await self._call(self.r.hmget(self._k(sid), ["v", "t"]))
        if v is None:
            self._cache.pop(sid, None)
            return None
        hit = self._cache.get(sid)
        if hit is not None and hit[0] == v:
            s = hit[1]
        else:
            d = await self._call(self.r.hget(self._k(sid), "d"))
            if d is None:
                return None
            s = self.codec.load(d, sid)
            s.version = int(v)
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[sid] = (v, s)
        if t is not None:
            s.last_used_at = max(s.last_used_at, float(t))
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
        ok = await self._call(
            self._save(
                keys=[self._k(session.id), f"{self.p}exp"],
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
        return bool(ok)

    async def touch(self, session: Session, now: float) -> None:
        if now - session.last_used_at < self.touch_interval:
            return
        session.last_used_at = now
        await self._call(
            self._touch(keys=[self._k(session.id), f"{self.p}exp"], args=[now, session.expires_at(), session.id])
        )

    async def delete(self, sid: str) -> Session | None:
        res = await self._call(self._delete(keys=[self._k(sid), f"{self.p}exp"], args=[sid]))
        self._cache.pop(sid, None)
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
        await self.r.aclose()
