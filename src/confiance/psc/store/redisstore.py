"""The store for a sandbox spread over several hosts or shared with other tools: Redis.

Same layout idea as SQLite: a record is one string (orjson) under ``{p}r:{kind}:{key}``, a
set-once fact one ``SET NX`` key ``{p}f:{kind}:{key}``; a grant's rotation is a Lua
compare-and-set on its ``refresh_gen``. Reads that need a record and its flags go in one
pipeline (one round trip). Expiry follows the domain's clock, not Redis's: a sorted set
``{p}exp`` scores every key by ``drop_at + grace`` and ``purge(now)`` deletes what is due,
so tests with an injected clock behave as with the other stores.

Calls are synchronous (redis-py) and block the worker's event loop for a loopback round
trip; each worker is its own process, so the team's load spreads over ``--workers``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import orjson
import redis

from .codec import dump, load
from .records import AuthCode, CibaRequest, Grant, LoginTransaction, Session

_ROTATE = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if cjson.decode(cur)['refresh_gen'] ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3]) end
return 1
"""


class RedisStore:
    """``Store`` and ``SharedState`` in Redis under ``prefix``."""

    def __init__(self, url: str, prefix: str = "psc:", grace: float = 600.0) -> None:
        self.r = redis.Redis.from_url(url, socket_timeout=10)
        self.p = prefix
        self.grace = grace
        self._rotate = self.r.register_script(_ROTATE)

    def _rk(self, kind: str, key: str) -> str:
        return f"{self.p}r:{kind}:{key}"

    def _fk(self, kind: str, key: str) -> str:
        return f"{self.p}f:{kind}:{key}"

    def _put(self, kind: str, key: str, drop_at: float, record: Any) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self._rk(kind, key), dump(record))
        pipe.zadd(self.p + "exp", {self._rk(kind, key): drop_at + self.grace})
        if kind == "ciba":
            pipe.sadd(self.p + "ciba", key)
        pipe.execute()

    def _get(self, kind: str, key: str, *flags: str) -> list[Any]:
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self._rk(kind, key))
        for f in flags:
            pipe.get(self._fk(f, key))
        return list(pipe.execute())

    def _mark(self, kind: str, key: str, drop_at: float, value: str = "1", rec_kind: str | None = None) -> bool:
        if rec_kind is not None and not self.r.exists(self._rk(rec_kind, key)):
            return False
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self._fk(kind, key), value, nx=True)
        pipe.zadd(self.p + "exp", {self._fk(kind, key): drop_at + self.grace})
        return bool(pipe.execute()[0])

    # ----- sessions
    def put_session(self, s: Session) -> None:
        self._put("session", s.id, s.drop_at, s)

    def session(self, sid: str) -> Session | None:
        data, ended = self._get("session", sid, "ended")
        if data is None:
            return None
        s = load(Session, data)
        s.ended = ended is not None
        return s

    def sessions(self) -> list[Session]:
        keys = [k.decode().rpartition(":")[2] for k in self.r.scan_iter(self._rk("session", "*"))]
        return [s for s in map(self.session, keys) if s is not None]

    def end_session(self, sid: str, drop_at: float) -> bool:
        return self._mark("ended", sid, drop_at, rec_kind="session")

    # ----- grants
    def put_grant(self, g: Grant) -> None:
        self._put("grant", g.id, g.drop_at, g)

    def grant(self, gid: str) -> Grant | None:
        data, revoked = self._get("grant", gid, "revoked")
        if data is None:
            return None
        g = load(Grant, data)
        g.revoked = revoked is not None
        return g

    def rotate_grant(self, g: Grant, from_gen: int, session: Session | None) -> bool:
        keys = [self._rk("grant", g.id), self._rk("session", session.id if session else "-")]
        args: list[bytes | str | int] = [from_gen, dump(g), dump(session) if session is not None else ""]
        return bool(self._rotate(keys=keys, args=args))

    def revoke_grant(self, gid: str, drop_at: float) -> bool:
        return self._mark("revoked", gid, drop_at)

    def revoke_jti(self, jti: str, expires_at: float) -> None:
        self._mark("jti", jti, expires_at)

    def jti_revoked(self, jti: str) -> bool:
        return bool(self.r.exists(self._fk("jti", jti)))

    # ----- CIBA requests
    def put_ciba(self, c: CibaRequest) -> None:
        self._put("ciba", c.id, c.expires_at, c)

    def ciba(self, rid: str) -> CibaRequest | None:
        data, consumed, decision = self._get("ciba", rid, "consumed", "decision")
        if data is None:
            return None
        c = load(CibaRequest, data)
        c.consumed, c.decision = consumed is not None, decision.decode() if decision else None
        return c

    def ciba_requests(self) -> list[CibaRequest]:
        rids = [m.decode() for m in self.r.smembers(self.p + "ciba")]  # type: ignore[union-attr]
        return [c for c in map(self.ciba, rids) if c is not None]

    def consume_ciba(self, rid: str, drop_at: float) -> bool:
        return self._mark("consumed", rid, drop_at, rec_kind="ciba")

    def decide_ciba(self, rid: str, decision: str, drop_at: float) -> bool:
        return self._mark("decision", rid, drop_at, decision, rec_kind="ciba")

    # ----- codes and login transactions
    def put_code(self, c: AuthCode) -> None:
        self._put("code", c.code, c.expires_at, c)

    def code(self, code: str) -> AuthCode | None:
        data, used = self._get("code", code, "used")
        if data is None:
            return None
        c = load(AuthCode, data)
        c.used = used is not None
        return c

    def use_code(self, code: str, drop_at: float) -> bool:
        return self._mark("used", code, drop_at, rec_kind="code")

    def put_login(self, t: LoginTransaction) -> None:
        self._put("login", t.id, t.expires_at, t)

    def login(self, tid: str) -> LoginTransaction | None:
        data, used = self._get("login", tid, "login")
        if data is None:
            return None
        t = load(LoginTransaction, data)
        t.used = used is not None
        return t

    def use_login(self, tid: str, drop_at: float) -> bool:
        return self._mark("login", tid, drop_at, rec_kind="login")

    def purge(self, now: float) -> int:
        due = [k.decode() for k in self.r.zrangebyscore(self.p + "exp", "-inf", now)]  # type: ignore[union-attr]
        if not due:
            return 0
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(*due)
        pipe.zrem(self.p + "exp", *due)
        ciba = [k.rpartition(":")[2] for k in due if k.startswith(self._rk("ciba", ""))]
        if ciba:
            pipe.srem(self.p + "ciba", *ciba)
        return sum(1 for k in due if k.startswith(self.p + "r:")) if pipe.execute() else 0

    # ----- shared state
    def secret(self, name: str, make: Callable[[], bytes] = lambda: secrets.token_bytes(32)) -> bytes:
        key = self.p + "secret:" + name
        self.r.set(key, make(), nx=True)
        value = self.r.get(key)
        assert isinstance(value, bytes)
        return value

    def put_entry(self, kind: str, key: str, data: dict[str, Any]) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.p + "entry:" + kind, key, orjson.dumps(data))
        pipe.incr(self.p + "version")
        pipe.execute()

    def entries(self, kind: str) -> dict[str, dict[str, Any]]:
        raw = self.r.hgetall(self.p + "entry:" + kind)
        return {(k.decode() if isinstance(k, bytes) else k): orjson.loads(v) for k, v in raw.items()}

    def version(self) -> int:
        return int(self.r.get(self.p + "version") or 0)

    def ping(self) -> None:
        self.r.ping()

    def close(self) -> None:
        self.r.close()
