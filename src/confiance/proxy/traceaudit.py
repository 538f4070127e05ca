"""What an auditor runs: the store checked against the signed checkpoints, exports of a
time window that carry their own proof, and the offline check of such an export.

An export (``confiance proxy traces export``) is JSON lines:

1. ``{"type": "export", "format": "confiance-proxy-traces/1", "start", "end", "first_seq", "checkpoint_seq"}``
2. for every block from the first one overlapping the window up to the covering checkpoint:
   ``{"type": "block", "seq", "ts_min", "ts_max", "n", "prev_hash", "hash", "body"}`` (the
   stored values; ``body`` the exact stored text), followed by one
   ``{"type": "trace", "seq", "index", "trace"}`` line per trace of that block inside the
   window (the ANS record, readable without decoding the block); the block just before
   the first one comes first as ``{"type": "boundary", …}`` (same fields), so a verifier
   sees that nothing of the window was cut at its start;
3. ``{"type": "checkpoint", "jws"}``: a signed checkpoint naming the last block.

The blocks link by ``prev_hash`` and each hash covers every column, so the last block's hash
(signed in the checkpoint) binds every exported block and trace line: nothing in the window
can be edited, dropped or added without the check (:func:`verify_export`) failing. Only
the public key is needed (``traces public-key``), not the database.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from confiance.core.hashchain import GENESIS

from .checkpoint import Checkpoint, Checkpointer, CheckpointError, parse
from .domain import send_record
from .traces import ChainHead, TraceStore, block_digest

FORMAT = "confiance-proxy-traces/1"


@dataclass(frozen=True)
class Audit:
    ok: bool
    message: str
    traces: int = 0
    head: ChainHead | None = None
    checkpoint: Checkpoint | None = None
    uncovered_blocks: int = 0  # committed after the latest checkpoint


def verify_store(store: TraceStore, checkpoints: list[Checkpoint]) -> Audit:
    """The chain intact, every checkpoint's block as signed, and the store not behind the
    latest checkpoint (rewound, truncated, emptied or replaced)."""
    check, reached = store.walk({cp.seq: cp.head for cp in checkpoints})
    latest = checkpoints[-1] if checkpoints else None
    if not check.ok:
        return Audit(
            False, f"chaîne rompue à la trace n°{check.first_bad} : {check.reason}", check.checked, reached, latest
        )
    if reached.seq == 0:
        return Audit(False, "base des traces vide", 0, reached, latest)
    if latest is None:
        return Audit(False, "aucun point de contrôle signé dans le témoin : chaîne non ancrée", check.checked, reached)
    if reached.seq < latest.seq:
        return Audit(
            False,
            f"base ramenée en arrière : dernier bloc {reached.seq}, point de contrôle signé au bloc {latest.seq} "
            f"({latest.n} traces)",
            check.checked,
            reached,
            latest,
        )
    return Audit(True, "chaîne intègre", check.checked, reached, latest, reached.seq - latest.seq)


def _line(out: IO[bytes], obj: Mapping[str, Any]) -> None:
    out.write(orjson.dumps(obj) + b"\n")


def export(
    store: TraceStore,
    checkpoints: list[Checkpoint],
    start: float,
    end: float,
    path: Path,
    signer: Checkpointer | None = None,
) -> Audit:
    """Write the window's traces with their proof to ``path`` (created 0600: national ids).

    The store is verified first; an export of a broken chain is refused. The covering
    checkpoint is the first signed at or after the window's last block; if none is yet
    (the last traces are newer than the last checkpoint) and ``signer`` is given, a new
    one is signed over the head just verified and appended to the witness."""
    audit = verify_store(store, checkpoints)
    if not audit.ok:
        return audit
    assert audit.head is not None
    first = next(store.blocks(start=start, end=end), None)
    last_seq = 0
    for row in store.blocks(start=start, end=end):
        last_seq = row.seq
    cover = next((cp for cp in checkpoints if cp.seq >= max(last_seq, 1)), None)
    if cover is None:
        if signer is None:
            return Audit(False, "traces de la fenêtre pas encore couvertes par un point de contrôle ; réessayez")
        signer.committed(audit.head)
        signer.flush()
        cover = _find_signed(signer, audit.head)
    first_seq = first.seq if first is not None else cover.seq
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    count = 0
    with os.fdopen(fd, "wb") as out:
        _line(
            out,
            {
                "type": "export",
                "format": FORMAT,
                "start": start,
                "end": end,
                "first_seq": first_seq,
                "checkpoint_seq": cover.seq,
            },
        )
        for row in store.blocks(after=max(first_seq - 2, 0), upto=cover.seq):
            _line(
                out,
                {
                    "type": "block" if row.seq >= first_seq else "boundary",
                    "seq": row.seq,
                    "ts_min": row.ts_min,
                    "ts_max": row.ts_max,
                    "n": row.n,
                    "prev_hash": row.prev_hash,
                    "hash": row.hash,
                    "body": row.body,
                },
            )
            if row.seq < first_seq:
                continue
            for index, rec in _in_window(row.body, start, end):
                _line(out, {"type": "trace", "seq": row.seq, "index": index, "trace": rec})
                count += 1
        _line(out, {"type": "checkpoint", "jws": cover.jws})
    return Audit(True, f"{count} trace(s) exportée(s), blocs {first_seq} à {cover.seq}", count, audit.head, cover)


def _find_signed(signer: Checkpointer, head: ChainHead) -> Checkpoint:
    last = signer.last
    if last is None or last.seq != head.seq:
        raise CheckpointError("point de contrôle non écrit dans le témoin")
    return last


def _in_window(body: str, start: float, end: float) -> Iterable[tuple[int, dict[str, Any]]]:
    for index, (ts, rec) in enumerate(orjson.loads(body)):
        if start <= ts <= end:
            yield index, (rec if isinstance(rec, dict) else send_record(rec))


def verify_export(lines: Iterable[bytes], jwks: Mapping[str, Any]) -> Audit:
    """Check an export offline against the pinned public key (see the module docstring)."""
    header: dict[str, Any] | None = None
    prev: dict[str, Any] | None = None
    expected: list[tuple[int, dict[str, Any]]] = []  # trace lines the current block owes
    count = 0
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
            kind = obj["type"]
        except (orjson.JSONDecodeError, TypeError, KeyError):
            return Audit(False, f"ligne {i} illisible")
        if header is None:
            if kind != "export" or obj.get("format") != FORMAT:
                return Audit(False, "en-tête d'export absent ou format inconnu")
            header = obj
            continue
        if kind == "boundary":
            # The block before the first exported one: it must lie before the window, so
            # no block holding traces of the window was left out at its start.
            problem = _export_block_problem(obj, None, header, boundary=True)
            if problem:
                return Audit(False, f"ligne {i} : {problem}")
            prev = obj
        elif kind == "block":
            if expected:
                return Audit(False, f"ligne {i} : traces du bloc {prev and prev['seq']} manquantes")
            problem = _export_block_problem(obj, prev, header)
            if problem:
                return Audit(False, f"ligne {i} : {problem}")
            prev = obj
            expected = list(_in_window(obj["body"], header["start"], header["end"]))
        elif kind == "trace":
            if prev is None or not expected or obj.get("seq") != prev["seq"]:
                return Audit(False, f"ligne {i} : trace hors de tout bloc ou en trop")
            index, rec = expected.pop(0)
            if obj.get("index") != index or obj.get("trace") != rec:
                return Audit(False, f"ligne {i} : trace différente de celle du bloc {prev['seq']}")
            count += 1
        elif kind == "checkpoint":
            if expected:
                return Audit(False, f"ligne {i} : traces du bloc {prev and prev['seq']} manquantes")
            try:
                cp = parse(str(obj.get("jws", "")), jwks)
            except CheckpointError as exc:
                return Audit(False, f"ligne {i} : {exc}")
            if prev is None or cp.seq != prev["seq"] or cp.hash != prev["hash"] or cp.seq != header["checkpoint_seq"]:
                return Audit(False, "le point de contrôle signé ne désigne pas le dernier bloc exporté")
            return Audit(
                True, f"export intègre : {count} trace(s), blocs {header['first_seq']} à {cp.seq}", count, None, cp
            )
        else:
            return Audit(False, f"ligne {i} : type inconnu {kind!r}")
    return Audit(False, "point de contrôle signé absent (export tronqué)")


def _export_block_problem(
    obj: Mapping[str, Any], prev: Mapping[str, Any] | None, header: Mapping[str, Any], boundary: bool = False
) -> str | None:
    try:
        seq, n, ts_min, ts_max = int(obj["seq"]), int(obj["n"]), float(obj["ts_min"]), float(obj["ts_max"])
        body, prev_hash, digest = str(obj["body"]), str(obj["prev_hash"]), str(obj["hash"])
    except (KeyError, TypeError, ValueError):
        return "bloc incomplet"
    if boundary:
        if seq != header["first_seq"] - 1 or ts_max >= header["start"]:
            return "bloc précédant la fenêtre incohérent (blocs du début de la fenêtre omis)"
    elif prev is None and (seq != 1 or prev_hash != GENESIS or header["first_seq"] != 1):
        return "premier bloc sans son prédécesseur (blocs du début de la fenêtre omis)"
    if prev is not None and (seq != prev["seq"] + 1 or prev_hash != prev["hash"]):
        return f"bloc {seq} : maillon précédent incohérent (bloc supprimé ou inséré)"
    if block_digest(prev_hash, seq, n, ts_min, ts_max, body.encode()) != digest:
        return f"bloc {seq} : empreinte incorrecte (trace ou colonne modifiée)"
    stamps = [ts for ts, _ in orjson.loads(body)]
    if len(stamps) != n or not stamps or min(stamps) != ts_min or max(stamps) != ts_max:
        return f"bloc {seq} incohérent avec son contenu"
    return None
