"""Solutions (software) and their components, declared by editors; a component change
after deposit flags the evidence that depended on it."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from .. import schemas as sc
from ..db import (
    Candidature,
    CertificateRow,
    Component,
    Solution,
)
from ..domain.errors import DomainError
from ..domain.model import (
    ComponentKind,
    EvidenceKind,
    SolutionKind,
)
from . import base, dossier, lookups, outputs
from .base import (
    Principal,
    ServiceCore,
    conflict,
    forbidden,
    not_found,
)


def check_components(kind: SolutionKind, comps: list[sc.ComponentIn]) -> None:
    kinds = [c.kind for c in comps]
    if kind is SolutionKind.PROXY and ComponentKind.PROXY not in kinds:
        raise DomainError("composant_requis", "une solution proxy comporte un composant Proxy e-Santé (PROXY)")
    if kind is SolutionKind.PROXY and ComponentKind.LPS in kinds:
        raise DomainError(
            "composant_incoherent", "une solution proxy ne comporte que le proxy et ses modules métier (EAI)"
        )
    if kind is SolutionKind.USER and ComponentKind.LPS not in kinds:
        raise DomainError("composant_requis", "un logiciel utilisateur comporte un composant LPS")
    if kind is SolutionKind.USER and (ComponentKind.PROXY in kinds or ComponentKind.EAI in kinds):
        raise DomainError("composant_incoherent", "un logiciel utilisateur ne comporte pas de proxy ni de module EAI")
    names = [c.name for c in comps]
    if len(set(names)) != len(names):
        raise DomainError("composant_double", "deux composants portent le même nom")


def new_solution(svc: ServiceCore, s: Session, actor: Principal, data: sc.SolutionIn) -> Solution:
    """Declare a solution inside the caller's transaction (the wizard declares one with its
    candidature: a refused candidature must leave no solution behind)."""
    base.require_validated(actor)
    if actor.organisation_id is None:
        raise forbidden("seul un compte de structure déclare une solution")
    check_components(data.kind, data.components)
    sol = Solution(
        organisation_id=actor.organisation_id,
        name=data.name.strip(),
        kind=data.kind.value,
        created_at=svc.clock(),
    )
    s.add(sol)
    s.flush()
    for c in data.components:
        s.add(Component(solution_id=sol.id, kind=c.kind.value, name=c.name))
    s.flush()
    svc.audit(s, actor, "solution.creer", f"solution:{sol.id}", after=outputs.solution_out(svc, s, sol).model_dump())
    return sol


def create_solution(svc: ServiceCore, actor: Principal, data: sc.SolutionIn) -> sc.SolutionOut:
    return svc.run(lambda s: outputs.solution_out(svc, s, new_solution(svc, s, actor, data)))


def _own_unused(svc: ServiceCore, s: Session, actor: Principal, sid: int, version: int | None) -> Solution:
    """A solution of the caller's company that no dossier names yet: free to rename or delete."""
    base.require_validated(actor)
    sol = lookups.get(svc, s, Solution, sid, "solution")
    if sol.organisation_id != actor.organisation_id:
        raise not_found("solution")
    base.check_version(sol.row_version, version, "la solution")
    used = lookups.solution_in_use(s, sid)
    if used:
        raise conflict(
            "cette solution est citée par une candidature ou une habilitation : elle ne peut plus être renommée "
            "ni supprimée (ses composants restent modifiables)",
            code="solution_utilisee",
        )
    return sol


def rename_solution(svc: ServiceCore, actor: Principal, sid: int, data: sc.SolutionUpdateIn) -> sc.SolutionOut:
    def op(s: Session) -> sc.SolutionOut:
        sol = _own_unused(svc, s, actor, sid, data.version)
        before = sol.name
        sol.name = data.name.strip()
        s.flush()
        svc.audit(s, actor, "solution.renommer", f"solution:{sid}", before={"name": before}, after={"name": sol.name})
        return outputs.solution_out(svc, s, sol)

    return svc.run(op)


def delete_solution(svc: ServiceCore, actor: Principal, sid: int, version: int | None) -> None:
    def op(s: Session) -> None:
        sol = _own_unused(svc, s, actor, sid, version)
        before = outputs.solution_out(svc, s, sol).model_dump()
        s.execute(delete(Component).where(Component.solution_id == sid))
        s.delete(sol)
        s.flush()
        svc.audit(s, actor, "solution.supprimer", f"solution:{sid}", before=before)

    svc.run(op)


def get_solution(svc: ServiceCore, actor: Principal, sid: int) -> sc.SolutionOut:
    def op(s: Session) -> sc.SolutionOut:
        base.require_validated(actor)
        return outputs.solution_out(svc, s, lookups.get(svc, s, Solution, sid, "solution"))

    return svc.read(op)


def list_solutions(
    svc: ServiceCore, actor: Principal, kind: SolutionKind | None = None, mine: bool = False
) -> list[sc.SolutionOut]:
    """Solution names are public within the platform (an ELU names another company's proxy)."""

    def op(s: Session) -> list[sc.SolutionOut]:
        base.require_validated(actor)
        q = select(Solution).order_by(Solution.id)
        if kind is not None:
            q = q.where(Solution.kind == kind.value)
        if mine:
            q = q.where(Solution.organisation_id == (actor.organisation_id or 0))
        return [outputs.solution_out(svc, s, x) for x in s.execute(q.limit(1000)).scalars()]

    return svc.read(op)


def update_components(svc: ServiceCore, actor: Principal, sid: int, data: sc.ComponentsUpdateIn) -> sc.SolutionOut:
    """Declaration edit: components changed after deposit flag CNDA and certificate evidence for re-review."""

    def op(s: Session) -> sc.SolutionOut:
        base.require_validated(actor)
        sol = lookups.get(svc, s, Solution, sid, "solution")
        if sol.organisation_id != actor.organisation_id:
            raise not_found("solution")
        base.check_version(sol.row_version, data.version, "la solution")
        check_components(SolutionKind(sol.kind), data.components)
        before = outputs.solution_out(svc, s, sol)
        existing = {
            (c.kind, c.name): c for c in s.execute(select(Component).where(Component.solution_id == sid)).scalars()
        }
        wanted = {(c.kind.value, c.name) for c in data.components}
        for key, comp in existing.items():
            if key not in wanted:
                if s.scalar(select(CertificateRow.id).where(CertificateRow.component_id == comp.id)) is not None:
                    raise DomainError(
                        "composant_certifie", f"le composant {comp.name} a des certificats : il ne peut être retiré"
                    )
                s.delete(comp)
        for kind, name in wanted - set(existing):
            s.add(Component(solution_id=sid, kind=kind, name=name))
        flag_modified(sol, "name")  # force the UPDATE that bumps row_version (components live elsewhere)
        s.flush()
        after = outputs.solution_out(svc, s, sol)
        if before.components != after.components:
            for c in s.execute(select(Candidature).where(Candidature.solution_id == sid)).scalars():
                dossier.flag_evidence(
                    svc,
                    s,
                    c,
                    {EvidenceKind.CNDA, EvidenceKind.TEST_CERTIFICATE, EvidenceKind.PRODUCTION_CERTIFICATE},
                    "composants de la solution modifiés",
                )
        svc.audit(
            s,
            actor,
            "solution.modifier_composants",
            f"solution:{sid}",
            before=before.model_dump(),
            after=after.model_dump(),
        )
        return after

    return svc.run(op)
