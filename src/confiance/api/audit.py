"""Access log of the resource services: who (professional + client) reached what.

Records are hash-chained (``confiance.core.hashchain``) so a removed or edited line is
detectable, and written in batches: the resource hot path only appends the record to a
list; a background task (or ``flush()``) chains, serialises and writes them as JSON
lines, once a second, off the request's latency. The log never holds a token, only its
``jti``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from confiance.core.config import ConfigError
from confiance.core.hashchain import GENESIS, ChainCheck, canonical, verify_chain


class AccessLog:
    def __init__(self, path: Path | None = None, keep_in_memory: int = 10_000) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._pending: deque[dict[str, Any]] = deque()
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep_in_memory)
        self._prev = GENESIS
        if path is not None and path.exists():
            last = None
            with path.open("rb") as fh:
                for line in fh:
                    if line.strip():
                        last = line
            if last is not None:
                try:
                    self._prev = str(json.loads(last)["hash"])
                except (ValueError, KeyError, TypeError):
                    # appending after a broken line would hide it: refuse to start, saying where
                    raise ConfigError(
                        f"journal d'accès illisible (dernière ligne) : {path} — voir `confiance api log verify {path}`"
                    ) from None

    def record(self, **fields: Any) -> None:
        rec = {"ts": round(time.time(), 3), **fields}
        self.recent.append(rec)
        if self.path is not None:
            self._pending.append(rec)  # deque.append is thread-safe: no lock on the hot path

    def flush(self) -> None:
        if self.path is None:
            return
        with self._lock:
            lines = []
            while self._pending:
                rec = self._pending.popleft()
                body = canonical(rec)
                digest = hashlib.sha256(self._prev.encode("ascii") + body).hexdigest()
                lines.append(f'{{"record":{body.decode("utf-8")},"prev":"{self._prev}","hash":"{digest}"}}')
                self._prev = digest
            if lines:  # written under the lock: two flushes never interleave their lines
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write("\n".join(lines) + "\n")

    @staticmethod
    def verify(path: Path) -> ChainCheck:
        rows = []
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    rows.append((dict(row["record"]), str(row["prev"]), str(row["hash"])))
                except (ValueError, KeyError, TypeError):
                    # an unreadable line is a broken chain too, reported where it is
                    check = verify_chain(rows)
                    if not check.ok:
                        return check
                    return ChainCheck(
                        False, len(rows), len(rows), "ligne illisible (JSON invalide ou champs manquants)"
                    )
        return verify_chain(rows)
