"""Read models for the ANS list pages (queue, college, registry, audit): paginated SQL.

Why not the service's list functions: they return every row (up to their caps) and build
each output object with extra queries, which is right for the JSON API's small pages but
not for a verifier's queue over 10,000 dossiers. These queries are read-only, select only
the columns a list shows, filter and paginate in the database, and are used only by pages
restricted to ANS roles (checked by the route table before they run). Every *action* still
goes through ``GuichetService`` — nothing here writes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, func, literal, or_, select
from sqlalchemy.orm import Session

from ..db import (
    AuditRow,
    Candidature,
    CertificateRow,
    ChapterRow,
    Component,
    Evidence,
    Habilitation,
    Organisation,
    Solution,
)
from ..domain.model import CandidatureStatus, ChapterStatus, HabilitationStatus


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    total: int
    page: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, (self.total + self.size - 1) // self.size)


def _like(q: str) -> str:
    return "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _paged(s: Session, stmt: Any, page: int, size: int) -> Page:
    """One query for the page *and* the total (``count(*) over ()``): one scan, not two."""
    rows = [
        dict(r)
        for r in s.execute(
            stmt.add_columns(func.count().over().label("_total")).offset((page - 1) * size).limit(size)
        ).mappings()
    ]
    if rows:
        total = int(rows[0]["_total"])
    else:  # past the last page: the window saw no row, count separately
        total = s.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    for r in rows:
        r.pop("_total", None)
    return Page(rows, total, page, size)


class ReadModels:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _s(self) -> Session:
        return Session(self.engine)

    def queue(self, *, kind: str = "", role: str = "", q: str = "", page: int = 1, size: int = 50) -> Page:
        """Work awaiting a verifier: submitted chapters and submitted forms, oldest first.

        A chapter waits since its submission (``submitted_at``); a form since the
        candidature's last update (its submission). Ties: dossier, then chapter order.
        """
        with self._s() as s:
            chap = (
                select(
                    ChapterRow.candidature_id.label("cid"),
                    ChapterRow.chapter_id.label("chapter_id"),
                    ChapterRow.title.label("title"),
                    Candidature.role.label("role"),
                    Candidature.software_name.label("software"),
                    Candidature.software_version.label("version"),
                    Organisation.name.label("org"),
                    # Submitted when? (rows from before revision 0006 have no date: the
                    # candidature's last change stands in.)
                    func.coalesce(ChapterRow.submitted_at, Candidature.updated_at).label("since"),
                    ChapterRow.id.label("ord"),
                )
                .join(Candidature, Candidature.id == ChapterRow.candidature_id)
                .join(Organisation, Organisation.id == Candidature.organisation_id)
                .where(
                    ChapterRow.status == ChapterStatus.SUBMITTED.value,
                    Candidature.status == CandidatureStatus.EVIDENCE.value,
                )
            )
            form = (
                select(
                    Candidature.id.label("cid"),
                    literal(None, ChapterRow.chapter_id.type).label("chapter_id"),
                    literal("Formulaire administratif", ChapterRow.title.type).label("title"),
                    Candidature.role.label("role"),
                    Candidature.software_name.label("software"),
                    Candidature.software_version.label("version"),
                    Organisation.name.label("org"),
                    Candidature.updated_at.label("since"),
                    literal(0, ChapterRow.id.type).label("ord"),
                )
                .join(Organisation, Organisation.id == Candidature.organisation_id)
                .where(Candidature.status == CandidatureStatus.FORM_SUBMITTED.value)
            )
            if role:
                chap = chap.where(Candidature.role == role)
                form = form.where(Candidature.role == role)
            if q:
                cond = or_(
                    Organisation.name.ilike(_like(q), escape="\\"),
                    Candidature.software_name.ilike(_like(q), escape="\\"),
                )
                chap = chap.where(cond)
                form = form.where(cond)
            parts = [chap] if kind == "chapitre" else [form] if kind == "formulaire" else [chap, form]
            union = parts[0].union_all(*parts[1:]).subquery() if len(parts) > 1 else parts[0].subquery()
            stmt = select(union).order_by(union.c.since, union.c.cid, union.c.ord)
            return _paged(s, stmt, page, size)

    def college(self, *, page: int = 1, size: int = 50) -> Page:
        with self._s() as s:
            base = (
                select(
                    Candidature.id.label("cid"),
                    Candidature.role.label("role"),
                    Candidature.level.label("level"),
                    Candidature.software_name.label("software"),
                    Candidature.software_version.label("version"),
                    Candidature.row_version.label("row_version"),
                    Candidature.updated_at.label("since"),
                    Organisation.name.label("org"),
                )
                .join(Organisation, Organisation.id == Candidature.organisation_id)
                .where(Candidature.status == "college")
            )
            return _paged(s, base.order_by(Candidature.updated_at, Candidature.id), page, size)

    def registry(
        self,
        *,
        now: dt.datetime,
        q: str = "",
        view: str = "",
        role: str = "",
        expiring_days: int = 90,
        page: int = 1,
        size: int = 50,
    ) -> Page:
        """Habilitations: search by holder or solution; views: valid, expiring soon, at risk, all."""
        with self._s() as s:
            base = (
                select(
                    Habilitation.id,
                    Habilitation.role,
                    Habilitation.environment,
                    Habilitation.granted_at,
                    Habilitation.valid_until,
                    Habilitation.status,
                    Habilitation.status_reason,
                    Habilitation.at_risk,
                    Habilitation.at_risk_reason,
                    Habilitation.relies_on,
                    Habilitation.candidature_id,
                    Habilitation.row_version,
                    Organisation.name.label("holder"),
                    Solution.name.label("solution"),
                )
                .join(Organisation, Organisation.id == Habilitation.organisation_id)
                .join(Solution, Solution.id == Habilitation.solution_id)
            )
            if q:
                base = base.where(
                    or_(Organisation.name.ilike(_like(q), escape="\\"), Solution.name.ilike(_like(q), escape="\\"))
                )
            if role:
                base = base.where(Habilitation.role == role)
            valid = and_(Habilitation.status == HabilitationStatus.VALID.value, Habilitation.valid_until > now)
            if view == "valides":
                base = base.where(valid)
            elif view == "expirent":
                base = base.where(valid, Habilitation.valid_until <= now + dt.timedelta(days=expiring_days))
            elif view == "a_risque":
                base = base.where(Habilitation.at_risk.is_(True))
            order = Habilitation.valid_until if view == "expirent" else Habilitation.id.desc()
            return _paged(s, base.order_by(order), page, size)

    def audit(self, *, actor: str = "", action: str = "", target: str = "", page: int = 1, size: int = 50) -> Page:
        """Newest first; filters are prefix matches (they use the primary-key order otherwise)."""
        with self._s() as s:
            base = select(AuditRow)
            if actor:
                base = base.where(AuditRow.actor.ilike(_like(actor), escape="\\"))
            if action:
                base = base.where(AuditRow.action.like(action.replace("%", "") + "%"))
            if target:
                base = base.where(AuditRow.target.like(target.replace("%", "") + "%"))
            if actor or action or target:
                total = s.scalar(select(func.count()).select_from(base.subquery())) or 0
            else:
                total = s.scalar(select(func.max(AuditRow.seq))) or 0
            rows = s.execute(base.order_by(AuditRow.seq.desc()).offset((page - 1) * size).limit(size)).scalars()
            out = [
                {
                    "seq": r.seq,
                    "at": r.at,
                    "actor": r.actor,
                    "action": r.action,
                    "target": r.target,
                    "before": r.before,
                    "after": r.after,
                    "hash": r.hash,
                    "prev_hash": r.prev_hash,
                }
                for r in rows
            ]
            return Page(out, total, page, size)

    def evidence_data(self, candidature_id: int) -> dict[int, dict[str, Any]]:
        """Structured evidence content (pentest data, conformity report) for the ANS viewer."""
        with self._s() as s:
            return {
                e.id: dict(e.data or {})
                for e in s.execute(select(Evidence).where(Evidence.candidature_id == candidature_id)).scalars()
            }


def chapter_summary(engine: Engine, cids: list[int]) -> tuple[dict[int, tuple[int, int]], list[dict[str, Any]]]:
    """(accepted, total) chapters per candidature, and the chapters awaiting the candidate's answer.

    Used by the candidate dashboard for candidatures the service already listed for this
    account (so visibility is the service's): one query instead of a detail load per row.
    """
    if not cids:
        return {}, []
    with Session(engine) as s:
        rows = s.execute(
            select(
                ChapterRow.candidature_id, ChapterRow.chapter_id, ChapterRow.title, ChapterRow.status, ChapterRow.reason
            )
            .where(ChapterRow.candidature_id.in_(cids))
            .order_by(ChapterRow.candidature_id, ChapterRow.id)
        ).all()
    counts: dict[int, tuple[int, int]] = {}
    pending = []
    for cid, chapter_id, title, status, reason in rows:
        acc, tot = counts.get(cid, (0, 0))
        counts[cid] = (acc + (status == ChapterStatus.ACCEPTED), tot + 1)
        if status in (ChapterStatus.COMPLEMENT, ChapterStatus.REJECTED, ChapterStatus.TO_REVIEW):
            pending.append({"cid": cid, "chapter_id": chapter_id, "title": title, "status": status, "reason": reason})
    return counts, pending


def public_page(engine: Engine, now: dt.datetime, role: str, page: int, size: int) -> Page:
    """Valid habilitations with their components' certificates (what the trust list publishes)."""
    models = ReadModels(engine)
    pg = models.registry(now=now, view="valides", role=role, page=page, size=size)
    ids = [r["id"] for r in pg.rows]
    if not ids:
        return pg
    with Session(engine) as s:
        habs = {h.id: h for h in s.execute(select(Habilitation).where(Habilitation.id.in_(ids))).scalars()}
        sol_ids = {h.solution_id for h in habs.values()}
        comps = (
            s.execute(select(Component).where(Component.solution_id.in_(sol_ids)).order_by(Component.id))
            .scalars()
            .all()
        )
        certs = s.execute(
            select(CertificateRow, Candidature.organisation_id)
            .join(Candidature, Candidature.id == CertificateRow.candidature_id)
            .where(CertificateRow.component_id.in_([c.id for c in comps]), CertificateRow.revoked_at.is_(None))
        ).all()
        cands = {
            c.id: c
            for c in s.execute(
                select(Candidature).where(Candidature.id.in_([h.candidature_id for h in habs.values()]))
            ).scalars()
        }
    for r in pg.rows:
        h = habs[r["id"]]
        cand = cands.get(h.candidature_id)
        r["software"] = f"{cand.software_name} v{cand.software_version}" if cand else ""
        r["components"] = [
            {
                "kind": c.kind,
                "name": c.name,
                "certificates": [
                    x.subject_dn
                    for x, org in certs
                    if x.component_id == c.id and x.environment == h.environment and org == h.organisation_id
                ],
            }
            for c in comps
            if c.solution_id == h.solution_id
        ]
    return pg
