"""Reading and verifying the hash-chained audit trail; the notifications outbox."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import audit
from .. import schemas as sc
from ..db import (
    AuditRow,
    Candidature,
    Notification,
)
from ..domain.model import (
    AnsRole,
    OrgRole,
)
from . import base, lookups
from .base import (
    Principal,
    ServiceCore,
    forbidden,
    not_found,
)


def audit_entries(svc: ServiceCore, actor: Principal, target: str | None = None, limit: int = 200) -> list[sc.AuditOut]:
    def op(s: Session) -> list[sc.AuditOut]:
        if target and target.startswith("candidature:") and not actor.is_ans:
            try:
                cid = int(target.split(":", 1)[1].split("/", 1)[0])
            except ValueError:
                raise not_found("candidature") from None
            lookups.cand_for_read(svc, s, actor, cid)
        elif not actor.has(AnsRole.VERIFIER, AnsRole.COLLEGE, AnsRole.ADMIN):
            raise forbidden("la piste d'audit complète est réservée à l'ANS")
        q = select(AuditRow).order_by(AuditRow.seq.desc()).limit(limit)
        if target:
            q = q.where((AuditRow.target == target) | AuditRow.target.startswith(target + "/"))
        return [sc.AuditOut.model_validate(r) for r in s.execute(q).scalars()]

    return svc.read(op)


def verify_audit(svc: ServiceCore, actor: Principal | None = None) -> sc.AuditCheckOut:
    def op(s: Session) -> sc.AuditCheckOut:
        if actor is not None:
            base.require_ans(actor, AnsRole.ADMIN, AnsRole.VERIFIER, AnsRole.COLLEGE)
        r = audit.verify(s)
        return sc.AuditCheckOut.model_validate(r)

    return svc.read(op)


def notifications(svc: ServiceCore, actor: Principal, limit: int = 200) -> list[sc.NotificationOut]:
    def op(s: Session) -> list[sc.NotificationOut]:
        q = select(Notification).order_by(Notification.id.desc()).limit(limit)
        if not actor.is_ans:
            base.require_validated(actor)
            if actor.org_role is OrgRole.SALARIE:
                # a salarié reads the news of the dossiers they are on, not the whole company's
                mine = [
                    c.id
                    for c in s.execute(
                        select(Candidature).where(Candidature.organisation_id == actor.organisation_id)
                    ).scalars()
                    if c.created_by == actor.account_id or actor.account_id in (c.collaborators or [])
                ]
                q = q.where((Notification.account_id == actor.account_id) | Notification.candidature_id.in_(mine))
            else:
                q = q.where(
                    (Notification.organisation_id == actor.organisation_id)
                    | (Notification.account_id == actor.account_id)
                )
        return [sc.NotificationOut.model_validate(n) for n in s.execute(q).scalars()]

    return svc.read(op)


def pending_notifications(svc: ServiceCore, limit: int = 100) -> list[tuple[int, str, str]]:
    """Outbox relay: notifications not yet sent (a mailer marks them with ``mark_sent``)."""
    with svc.db.transaction() as s:
        return [
            (n.id, n.subject, n.body)
            for n in s.execute(
                select(Notification).where(Notification.sent_at.is_(None)).order_by(Notification.id).limit(limit)
            ).scalars()
        ]


def mark_sent(svc: ServiceCore, ids: Iterable[int]) -> None:
    with svc.db.transaction() as s:
        for i in ids:
            n = s.get(Notification, i)
            if n is not None and n.sent_at is None:
                n.sent_at = svc.clock()
