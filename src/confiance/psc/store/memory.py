"""The in-process store: dictionaries plus an expiry heap so memory stays bounded.

For the domain's unit tests and a single-process sandbox. Records are copied in and out,
like a real store serialises them, so a rule that forgets to write a change back fails here
as it would against SQLite or Redis.
"""

from __future__ import annotations

import copy
import heapq
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .records import AuthCode, CibaRequest, Grant, LoginTransaction, Session

T = TypeVar("T")


def _copy(x: T | None) -> T | None:
    return None if x is None else copy.copy(x)


@dataclass
class MemoryStore:
    """Dictionaries plus an expiry heap so memory stays bounded under load."""

    _sessions: dict[str, Session] = field(default_factory=dict)
    _grants: dict[str, Grant] = field(default_factory=dict)
    _revoked_jti: dict[str, float] = field(default_factory=dict)
    _ciba: dict[str, CibaRequest] = field(default_factory=dict)
    _codes: dict[str, AuthCode] = field(default_factory=dict)
    _logins: dict[str, LoginTransaction] = field(default_factory=dict)
    _flags: dict[str, str] = field(default_factory=dict)  # "kind\x1fkey" -> value
    _entries: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _secrets: dict[str, bytes] = field(default_factory=dict)
    _version: int = 0
    # (drop_at, kind, key): records are forgotten some time after they expire.
    _expiry: list[tuple[float, str, str]] = field(default_factory=list)
    # Records are kept this long after expiry so a late replay is still recognised as such.
    grace: float = 600.0

    def _track(self, at: float, kind: str, key: str) -> None:
        heapq.heappush(self._expiry, (at + self.grace, kind, key))

    def _mark(self, kind: str, key: str, drop_at: float, value: str = "1") -> bool:
        k = f"{kind}\x1f{key}"
        if k in self._flags:
            return False
        self._flags[k] = value
        self._track(drop_at, "flag", k)
        return True

    def _flag(self, kind: str, key: str) -> str | None:
        return self._flags.get(f"{kind}\x1f{key}")

    # ----- sessions
    def put_session(self, s: Session) -> None:
        if s.id not in self._sessions:
            self._track(s.drop_at, "session", s.id)
        self._sessions[s.id] = copy.copy(s)

    def session(self, sid: str) -> Session | None:
        s = _copy(self._sessions.get(sid))
        if s is not None:
            s.ended = self._flag("ended", sid) is not None
        return s

    def sessions(self) -> list[Session]:
        return [s for s in (self.session(k) for k in list(self._sessions)) if s is not None]

    def end_session(self, sid: str, drop_at: float) -> bool:
        return sid in self._sessions and self._mark("ended", sid, drop_at)

    # ----- grants
    def put_grant(self, g: Grant) -> None:
        if g.id not in self._grants:
            self._track(g.drop_at, "grant", g.id)
        self._grants[g.id] = copy.copy(g)

    def grant(self, gid: str) -> Grant | None:
        g = _copy(self._grants.get(gid))
        if g is not None:
            g.revoked = self._flag("revoked", gid) is not None
        return g

    def rotate_grant(self, g: Grant, from_gen: int, session: Session | None) -> bool:
        stored = self._grants.get(g.id)
        if stored is None or stored.refresh_gen != from_gen:
            return False
        self._grants[g.id] = copy.copy(g)
        if session is not None:
            self.put_session(session)
        return True

    def revoke_grant(self, gid: str, drop_at: float) -> bool:
        return self._mark("revoked", gid, drop_at)

    def revoke_jti(self, jti: str, expires_at: float) -> None:
        if jti not in self._revoked_jti:
            self._track(expires_at, "jti", jti)
        self._revoked_jti[jti] = expires_at

    def jti_revoked(self, jti: str) -> bool:
        return jti in self._revoked_jti

    # ----- CIBA requests
    def put_ciba(self, c: CibaRequest) -> None:
        if c.id not in self._ciba:
            self._track(c.expires_at, "ciba", c.id)
        self._ciba[c.id] = copy.copy(c)

    def ciba(self, rid: str) -> CibaRequest | None:
        c = _copy(self._ciba.get(rid))
        if c is not None:
            c.consumed = self._flag("consumed", rid) is not None
            c.decision = self._flag("decision", rid)
        return c

    def ciba_requests(self) -> list[CibaRequest]:
        return [c for c in (self.ciba(k) for k in list(self._ciba)) if c is not None]

    def consume_ciba(self, rid: str, drop_at: float) -> bool:
        return rid in self._ciba and self._mark("consumed", rid, drop_at)

    def decide_ciba(self, rid: str, decision: str, drop_at: float) -> bool:
        return rid in self._ciba and self._mark("decision", rid, drop_at, decision)

    # ----- codes and login transactions
    def put_code(self, c: AuthCode) -> None:
        if c.code not in self._codes:
            self._track(c.expires_at, "code", c.code)
        self._codes[c.code] = copy.copy(c)

    def code(self, code: str) -> AuthCode | None:
        c = _copy(self._codes.get(code))
        if c is not None:
            c.used = self._flag("used", code) is not None
        return c

    def use_code(self, code: str, drop_at: float) -> bool:
        return code in self._codes and self._mark("used", code, drop_at)

    def put_login(self, t: LoginTransaction) -> None:
        if t.id not in self._logins:
            self._track(t.expires_at, "login", t.id)
        self._logins[t.id] = copy.copy(t)

    def login(self, tid: str) -> LoginTransaction | None:
        t = _copy(self._logins.get(tid))
        if t is not None:
            t.used = self._flag("login", tid) is not None
        return t

    def use_login(self, tid: str, drop_at: float) -> bool:
        return tid in self._logins and self._mark("login", tid, drop_at)

    def purge(self, now: float) -> int:
        """Forget expired records (sessions/grants go once nothing can reference them)."""
        n = 0
        tables: dict[str, dict[str, Any]] = {
            "jti": self._revoked_jti,
            "ciba": self._ciba,
            "code": self._codes,
            "login": self._logins,
            "session": self._sessions,
            "grant": self._grants,
            "flag": self._flags,
        }
        while self._expiry and self._expiry[0][0] <= now:
            _, kind, key = heapq.heappop(self._expiry)
            if tables[kind].pop(key, None) is not None and kind != "flag":
                n += 1
        return n

    # ----- shared state (one process: nothing to share, but the same interface)
    def secret(self, name: str, make: Callable[[], bytes] = lambda: secrets.token_bytes(32)) -> bytes:
        return self._secrets.setdefault(name, make())

    def put_entry(self, kind: str, key: str, data: dict[str, Any]) -> None:
        self._entries.setdefault(kind, {})[key] = data
        self._version += 1

    def entries(self, kind: str) -> dict[str, dict[str, Any]]:
        return dict(self._entries.get(kind, {}))

    def version(self) -> int:
        return self._version

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None
