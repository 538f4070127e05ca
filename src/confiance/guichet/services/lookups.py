"""Finding rows the caller may see: the 404-not-403 rule for other companies' dossiers,
the référentiel catalogue cache, and the habilitation views the dependency rules read."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import (
    Account,
    Candidature,
    ChapterRow,
    Component,
    Evidence,
    FileGrant,
    Habilitation,
    ReferentielVersion,
)
from ..domain import dependencies
from ..domain.labels import label
from ..domain.model import (
    AnsRole,
    ComponentKind,
    EvidenceStatus,
    HabilitationStatus,
    OrgRole,
    Role,
    needs_cnda,
)
from ..domain.referentiel import Catalogue
from .base import (
    Principal,
    ServiceCore,
    forbidden,
    not_found,
)

T = TypeVar("T")


def catalogue(svc: ServiceCore, s: Session, version: str | None = None) -> Catalogue:
    if version is None:
        row = s.execute(select(ReferentielVersion).order_by(ReferentielVersion.id.desc()).limit(1)).scalar_one()
    else:
        if version in svc.catalogues:
            return svc.catalogues[version]
        row = s.execute(select(ReferentielVersion).where(ReferentielVersion.version == version)).scalar_one()
    cat = svc.catalogues.get(row.version)
    if cat is None:
        cat = Catalogue.parse(row.content)
        svc.catalogues[row.version] = cat
    return cat


def get(svc: ServiceCore, s: Session, model: type[T], ident: int, what: str) -> T:
    obj = s.get(model, ident)
    if obj is None:
        raise not_found(what)
    return obj


def cand_for_read(svc: ServiceCore, s: Session, actor: Principal, cid: int) -> Candidature:
    c = get(svc, s, Candidature, cid, "candidature")
    if actor.is_ans:
        return c
    check_member(svc, actor, c)
    return c


def check_member(svc: ServiceCore, actor: Principal, c: Candidature) -> None:
    if not actor.validated or actor.organisation_id != c.organisation_id:
        raise not_found("candidature")  # do not reveal other companies' dossiers
    if actor.org_role in (OrgRole.MANDATAIRE, OrgRole.REPRESENTANT):
        return
    if actor.account_id == c.created_by or actor.account_id in (c.collaborators or []):
        return
    raise forbidden("vous n'êtes ni l'auteur ni un collaborateur de cette candidature")


def cand_for_candidate(svc: ServiceCore, s: Session, actor: Principal, cid: int) -> Candidature:
    c = get(svc, s, Candidature, cid, "candidature")
    check_member(svc, actor, c)
    return c


def hab_views(svc: ServiceCore, s: Session) -> list[dependencies.HabView]:
    return [hab_view(h) for h in s.execute(select(Habilitation)).scalars()]


def hab_view(h: Habilitation) -> dependencies.HabView:
    return dependencies.HabView(
        h.id,
        Role(h.role),
        h.solution_id,
        h.organisation_id,
        HabilitationStatus(h.status),
        h.valid_until,
        tuple(h.relies_on or ()),
    )


def principal(svc: ServiceCore, a: Account) -> Principal:
    return Principal(
        a.id,
        a.email,
        a.organisation_id,
        OrgRole(a.org_role) if a.org_role else None,
        frozenset(AnsRole(r) for r in (a.ans_roles or [])),
        a.validated and a.active,
    )


def solution_needs_cnda(svc: ServiceCore, s: Session, solution_id: int) -> bool:
    kinds = {
        ComponentKind(k)
        for k in s.execute(select(Component.kind).where(Component.solution_id == solution_id)).scalars()
    }
    return needs_cnda(kinds)


def missing(cat: Catalogue, ch: ChapterRow, evid: list[Evidence]) -> list[str]:
    """Human-readable list of what a chapter still lacks (empty = complete)."""
    missing = []
    for rid in ch.requirement_ids:
        req = cat.by_id.get(rid)
        if req is None:
            continue
        for kind in req.evidence:
            if not any(
                e.requirement_id == rid and e.kind == kind.value and e.status == EvidenceStatus.VALID for e in evid
            ):
                missing.append(f"{rid} : {label(kind)}")
    return missing


def file_granted(s: Session, sha256: str, org_id: int | None) -> bool:
    if org_id is None:
        return False
    q = select(FileGrant.id).where(FileGrant.sha256 == sha256, FileGrant.organisation_id == org_id)
    return s.scalar(q) is not None


def chapter(svc: ServiceCore, s: Session, cid: int, chapter_id: str) -> ChapterRow:
    ch = s.execute(
        select(ChapterRow).where(ChapterRow.candidature_id == cid, ChapterRow.chapter_id == chapter_id)
    ).scalar_one_or_none()
    if ch is None:
        raise not_found("chapitre")
    return ch


def solution_in_use(s: Session, sid: int) -> bool:
    """Named by a candidature (as its solution or its proxy) or a habilitation."""
    q = select(Candidature.id).where((Candidature.solution_id == sid) | (Candidature.proxy_solution_id == sid))
    return (
        s.scalar(q.limit(1)) is not None
        or s.scalar(select(Habilitation.id).where(Habilitation.solution_id == sid).limit(1)) is not None
    )
