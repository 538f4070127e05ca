"""Append-only, hash-chained records (proxy traces, guichet audit trail).

Each record stores ``hash = SHA-256(prev_hash || canonical JSON of the record)``; editing,
inserting or deleting any row breaks every later link, which ``verify_chain`` reports.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64


# One encoder, built once: json.dumps with non-default options builds a new one per call,
# which at thousands of traces per second was a visible share of the trace writer's time.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical(record: Mapping[str, Any] | list[Any]) -> bytes:
    return _CANONICAL.encode(record).encode()


def link(prev_hash: str, record: Mapping[str, Any]) -> str:
    return link_bytes(prev_hash, canonical(record))


def link_bytes(prev_hash: str, canonical_record: bytes) -> str:
    """``link`` for a record already encoded by :func:`canonical`."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_record).hexdigest()


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    checked: int
    first_bad: int | None = None  # position (0-based) of the first broken link
    reason: str | None = None


def verify_chain(rows: Iterable[tuple[Mapping[str, Any], str, str]]) -> ChainCheck:
    """Rows are ``(record, prev_hash, hash)`` in insertion order."""
    expected_prev = GENESIS
    n = 0
    for n, (record, prev_hash, digest) in enumerate(rows):
        if prev_hash != expected_prev:
            return ChainCheck(False, n, n, "maillon précédent incohérent (ligne supprimée ou insérée)")
        if link(prev_hash, record) != digest:
            return ChainCheck(False, n, n, "empreinte incorrecte (ligne modifiée)")
        expected_prev = digest
    else:
        return ChainCheck(True, n + 1 if expected_prev != GENESIS else 0)
