"""Session stores: in-process (default), SQLite (one host, several processes), Redis (scale-out).

All three implement :class:`SessionStore`. Writes that replace tokens are compare-and-set
on ``Session.version`` so a rotated refresh token is never overwritten by a stale copy;
idle-time "touches" are coalesced (``touch_interval``) so shared stores see at most one
write per session every few seconds instead of one per request. Leases (``acquire``/
``release``) serialise refreshes across proxy instances; a crashed holder's lease expires.
A store that cannot be reached raises :class:`StoreUnavailable`: the proxy then fails
closed (503), never open.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from typing import Any

import sqlalchemy as sa

from confiance.core.storage import make_engine

from .domain import Session


class SessionCodec:
    """Serialises sessions for shared stores; with a key, AES-256-GCM so that a Redis dump or
    a copied SQLite file does not hand out PSC refresh tokens and API tokens.

    The session id is bound as associated data: a blob moved under another id fails to open.
    """

    def __init__(self, key_b64: str | None = None) -> None:
        self._aead = None
        if key_b64:
            import base64

            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            key = base64.urlsafe_b64decode(key_b64 + "=" * (-len(key_b64) % 4))
            if len(key) != 32:
                raise ValueError("sessions.encryption_key: 32 octets en base64url attendus")
            self._aead = AESGCM(key)

    def dump(self, s: Session) -> str:
        raw = json.dumps(s.to_dict(), separators=(",", ":"))
        if self._aead is None:
            return raw
        import base64
        import os

        nonce = os.urandom(12)
        ct = self._aead.encrypt(nonce, raw.encode(), s.id.encode())
        return "v1." + base64.urlsafe_b64encode(nonce + ct).decode()

    def load(self, data: str | bytes, sid: str | None = None) -> Session:
        text = data.decode() if isinstance(data, bytes) else data
        if text.startswith("v1."):
            if self._aead is None:
                raise StoreUnavailable("session chiffrée mais aucune clé configurée (sessions.encryption_key)")
            import base64

            blob = base64.urlsafe_b64decode(text[3:])
            if sid is None:
                raise StoreUnavailable("identifiant de session requis pour déchiffrer")
            try:
                text = self._aead.decrypt(blob[:12], blob[12:], sid.encode()).decode()
            except Exception as exc:
                raise StoreUnavailable("session illisible (clé de chiffrement différente ?)") from exc
        return Session.from_dict(json.loads(text))


class StoreUnavailable(RuntimeError):
    """The session store cannot be reached; callers answer 503."""


class SessionStore(ABC):
    touch_interval: float = 0.0

    @abstractmethod
    async def get(self, sid: str) -> Session | None: ...

    @abstractmethod
    async def find(self, national_id: str, client_id: str) -> Session | None:
        """The session of this professional with this LPS, if any."""

    @abstractmethod
    async def create(self, session: Session) -> Session | None:
        """Insert; if that user+LPS already has a session, keep it and return it instead."""

    @abstractmethod
    async def save(self, session: Session, expected_version: int) -> bool:
        """Replace the stored session iff its version is still ``expected_version``; bumps version."""

    @abstractmethod
    async def touch(self, session: Session, now: float) -> None: ...

    @abstractmethod
    async def delete(self, sid: str) -> Session | None:
        """Remove and return the session; None when another caller removed it first."""

    @abstractmethod
    async def expired(self, now: float, limit: int = 100) -> list[str]: ...

    @abstractmethod
    async def count(self) -> int: ...

    @abstractmethod
    async def acquire(self, name: str, owner: str, ttl: float) -> bool: ...

    @abstractmethod
    async def release(self, name: str, owner: str) -> None: ...

    @abstractmethod
    async def put_pending(self, key: str, data: dict[str, Any], ttl: float) -> None: ...

    @abstractmethod
    async def pop_pending(self, key: str) -> dict[str, Any] | None: ...

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _copy(s: Session) -> Session:
    return Session.from_dict(s.to_dict())


class MemoryStore(SessionStore):
    """One process. ``get`` returns the live object (no copy on the hot path); writers work on
    copies and swap them in with ``save``, so readers never see a half-updated session."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}
        self._by_user: dict[tuple[str, str], str] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._pending: dict[str, tuple[float, dict[str, Any]]] = {}

    async def get(self, sid: str) -> Session | None:
        return self._by_id.get(sid)

    def get_now(self, sid: str) -> Session | None:
        """Synchronous lookup for the hot path (no await, no task switch)."""
        return self._by_id.get(sid)

    async def find(self, national_id: str, client_id: str) -> Session | None:
        sid = self._by_user.get((national_id, client_id))
        return self._by_id.get(sid) if sid else None

    async def create(self, session: Session) -> Session | None:
        key = (session.national_id, session.client_id)
        existing = self._by_user.get(key)
        if existing and existing in self._by_id:
            return self._by_id[existing]
        self._by_id[session.id] = session
        self._by_user[key] = session.id
        return None

    async def save(self, session: Session, expected_version: int) -> bool:
        cur = self._by_id.get(session.id)
        if cur is None or cur.version != expected_version:
            return False
        session.version = expected_version + 1
        session.last_used_at = max(session.last_used_at, cur.last_used_at)
        self._by_id[session.id] = session
        return True

    async def touch(self, session: Session, now: float) -> None:
        cur = self._by_id.get(session.id)
        if cur is not None:
            cur.last_used_at = now
        session.last_used_at = now

    async def delete(self, sid: str) -> Session | None:
        s = self._by_id.pop(sid, None)
        if s is not None:
            key = (s.national_id, s.client_id)
            if self._by_user.get(key) == sid:
                del self._by_user[key]
        return s

    async def expired(self, now: float, limit: int = 100) -> list[str]:
        out = []
        for sid, s in self._by_id.items():
            if s.expired(now):
                out.append(sid)
                if len(out) >= limit:
                    break
        return out

    async def count(self) -> int:
        return len(self._by_id)

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        now = time.monotonic()
        cur = self._locks.get(name)
        if cur is not None and cur[1] > now and cur[0] != owner:
            return False
        self._locks[name] = (owner, now + ttl)
        return True

    async def release(self, name: str, owner: str) -> None:
        cur = self._locks.get(name)
        if cur is not None and cur[0] == owner:
            del self._locks[name]

    async def put_pending(self, key: str, data: dict[str, Any], ttl: float) -> None:
        now = time.time()
        for k in [k for k, (exp, _) in self._pending.items() if exp < now]:
            del self._pending[k]
        self._pending[key] = (now + ttl, data)

    async def pop_pending(self, key: str) -> dict[str, Any] | None:
        item = self._pending.pop(key, None)
        if item is None or item[0] < time.time():
            return None
        return item[1]


