"""What every session store promises (:class:`SessionStore`), and its one failure.

Writes that replace tokens are compare-and-set on ``Session.version`` so a rotated refresh
token is never overwritten by a stale copy; idle-time "touches" are coalesced
(``touch_interval``) so shared stores see at most one write per session every few seconds
instead of one per request. Leases (``acquire``/``release``) serialise refreshes across
proxy instances; a crashed holder's lease expires. A store that cannot be reached raises
:class:`StoreUnavailable`: the proxy then fails closed (503), never open.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from confiance.core.errors import ConfianceError

from ..domain import Session


class StoreUnavailable(ConfianceError, RuntimeError):
    """The session store cannot be reached; callers answer 503."""

    code = "SESSION_STORE_UNAVAILABLE"


class SessionStore(ABC):
    touch_interval: float = 0.0

    @abstractmethod
    async def get(self, sid: str) -> Session | None: ...

    @abstractmethod
    async def create(self, session: Session) -> None:
        """Insert a new session. A professional may hold several sessions with one LPS (one
        per workstation, or after losing a cookie): nothing is keyed by user."""

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


def copy_session(s: Session) -> Session:
    return Session.from_dict(s.to_dict())
