"""Access log of the resource services: who (professional + client) reached what.

Records are hash-chained (``confiance.core.hashchain``) so a removed or edited line is
detectable, and written in batches: the resource hot path only appends to a list, a
background task (or ``flush()``) writes JSON lines. The log never holds a token, only its
``jti``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from confiance.core.hashchain import GENESIS, ChainCheck, link, verify_chain


class AccessLog:
    def __init__(self, path: Path | None = None, keep_in_memory: int = 10_000) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep_in_memory)
        self._prev = GENESIS
        if path is not None and path.exists():
            last = None
            with path.open("rb") as fh:
                for line in fh:
                    if line.strip():
                        last = line
            if last is not None:
                self._prev = json.loads(last)["hash"]

    def record(self, **fields: Any) -> None:
        rec = {"ts": round(time.time(), 3), **fields}
        with self._lock:
            digest = link(self._prev, rec)
            row = {"record": rec, "prev": self._prev, "hash": digest}
            self._prev = digest
            self.recent.append(rec)
            if self.path is not None:
                self._pending.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")))

    def flush(self) -> None:
        if self.path is None:
            return
        with self._lock:
            lines, self._pending = self._pending, []
        if lines:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")

    @staticmethod
    def verify(path: Path) -> ChainCheck:
        rows = []
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    rows.append((row["record"], row["prev"], row["hash"]))
        return verify_chain(rows)
