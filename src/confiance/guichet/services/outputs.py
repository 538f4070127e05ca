"""Rows to output schemas (what the JSON API and web UI receive). Pure reads: no audit,
no writes, so any use case may render with them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import schemas as sc
from ..db import (
    Account,
    Candidature,
    CertificateRow,
    ChapterRow,
    Component,
    Evidence,
    Habilitation,
    Organisation,
    ReferentielVersion,
    Solution,
)
from ..domain import dependencies
from ..domain import parcours as pc
from ..domain.errors import DomainError
from ..domain.labels import label, label_of
from ..domain.model import (
    CandidatureStatus,
    ComponentKind,
    Level,
    Role,
    SolutionKind,
    environment_for,
    habilitation_state,
    needs_cnda,
)
from ..domain.referentiel import Catalogue, Requirement
from . import lookups
from .base import (
    ServiceCore,
)


def account_out(a: Account) -> sc.AccountOut:
    return sc.AccountOut.model_validate(a, from_attributes=True)


def solution_out(svc: ServiceCore, s: Session, sol: Solution) -> sc.SolutionOut:
    comps = s.execute(select(Component).where(Component.solution_id == sol.id).order_by(Component.id)).scalars().all()
    kinds = {ComponentKind(c.kind) for c in comps}
    return sc.SolutionOut(
        id=sol.id,
        organisation_id=sol.organisation_id,
        name=sol.name,
        kind=SolutionKind(sol.kind),
        components=[
            sc.ComponentOut(
                id=c.id, kind=ComponentKind(c.kind), name=c.name, needs_cnda=needs_cnda({ComponentKind(c.kind)})
            )
            for c in comps
        ],
        needs_cnda=needs_cnda(kinds),
        version=sol.row_version,
        in_use=lookups.solution_in_use(s, sol.id),
    )


def cand_out(
    svc: ServiceCore, s: Session, c: Candidature, cls: type[sc.CandidatureOut] = sc.CandidatureOut, **extra: Any
) -> Any:
    hab_id = s.scalar(select(Habilitation.id).where(Habilitation.candidature_id == c.id))
    return cls(
        id=c.id,
        organisation_id=c.organisation_id,
        role=Role(c.role),
        level=Level(c.level),
        path=c.path,
        environment=environment_for(Role(c.role)).value,
        solution_id=c.solution_id,
        proxy_solution_id=c.proxy_solution_id,
        osp_habilitation_id=c.osp_habilitation_id,
        software_name=c.software_name,
        software_version=c.software_version,
        description=c.description,
        nru_numbers=list(c.nru_numbers or []),
        maturity=dict(c.maturity or {}),
        commitments=dict(c.commitments or {}),
        status=c.status,
        status_label=label_of(CandidatureStatus, c.status),
        status_reason=c.status_reason,
        referentiel_version=c.referentiel_version,
        collaborators=list(c.collaborators or []),
        created_by=c.created_by,
        created_at=c.created_at,
        updated_at=c.updated_at,
        version=c.row_version,
        habilitation_id=hab_id,
        **extra,
    )


def snapshot(svc: ServiceCore, c: Candidature) -> dict[str, Any]:
    return {
        "status": c.status,
        "software_name": c.software_name,
        "software_version": c.software_version,
        "description": c.description,
        "nru_numbers": c.nru_numbers,
        "maturity": c.maturity,
        "version": c.row_version,
    }


def detail(svc: ServiceCore, s: Session, c: Candidature) -> sc.CandidatureDetail:
    cat = lookups.catalogue(svc, s, c.referentiel_version)
    evid = list(s.execute(select(Evidence).where(Evidence.candidature_id == c.id).order_by(Evidence.id)).scalars())
    chapters = []
    for ch in s.execute(select(ChapterRow).where(ChapterRow.candidature_id == c.id).order_by(ChapterRow.id)).scalars():
        chapters.append(chapter_out(svc, s, c, ch, cat, evid))
    certs = [
        cert_out(x)
        for x in s.execute(
            select(CertificateRow).where(CertificateRow.candidature_id == c.id).order_by(CertificateRow.id)
        ).scalars()
    ]
    detail: sc.CandidatureDetail = cand_out(
        svc,
        s,
        c,
        sc.CandidatureDetail,
        chapters=chapters,
        evidence=[evidence_out(e) for e in evid],
        parcours=checklist(svc, c),
        certificates=certs,
        relies_on=relied_on(svc, s, c),
    )
    return detail


def relied_on(svc: ServiceCore, s: Session, c: Candidature) -> list[sc.DependencyOut]:
    """What the dossier relies on (proxy/ELP, ELU, OSP): for each need of its profile, the
    best matching habilitation (a valid one, else the latest) with its state, so verifiers
    and the college read the whole chain, not identifiers."""
    try:
        needs = dependencies.needs_for(
            Role(c.role), c.solution_id, c.proxy_solution_id, c.osp_habilitation_id, svc.parcours.dependencies
        )
    except DomainError:
        return []
    now = svc.clock()
    views = lookups.hab_views(svc, s)
    out = []
    for need in needs:
        match = [
            v
            for v in views
            if v.role is need.role
            and (need.solution_id is None or v.solution_id == need.solution_id)
            and (need.habilitation_id is None or v.id == need.habilitation_id)
        ]
        if not match:
            out.append(sc.DependencyOut(label=need.label, role=need.role, habilitation=None))
            continue
        best = max(match, key=lambda v: (v.is_valid(now), v.valid_until))
        h = lookups.get(svc, s, Habilitation, best.id, "habilitation")
        state = habilitation_state(h.status, h.valid_until, h.at_risk, now)
        out.append(
            sc.DependencyOut(
                label=need.label,
                role=need.role,
                habilitation=hab_out(svc, s, h),
                state=state.value,
                state_label=label(state),
            )
        )
    return out


def evidence_out(e: Evidence) -> sc.EvidenceOut:
    return sc.EvidenceOut.model_validate(e, from_attributes=True)


def chapter_out(
    svc: ServiceCore,
    s: Session,
    c: Candidature,
    ch: ChapterRow,
    cat: Catalogue | None = None,
    evid: list[Evidence] | None = None,
) -> sc.ChapterOut:
    """``cat`` and ``evid`` spare the queries to a caller that already holds them (the dossier view)."""
    if cat is None:
        cat = lookups.catalogue(svc, s, c.referentiel_version)
    if evid is None:
        evid = list(s.execute(select(Evidence).where(Evidence.candidature_id == c.id)).scalars())
    missing = lookups.missing(cat, ch, evid)
    return sc.ChapterOut(
        chapter_id=ch.chapter_id,
        title=ch.title,
        requirement_ids=list(ch.requirement_ids),
        status=ch.status,
        reason=ch.reason,
        submitted_at=ch.submitted_at,
        decided_at=ch.decided_at,
        complete=not missing,
        missing=missing,
        version=ch.row_version,
    )


def checklist(svc: ServiceCore, c: Candidature) -> list[sc.StepOut]:
    items = pc.checklist(svc.parcours, c.path, Role(c.role), set(c.parcours_done or []))
    return [
        sc.StepOut(
            id=i.id,
            label=i.label,
            status=i.status.value,
            by_platform=i.by_platform,
            reachable=i.reachable,
            after_grant=i.after_grant,
        )
        for i in items
    ]


def cert_out(x: CertificateRow) -> sc.CertificateOut:
    return sc.CertificateOut(
        id=x.id,
        component_id=x.component_id,
        environment=x.environment,
        subject_dn=x.subject_dn,
        x5t_s256=x.x5t_s256,
        serial=x.serial,
        not_after=x.not_after,
        issued_at=x.issued_at,
        revoked=x.revoked_at is not None,
        cert_pem=x.cert_pem,
    )


def hab_out(svc: ServiceCore, s: Session, h: Habilitation) -> sc.HabilitationOut:
    org = s.get(Organisation, h.organisation_id)
    sol = s.get(Solution, h.solution_id)
    cand = s.get(Candidature, h.candidature_id)
    return sc.HabilitationOut(
        id=h.id,
        candidature_id=h.candidature_id,
        organisation_id=h.organisation_id,
        holder=org.name if org else "?",
        role=Role(h.role),
        environment=h.environment,
        solution_id=h.solution_id,
        solution_name=sol.name if sol else "?",
        granted_at=h.granted_at,
        valid_until=h.valid_until,
        status=h.status,
        status_reason=h.status_reason,
        valid=lookups.hab_view(h).is_valid(svc.clock()),
        at_risk=h.at_risk,
        at_risk_reason=h.at_risk_reason,
        relies_on=list(h.relies_on or []),
        version=h.row_version,
        software_name=cand.software_name if cand else "",
        software_version=cand.software_version if cand else "",
    )


def req_out(r: Requirement) -> sc.RequirementOut:
    return sc.RequirementOut(**r.as_dict())


def ref_out(svc: ServiceCore, row: ReferentielVersion) -> sc.ReferentielOut:
    cat = Catalogue.parse(row.content)
    return sc.ReferentielOut(
        version=cat.version,
        created_at=row.created_at,
        chapters=[{"id": c.id, "title": c.title} for c in cat.chapters],
        requirements=[req_out(r) for r in cat.requirements],
    )
