"""Clients files: clients registered while a server runs, in ``{"clients": [...]}`` JSON.

The API authorization server (``confiance api clients add``) and the proxy (``confiance
proxy clients add``) both let an operator register clients without a restart: the CLI
rewrites a JSON file atomically and the running server re-reads it when it changes. The
format, the error naming the bad entry, the atomic write and the "look at most once a
second, re-read only when changed, keep the previous clients on a bad file" rule are the
same for both; only the client model differs, so this module is generic over it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Generic, TypeVar, cast

from pydantic import BaseModel, Field, create_model

from .config import ConfigError, StrictModel, parse_config
from .files import write_atomic

log = logging.getLogger("confiance.clients")

C = TypeVar("C", bound=BaseModel)


@cache
def _file_model(model: type[BaseModel]) -> type[StrictModel]:
    """``{"clients": [model, ...]}`` with unknown top-level keys refused (a typo is an error)."""
    built: type[StrictModel] = create_model(
        f"{model.__name__}sFile",
        __base__=StrictModel,
        clients=(list[model], Field(default_factory=list)),  # type: ignore[valid-type]
    )
    return built


def load_clients(path: Path, model: type[C]) -> list[C]:
    """The clients in ``path``; a missing file means none. ``ConfigError`` names the bad entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"fichier de clients illisible {path}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"fichier de clients illisible {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f'fichier de clients illisible {path}: objet JSON {{"clients": [...]}} attendu')
    parsed = parse_config(data, _file_model(model), str(path))
    return cast("list[C]", vars(parsed)["clients"])


def save_clients(path: Path, clients: Sequence[BaseModel], mode: int = 0o600) -> None:
    """Rewrite ``path`` atomically (a running server never reads half a file); owner-only by default."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"clients": [c.model_dump(mode="json", exclude_none=True) for c in clients]}
    write_atomic(path, json.dumps(body, indent=2, ensure_ascii=False) + "\n", mode=mode)


def merge_clients(
    configured: Iterable[C], registered: Iterable[C], *, key: Callable[[C], str], configured_wins: bool
) -> list[C]:
    """Configured clients plus registered ones, one per ``key``; ``configured_wins`` picks who wins a clash."""
    first, second = (registered, configured) if configured_wins else (configured, registered)
    by_key: dict[str, C] = {key(c): c for c in first}
    by_key.update({key(c): c for c in second})
    return list(by_key.values())


class ClientsFile(Generic[C]):
    """A clients file a running server watches: ``poll()`` returns new contents when it changed.

    The file is looked at no more than once per ``check_interval`` (a ``stat`` per request
    would cost more than the request) and re-read only when it was replaced or its modification
    time or size changed; a file that cannot be read is logged and ``poll`` keeps answering "unchanged",
    so the server keeps the clients it had rather than losing them all to a typo.
    """

    def __init__(
        self,
        path: Path,
        model: type[C],
        *,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.model = model
        self.check_interval = check_interval
        self.clock = clock
        self._stamp: tuple[int, int, int] | None = None
        self._checked: float | None = None
        self.last_error: str | None = None  # why the last read failed (readiness reports it)

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        # the inode too: every atomic save is a new file, even within one timestamp tick
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def load(self) -> list[C]:
        """Read now (startup, CLI); remembers what was read so ``poll`` reports only later changes."""
        stamp = self._current_stamp()
        clients = load_clients(self.path, self.model)
        self._stamp, self.last_error = stamp, None
        return clients

    def save(self, clients: Sequence[C]) -> None:
        save_clients(self.path, clients)

    def poll(self) -> list[C] | None:
        """The clients if the file changed since the last read, else None (also on a bad file)."""
        now = self.clock()
        if self._checked is not None and now - self._checked < self.check_interval:
            return None
        self._checked = now
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        try:
            clients = load_clients(self.path, self.model)
        except ConfigError as exc:
            self.last_error = str(exc)
            log.error("clients non rechargés : %s", exc)
            return None
        self.last_error = None
        return clients


__all__ = ["ClientsFile", "load_clients", "merge_clients", "save_clients"]
