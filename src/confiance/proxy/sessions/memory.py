"""Sessions in this process (the default): the fastest store, lost on restart."""

from __future__ import annotations

import time
from typing import Any

from ..domain import Session
from .base import SessionStore


class MemoryStore(SessionStore):
    """One process. ``get`` returns the live object (no copy on the hot path); writers work on
    copies and swap them in with ``save``, so readers never see a half-updated session."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}
        self._locks: dict[str, tuple[str, float]] = {}
        self._pending: dict[str, tuple[float, dict[str, Any]]] = {}

    async def get(self, sid: str) -> Session | None:
        return self._by_id.get(sid)

    def get_now(self, sid: str) -> Session | None:
        """Synchronous lookup for the hot path (no await, no task switch)."""
        return self._by_id.get(sid)

    async def create(self, session: Session) -> None:
        self._by_id[session.id] = session

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
        return self._by_id.pop(sid, None)

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
