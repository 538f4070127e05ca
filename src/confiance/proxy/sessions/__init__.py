"""Session stores, one per file: in-process (default), SQLite (one host, several
processes), Redis (scale-out). All implement :class:`SessionStore` (``base.py``); shared
stores serialise sessions with :class:`SessionCodec` (``codec.py``)."""

from __future__ import annotations

from .base import SessionStore, StoreUnavailable
from .codec import SessionCodec
from .memory import MemoryStore
from .redis import RedisStore
from .sqlite import SqliteStore

__all__ = ["MemoryStore", "RedisStore", "SessionCodec", "SessionStore", "SqliteStore", "StoreUnavailable", "make_store"]


def make_store(
    kind: str,
    url: str | None,
    touch_interval: float,
    prefix: str = "confiance:proxy:",
    key: str | None = None,
    cache_max_age: float = 5.0,
) -> SessionStore:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(url or "sqlite:///proxy-sessions.db", touch_interval, SessionCodec(key))
    if kind == "redis":
        return RedisStore(
            url or "redis://127.0.0.1:6379/0",
            touch_interval,
            prefix=prefix,
            codec=SessionCodec(key),
            cache_max_age=cache_max_age,
        )
    raise ValueError(f"unknown session store {kind}")
