"""Changes to a dossier that several use cases make: firing a transition (with its
audit entry), flagging evidence when the declaration changes, syncing chapters with a
référentiel version, marking parcours steps done."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import (
    Candidature,
    ChapterRow,
    Evidence,
)
from ..domain import workflow as wf
from ..domain.model import (
    EvidenceKind,
    EvidenceStatus,
    Level,
    Role,
)
from ..domain.referentiel import Catalogue
from . import lookups
from .base import (
    Principal,
    ServiceCore,
)


def sync_chapters(svc: ServiceCore, s: Session, c: Candidature, cat: Catalogue) -> None:
    """Create/refresh the evidence chapters of a candidature from a catalogue version."""
    wanted = cat.chapters_for(Role(c.role), Level(c.level), lookups.solution_needs_cnda(svc, s, c.solution_id))
    existing = {
        ch.chapter_id: ch for ch in s.execute(select(ChapterRow).where(ChapterRow.candidature_id == c.id)).scalars()
    }
    for chap, reqs in wanted:
        ids = [r.id for r in reqs]
        row = existing.pop(chap.id, None)
        if row is None:
            s.add(
                ChapterRow(
                    candidature_id=c.id,
                    chapter_id=chap.id,
                    title=chap.title,
                    requirement_ids=ids,
                    status=wf.ChapterStatus.OPEN.value,
                )
            )
        elif row.requirement_ids != ids or row.title != chap.title:
            changed = row.requirement_ids != ids
            row.requirement_ids = ids
            row.title = chap.title
            if changed and row.status in (wf.ChapterStatus.SUBMITTED.value, wf.ChapterStatus.ACCEPTED.value):
                row.status = wf.fire(
                    wf.CHAPTER_TRANSITIONS,
                    "signaler_modification",
                    wf.ChapterStatus(row.status),
                    wf.Actor.SYSTEM,
                    "référentiel modifié",
                ).value
                row.reason = f"exigences modifiées par le référentiel {cat.version}"
    for row in existing.values():
        s.delete(row)
    s.flush()


def flag_evidence(svc: ServiceCore, s: Session, c: Candidature, kinds: set[EvidenceKind], why: str) -> None:
    """Declaration changed after deposit: flag evidence of these kinds and re-open their chapters."""
    if c.status not in (wf.CandidatureStatus.EVIDENCE.value, wf.CandidatureStatus.COLLEGE.value):
        return
    hit = list(
        s.execute(
            select(Evidence).where(
                Evidence.candidature_id == c.id,
                Evidence.status == EvidenceStatus.VALID.value,
                Evidence.kind.in_([k.value for k in kinds]),
            )
        ).scalars()
    )
    if not hit:
        return
    reqs = {e.requirement_id for e in hit}
    for e in hit:
        e.status = EvidenceStatus.TO_REVIEW.value
        e.review_reason = why
    for ch in s.execute(select(ChapterRow).where(ChapterRow.candidature_id == c.id)).scalars():
        if reqs & set(ch.requirement_ids) and ch.status in (
            wf.ChapterStatus.SUBMITTED.value,
            wf.ChapterStatus.ACCEPTED.value,
        ):
            ch.status = wf.fire(
                wf.CHAPTER_TRANSITIONS, "signaler_modification", wf.ChapterStatus(ch.status), wf.Actor.SYSTEM, why
            ).value
            ch.reason = why
    if c.status == wf.CandidatureStatus.COLLEGE.value:
        transition(svc, s, None, c, "rouvrir_preuves", wf.Actor.SYSTEM, why)
    svc.audit(s, None, "preuves.signaler", f"candidature:{c.id}", after={"evidence": [e.id for e in hit], "motif": why})


def transition(
    svc: ServiceCore,
    s: Session,
    actor: Principal | None,
    c: Candidature,
    name: str,
    as_: wf.Actor,
    reason: str | None = None,
) -> None:
    before = c.status
    c.status = wf.fire(wf.CANDIDATURE_TRANSITIONS, name, wf.CandidatureStatus(c.status), as_, reason).value
    c.status_reason = reason
    c.updated_at = svc.clock()
    s.flush()
    svc.audit(
        s,
        actor,
        f"candidature.{name}",
        f"candidature:{c.id}",
        before={"status": before},
        after={"status": c.status, "motif": reason},
    )


def chapter_transition(
    svc: ServiceCore,
    s: Session,
    actor: Principal,
    c: Candidature,
    ch: ChapterRow,
    name: str,
    as_: wf.Actor,
    reason: str | None,
) -> None:
    before = ch.status
    ch.status = wf.fire(wf.CHAPTER_TRANSITIONS, name, wf.ChapterStatus(ch.status), as_, reason).value
    ch.reason = reason
    if ch.status == wf.ChapterStatus.SUBMITTED.value:
        ch.submitted_at = svc.clock()
    elif as_ is wf.Actor.VERIFIER:
        ch.decided_at = svc.clock()
    s.flush()
    svc.audit(
        s,
        actor,
        f"chapitre.{name}",
        f"candidature:{c.id}/chapitre:{ch.chapter_id}",
        before={"status": before},
        after={"status": ch.status, "motif": reason},
    )


def mark_step(svc: ServiceCore, s: Session, c: Candidature, step_id: str) -> None:
    if step_id in (c.parcours_done or []):
        return
    if not any(st.id == step_id for st in svc.parcours.steps_for(c.path, Role(c.role))):
        return
    c.parcours_done = [*(c.parcours_done or []), step_id]
    s.flush()
    svc.audit(s, None, "parcours.etape_faite", f"candidature:{c.id}", after={"step": step_id})
