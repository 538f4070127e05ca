"""Append-only, hash-chained audit trail stored next to the data it describes.

Each append happens in the caller's transaction, so an action and its audit row commit or
roll back together. The single ``audit_head`` row is locked while appending (``FOR UPDATE``
on PostgreSQL; SQLite serialises writers anyway) so two concurrent transactions cannot both
link to the same previous hash.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from confiance.core.hashchain import GENESIS, ChainCheck, link, verify_chain

from .db import AuditHead, AuditRow


def jsonable(value: Any) -> Any:
    """What a JSON column gives back, so the hash computed now matches the one recomputed later."""
    if value is None:
        return None
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


def record_of(row: AuditRow) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": row.at,
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "before": row.before,
        "after": row.after,
    }


def append(
    session: Session,
    *,
    at: dt.datetime,
    actor: str,
    action: str,
    target: str,
    before: Any = None,
    after: Any = None,
) -> AuditRow:
    head = session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one_or_none()
    if head is None:
        head = AuditHead(id=1, last_seq=0, last_hash=GENESIS)
        session.add(head)
        session.flush()
    row = AuditRow(
        seq=head.last_seq + 1,
        at=at.astimezone(dt.UTC).isoformat(),
        actor=actor[:300],
        action=action,
        target=target,
        before=jsonable(before),
        after=jsonable(after),
        prev_hash=head.last_hash,
        hash="",
    )
    row.hash = link(row.prev_hash, record_of(row))
    session.add(row)
    head.last_seq = row.seq
    head.last_hash = row.hash
    session.flush()
    return row


def verify(session: Session) -> ChainCheck:
    """Recompute every link; also check the head matches the last row (truncation at the end)."""
    rows = session.execute(select(AuditRow).order_by(AuditRow.seq)).scalars().all()
    check = verify_chain((record_of(r), r.prev_hash, r.hash) for r in rows)
    if not check.ok:
        return check
    head = session.get(AuditHead, 1)
    last = rows[-1].hash if rows else GENESIS
    if head is not None and (head.last_hash != last or head.last_seq != (rows[-1].seq if rows else 0)):
        return ChainCheck(False, check.checked, len(rows), "la fin de la piste d'audit a été tronquée")
    for i, r in enumerate(rows):
        if r.seq != i + 1:
            return ChainCheck(False, i, i, "numérotation discontinue (ligne supprimée)")
    return check
