"""Where the sandbox keeps its live state (sessions, grants, tokens, requests).

The sandbox is a development tool, so state lives in process memory by default; the
domain only talks to this ``Store`` protocol so a shared backend could be added without
touching the rules. Records are plain mutable dataclasses: the domain changes a record
and the in-memory store needs no write-back (a persistent store would save on ``put``).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class Session:
    """A PSC session (``session_state``): one authentication of one professional."""

    id: str
    national_id: str
    auth_time: float
    last_seen: float
    drop_at: float  # absolute end of the session: nothing refers to it afterwards
    acr: str = "eidas1"
    channel: str = "CARD"
    ended: bool = False


@dataclass(slots=True)
class Grant:
    """A token family: everything issued from one CIBA or code authorization to one client."""

    id: str
    client_id: str
    session_id: str
    national_id: str
    scope: str
    drop_at: float
    nonce: str | None = None
    revoked: bool = False
    # Refresh rotation: only the current generation's token is valid; an older one is a
    # replay. One counter per family instead of one record per refresh token issued.
    refresh_gen: int = 0
    refresh_issued_at: float = 0.0
    refresh_expires_at: float = 0.0


@dataclass(slots=True)
class CibaRequest:
    id: str
    client_id: str
    national_id: str
    scope: str
    binding_message: str
    channel: str
    created: float
    expires_at: float
    interval: float
    mode: str  # e-CPS policy snapshot: approve | deny | never | manual
    delay: float
    decision: str | None = None  # "approved" | "denied" (manual decisions)
    last_poll: float | None = None
    consumed: bool = False


@dataclass(slots=True)
class AuthCode:
    code: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    session_id: str
    national_id: str
    scope: str
    nonce: str | None
    expires_at: float
    used: bool = False
    grant_id: str | None = None  # set once redeemed, so a replay can revoke what it produced


@dataclass(slots=True)
class LoginTransaction:
    """A pending browser authorization request waiting for the login page's answer."""

    id: str
    client_id: str
    redirect_uri: str
    state: str | None
    nonce: str | None
    code_challenge: str
    scope: str
    expires_at: float
    used: bool = False


class Store(Protocol):
    """Storage the domain needs. Lookups return ``None`` for unknown keys."""

    def put_session(self, s: Session) -> None: ...
    def session(self, sid: str) -> Session | None: ...
    def sessions(self) -> list[Session]: ...
    def put_grant(self, g: Grant) -> None: ...
    def grant(self, gid: str) -> Grant | None: ...
    def revoke_jti(self, jti: str, expires_at: float) -> None: ...
    def jti_revoked(self, jti: str) -> bool: ...
    def put_ciba(self, c: CibaRequest) -> None: ...
    def ciba(self, rid: str) -> CibaRequest | None: ...
    def ciba_requests(self) -> list[CibaRequest]: ...
    def put_code(self, c: AuthCode) -> None: ...
    def code(self, code: str) -> AuthCode | None: ...
    def put_login(self, t: LoginTransaction) -> None: ...
    def login(self, tid: str) -> LoginTransaction | None: ...
    def purge(self, now: float) -> int: ...


@dataclass
class MemoryStore:
    """Dictionaries plus an expiry heap so memory stays bounded under load."""

    _sessions: dict[str, Session] = field(default_factory=dict)
    _grants: dict[str, Grant] = field(default_factory=dict)
    _revoked_jti: dict[str, float] = field(default_factory=dict)
    _ciba: dict[str, CibaRequest] = field(default_factory=dict)
    _codes: dict[str, AuthCode] = field(default_factory=dict)
    _logins: dict[str, LoginTransaction] = field(default_factory=dict)
    # (drop_at, kind, key): records are forgotten some time after they expire.
    _expiry: list[tuple[float, str, str]] = field(default_factory=list)
    # Records are kept this long after expiry so a late replay is still recognised as such.
    grace: float = 600.0

    def _track(self, at: float, kind: str, key: str) -> None:
        heapq.heappush(self._expiry, (at + self.grace, kind, key))

    def put_session(self, s: Session) -> None:
        if s.id not in self._sessions:
            self._track(s.drop_at, "session", s.id)
        self._sessions[s.id] = s

    def session(self, sid: str) -> Session | None:
        return self._sessions.get(sid)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    def put_grant(self, g: Grant) -> None:
        if g.id not in self._grants:
            self._track(g.drop_at, "grant", g.id)
        self._grants[g.id] = g

    def grant(self, gid: str) -> Grant | None:
        return self._grants.get(gid)

    def revoke_jti(self, jti: str, expires_at: float) -> None:
        if jti not in self._revoked_jti:
            self._track(expires_at, "jti", jti)
        self._revoked_jti[jti] = expires_at

    def jti_revoked(self, jti: str) -> bool:
        return jti in self._revoked_jti

    def put_ciba(self, c: CibaRequest) -> None:
        if c.id not in self._ciba:
            self._track(c.expires_at, "ciba", c.id)
        self._ciba[c.id] = c

    def ciba(self, rid: str) -> CibaRequest | None:
        return self._ciba.get(rid)

    def ciba_requests(self) -> list[CibaRequest]:
        return list(self._ciba.values())

    def put_code(self, c: AuthCode) -> None:
        if c.code not in self._codes:
            self._track(c.expires_at, "code", c.code)
        self._codes[c.code] = c

    def code(self, code: str) -> AuthCode | None:
        return self._codes.get(code)

    def put_login(self, t: LoginTransaction) -> None:
        if t.id not in self._logins:
            self._track(t.expires_at, "login", t.id)
        self._logins[t.id] = t

    def login(self, tid: str) -> LoginTransaction | None:
        return self._logins.get(tid)

    def purge(self, now: float) -> int:
        """Forget expired records (sessions/grants go once nothing can reference them)."""
        n = 0
        tables: dict[str, dict] = {
            "jti": self._revoked_jti,
            "ciba": self._ciba,
            "code": self._codes,
            "login": self._logins,
            "session": self._sessions,
            "grant": self._grants,
        }
        while self._expiry and self._expiry[0][0] <= now:
            _, kind, key = heapq.heappop(self._expiry)
            if tables[kind].pop(key, None) is not None:
                n += 1
        return n
