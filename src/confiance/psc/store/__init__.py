"""Where the sandbox keeps its live state: records, the ``Store`` protocol and its backends.

``memory`` (one process, unit tests), ``sqlite`` (default for a served sandbox: survives
restarts, shared by the worker processes of one host) and ``redis`` (by configuration).
``open_store`` picks one from a URL.
"""

from __future__ import annotations

from pathlib import Path

from .memory import MemoryStore
from .records import AuthCode, CibaRequest, Grant, LoginTransaction, Session, SharedState, StateStore, Store

__all__ = [
    "AuthCode",
    "CibaRequest",
    "Grant",
    "LoginTransaction",
    "MemoryStore",
    "Session",
    "SharedState",
    "StateStore",
    "Store",
    "open_store",
]


def open_store(url: str, prefix: str = "psc:") -> StateStore:
    """``memory``, ``sqlite:///path/to/file`` (or ``sqlite:relative/path``), ``redis://…``."""
    if url == "memory":
        return MemoryStore()
    if url.startswith("sqlite:"):
        from .sqlite import SqliteStore

        path = url.removeprefix("sqlite:")
        if path.startswith("//"):
            path = path[2:]
        return SqliteStore(Path(path))
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redisstore import RedisStore

        return RedisStore(url, prefix)
    raise ValueError(f"store inconnu : {url} (memory, sqlite:///chemin, redis://…)")
