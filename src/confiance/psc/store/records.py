"""The records of the sandbox's live state, and the ``Store`` protocol that keeps them.

Records are written whole and, once written, only two kinds of change happen to them:
- facts that become true once and stay true (a grant revoked, a session ended, a CIBA
  request consumed or decided, a code or login used, an access token revoked). Stores keep
  them as *set-once flags* beside the record, set atomically (``mark``-style methods return
  whether this call set it). That is what makes "single use" hold when several worker
  processes race on the same ``auth_req_id`` or code, and why rewriting a record (a session's
  ``last_seen``, a poll's ``last_poll``) can never undo a revocation;
- the refresh generation of a grant, advanced by compare-and-set (``rotate_grant``), so a
  refresh token used twice at once, on two workers, succeeds once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


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
    ended: bool = False  # flag


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
    revoked: bool = False  # flag
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
    acr: str = "eidas1"  # level the channel gives this identity
    decision: str | None = None  # flag: "approved" | "denied" (manual decisions)
    last_poll: float | None = None
    consumed: bool = False  # flag


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
    used: bool = False  # flag
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
    used: bool = False  # flag
    acr_values: str | None = None


class Store(Protocol):
    """Storage the domain needs. Lookups return ``None`` for unknown keys; ``drop_at`` is
    when a record or flag may be forgotten (plus the store's grace period)."""

    def put_session(self, s: Session) -> None: ...
    def session(self, sid: str) -> Session | None: ...
    def sessions(self) -> list[Session]: ...
    def end_session(self, sid: str, drop_at: float) -> bool: ...
    def put_grant(self, g: Grant) -> None: ...
    def grant(self, gid: str) -> Grant | None: ...
    def rotate_grant(self, g: Grant, from_gen: int, session: Session | None) -> bool: ...
    def revoke_grant(self, gid: str, drop_at: float) -> bool: ...
    def revoke_jti(self, jti: str, expires_at: float) -> None: ...
    def jti_revoked(self, jti: str) -> bool: ...
    def put_ciba(self, c: CibaRequest) -> None: ...
    def ciba(self, rid: str) -> CibaRequest | None: ...
    def ciba_requests(self) -> list[CibaRequest]: ...
    def consume_ciba(self, rid: str, drop_at: float) -> bool: ...
    def decide_ciba(self, rid: str, decision: str, drop_at: float) -> bool: ...
    def put_code(self, c: AuthCode) -> None: ...
    def code(self, code: str) -> AuthCode | None: ...
    def use_code(self, code: str, drop_at: float) -> bool: ...
    def put_login(self, t: LoginTransaction) -> None: ...
    def login(self, tid: str) -> LoginTransaction | None: ...
    def use_login(self, tid: str, drop_at: float) -> bool: ...
    def purge(self, now: float) -> int: ...


class SharedState(Protocol):
    """What worker processes share besides live records: secrets generated once (refresh-token
    MAC key, form key) and admin changes (clients, identities, e-CPS policies, lifetimes),
    with a version number that moves on every change so a worker knows when to reload."""

    def secret(self, name: str, make: Callable[[], bytes]) -> bytes: ...
    def put_entry(self, kind: str, key: str, data: dict[str, Any]) -> None: ...
    def entries(self, kind: str) -> dict[str, dict[str, Any]]: ...
    def version(self) -> int: ...
    def ping(self) -> None: ...
    def close(self) -> None: ...


class StateStore(Store, SharedState, Protocol):
    """A backend: live records plus the state worker processes share."""