_meta = sa.MetaData()
_sessions = sa.Table(
    "proxy_sessions",
    _meta,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("user_key", sa.String(300), nullable=False, unique=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("last_used_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Column("data", sa.Text, nullable=False),
)
_locks = sa.Table(
    "proxy_locks",
    _meta,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("owner", sa.String(100), nullable=False),
    sa.Column("until", sa.Float, nullable=False),
)
_pending = sa.Table(
    "proxy_pending",
    _meta,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("until", sa.Float, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
)


def _user_key(national_id: str, client_id: str) -> str:
    return f"{client_id}\x1f{national_id}"


class SqliteStore(SessionStore):
    """Sessions in a SQLite file (WAL): survives restarts, shared by processes on one host.

    Calls run in a worker thread so the event loop never waits on the disk.
    """

    def __init__(self, url: str, touch_interval: float = 5.0, codec: SessionCodec | None = None) -> None:
        self.codec = codec or SessionCodec()
        self.engine = make_engine(url)
        _meta.create_all(self.engine)
        self.touch_interval = touch_interval

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except sa.exc.OperationalError as exc:
            raise StoreUnavailable(str(exc.orig)) from exc

    def _load(self, row: Any) -> Session:
        s = self.codec.load(row.data, row.id)
        s.version = row.version
        s.last_used_at = max(s.last_used_at, row.last_used_at)
        return s

    def _get(self, sid: str) -> Session | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(_sessions).where(_sessions.c.id == sid)).first()
        return self._load(row) if row else None

    async def get(self, sid: str) -> Session | None:
        result: Session | None = await self._run(self._get, sid)
        return result

    def _find(self, key: str) -> Session | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(_sessions).where(_sessions.c.user_key == key)).first()
        return self._load(row) if row else None

    async def find(self, national_id: str, client_id: str) -> Session | None:
        result: Session | None = await self._run(self._find, _user_key(national_id, client_id))
        return result

    def _create(self, s: Session) -> Session | None:
        key = _user_key(s.national_id, s.client_id)
        with self.engine.begin() as c:
            row = c.execute(sa.select(_sessions).where(_sessions.c.user_key == key)).first()
            if row is not None:
                return self._load(row)
            c.execute(
                _sessions.insert().values(
                    id=s.id,
                    user_key=key,
                    version=s.version,
                    last_used_at=s.last_used_at,
                    expires_at=s.expires_at(),
                    data=self.codec.dump(s),
                )
            )
        return None

    async def create(self, session: Session) -> Session | None:
        result: Session | None = await self._run(self._create, session)
        return result

    def _save(self, s: Session, expected: int) -> bool:
        new = _copy(s)
        new.version = expected + 1
        with self.engine.begin() as c:
            res = c.execute(
                _sessions.update()
                .where(_sessions.c.id == s.id, _sessions.c.version == expected)
                .values(version=expected + 1, data=self.codec.dump(new), expires_at=new.expires_at())
            )
            ok = bool(res.rowcount == 1)
        if ok:
            s.version = expected + 1
        return ok

    async def save(self, session: Session, expected_version: int) -> bool:
        return bool(await self._run(self._save, session, expected_version))

    def _touch(self, sid: str, now: float, expires_at: float) -> None:
        with self.engine.begin() as c:
            c.execute(
                _sessions.update()
                .where(_sessions.c.id == sid, _sessions.c.last_used_at < now)
                .values(last_used_at=now, expires_at=expires_at)
            )

    async def touch(self, session: Session, now: float) -> None:
        if now - session.last_used_at < self.touch_interval:
            return
        session.last_used_at = now
        await self._run(self._touch, session.id, now, session.expires_at())

    def _delete(self, sid: str) -> Session | None:
        with self.engine.begin() as c:
            row = c.execute(sa.select(_sessions).where(_sessions.c.id == sid)).first()
            if row is None:
                return None
            res = c.execute(_sessions.delete().where(_sessions.c.id == sid, _sessions.c.version == row.version))
            return self._load(row) if res.rowcount == 1 else None

    async def delete(self, sid: str) -> Session | None:
        result: Session | None = await self._run(self._delete, sid)
        return result

    def _expired(self, now: float, limit: int) -> list[str]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(_sessions.c.id).where(_sessions.c.expires_at <= now).limit(limit)).all()
        return [r.id for r in rows]

    async def expired(self, now: float, limit: int = 100) -> list[str]:
        result: list[str] = await self._run(self._expired, now, limit)
        return result

    def _count(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(_sessions)).scalar_one())

    async def count(self) -> int:
        return int(await self._run(self._count))

    def _acquire(self, name: str, owner: str, ttl: float) -> bool:
        now = time.time()
        with self.engine.begin() as c:
            res = c.execute(
                _locks.update()
                .where(_locks.c.name == name, sa.or_(_locks.c.until < now, _locks.c.owner == owner))
                .values(owner=owner, until=now + ttl)
            )
            if res.rowcount == 1:
                return True
            try:
                with c.begin_nested():
                    c.execute(_locks.insert().values(name=name, owner=owner, until=now + ttl))
            except sa.exc.IntegrityError:
                return False
            return True

    async def acquire(self, name: str, owner: str, ttl: float) -> bool:
        return bool(await self._run(self._acquire, name, owner, ttl))

    def _release(self, name: str, owner: str) -> None:
        with self.engine.begin() as c:
            c.execute(_locks.delete().where(_locks.c.name == name, _locks.c.owner == owner))

    async def release(self, name: str, owner: str) -> None:
        await self._run(self._release, name, owner)

    def _put_pending(self, key: str, data: dict[str, Any], ttl: float) -> None:
        now = time.time()
        with self.engine.begin() as c:
            c.execute(_pending.delete().where(_pending.c.until < now))
            c.execute(_pending.insert().values(key=key, until=now + ttl, data=json.dumps(data)))

    async def put_pending(self, key: str, data: dict[str, Any], ttl: float) -> None:
        await self._run(self._put_pending, key, data, ttl)

    def _pop_pending(self, key: str) -> dict[str, Any] | None:
        with self.engine.begin() as c:
            row = c.execute(sa.select(_pending).where(_pending.c.key == key)).first()
            if row is None:
                return None
            res = c.execute(_pending.delete().where(_pending.c.key == key))
            if res.rowcount != 1 or row.until < time.time():
                return None
            data: dict[str, Any] = json.loads(row.data)
            return data

    async def pop_pending(self, key: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._run(self._pop_pending, key)
        return result

    async def ping(self) -> None:
        await self._run(self._count)

    async def close(self) -> None:
        self.engine.dispose()


# Redis layout (prefix p): {p}s:{sid} hash {v: version, t: last_used_at, d: JSON};
# {p}u:{client}\x1f{nid} -> sid; {p}exp zset sid -> expiry; {p}l:{name} lease; {p}p:{key} pending.
_SAVE_LUA = """
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[6])
return 1
"""
_CREATE_LUA = """
local existing = redis.call('GET', KEYS[2])
if existing and redis.call('EXISTS', ARGV[6] .. existing) == 1 then return existing end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 't', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
redis.call('SET', KEYS[2], ARGV[7], 'PXAT', ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[7])
return false
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

    def _k(self, sid: str) -> str:
        return f"{self.p}s:{sid}"

    async def _call(self, coro: Any) -> Any:
        import redis.exceptions as rex

        try:
            return await coro
        except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"Redis injoignable: {type(exc).__name__}") from exc
        except rex.ResponseError as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc

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

    async def find(self, national_id: str, client_id: str) -> Session | None:
        sid = await self._call(self.r.get(f"{self.p}u:{_user_key(national_id, client_id)}"))
        return await self.get(sid.decode()) if sid else None

    def _pxat(self, s: Session) -> int:
        return int((s.absolute_expires_at + self.grace) * 1000)

    async def create(self, session: Session) -> Session | None:
        existing = await self._call(
            self._create(
                keys=[
                    self._k(session.id),
                    f"{self.p}u:{_user_key(session.national_id, session.client_id)}",
                    f"{self.p}exp",
                ],
                args=[
                    session.version,
                    session.last_used_at,
                    self.codec.dump(session),
                    self._pxat(session),
                    session.expires_at(),
                    f"{self.p}s:",
                    session.id,
                ],
            )
        )
        if existing:
            return await self.get(existing.decode())
        return None

    async def save(self, session: Session, expected_version: int) -> bool:
        new = _copy(session)
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
        await self._call(self.r.delete(f"{self.p}u:{_user_key(s.national_id, s.client_id)}"))
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


def make_store(
    kind: str, url: str | None, touch_interval: float, prefix: str = "confiance:proxy:", key: str | None = None
) -> SessionStore:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(url or "sqlite:///proxy-sessions.db", touch_interval, SessionCodec(key))
    if kind == "redis":
        return RedisStore(url or "redis://127.0.0.1:6379/0", touch_interval, prefix=prefix, codec=SessionCodec(key))
    raise ValueError(f"unknown session store {kind}")
