"""Candidatures: stage 1 (administrative form), verifier validation/return, abandon,
collaborators, and the parcours checklist the candidate declares."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import schemas as sc
from ..db import (
    Account,
    Candidature,
    Habilitation,
    Organisation,
    Solution,
)
from ..domain import dependencies
from ..domain import parcours as pc
from ..domain import workflow as wf
from ..domain.errors import DomainError, IllegalTransition
from ..domain.labels import label
from ..domain.model import (
    AnsRole,
    EvidenceKind,
    OrgRole,
    Role,
    SolutionKind,
    solution_kind_for,
)
from . import base, dossier, lookups, outputs, solutions
from .base import (
    Principal,
    ServiceCore,
    ServiceError,
    conflict,
    forbidden,
)


def create_candidature(svc: ServiceCore, actor: Principal, data: sc.CandidatureIn) -> sc.CandidatureOut:
    """Stage 1 opens. Operator candidatures need the editor habilitations they rely on to exist."""

    def op(s: Session) -> sc.CandidatureOut:
        base.require_validated(actor)
        if actor.organisation_id is None:
            raise forbidden("seul un compte de structure dépose une candidature")
        role = data.role
        if data.new_solution is not None:
            sol = solutions.new_solution(svc, s, actor, data.new_solution)
        else:
            sol = lookups.get(svc, s, Solution, data.solution_id or 0, "solution")
        if SolutionKind(sol.kind) is not solution_kind_for(role):
            raise DomainError(
                "solution_incoherente",
                f"une candidature {role.value} porte sur une solution de type « {label(solution_kind_for(role))} »",
            )
        if role.is_editor and sol.organisation_id != actor.organisation_id:
            raise forbidden("un éditeur candidate pour une solution de sa structure")
        if role is not Role.ELU and data.proxy_solution_id is not None:
            raise DomainError("champ_inattendu", "seule une candidature ELU nomme un proxy")
        if role is not Role.OSU and data.osp_habilitation_id is not None:
            raise DomainError("champ_inattendu", "seule une candidature OSU nomme une habilitation OSP")
        if data.proxy_solution_id is not None:
            proxy = lookups.get(svc, s, Solution, data.proxy_solution_id, "solution proxy")
            if SolutionKind(proxy.kind) is not SolutionKind.PROXY:
                raise DomainError("proxy_invalide", "la solution nommée comme proxy n'est pas un Proxy e-Santé")
        needs = dependencies.needs_for(
            role, sol.id, data.proxy_solution_id, data.osp_habilitation_id, svc.parcours.dependencies
        )
        found: list[int] = []
        if role.is_operator:
            found, problems = dependencies.resolve(needs, lookups.hab_views(svc, s), svc.clock())
            if problems:
                raise ServiceError(
                    409,
                    "dependances_absentes",
                    "le guichet opérateur n'ouvre qu'une fois les habilitations éditeur existantes : "
                    + " ; ".join(problems),
                    problems=problems,
                )
            if role is Role.OSU:
                check_osu_proxy(svc, s, found)
        active = sorted(st.value for st in wf.IN_PROGRESS)
        dup = s.scalar(
            select(Candidature.id).where(
                Candidature.organisation_id == actor.organisation_id,
                Candidature.role == role.value,
                Candidature.solution_id == sol.id,
                Candidature.proxy_solution_id == data.proxy_solution_id
                if data.proxy_solution_id
                else Candidature.proxy_solution_id.is_(None),
                Candidature.status.in_(active),
            )
        )
        if dup is not None:
            raise conflict(
                f"une candidature {role.value} est déjà en cours pour cette solution (n° {dup}) : un dossier par proxy",
                code="candidature_existante",
            )
        if data.renews_habilitation_id is not None:
            old = lookups.get(svc, s, Habilitation, data.renews_habilitation_id, "habilitation à renouveler")
            if old.organisation_id != actor.organisation_id or old.role != role.value or old.solution_id != sol.id:
                raise DomainError(
                    "renouvellement_incoherent",
                    "l'habilitation à renouveler doit être la vôtre, pour le même profil et la même solution",
                )
        cat = lookups.catalogue(svc, s)
        now = svc.clock()
        c = Candidature(
            organisation_id=actor.organisation_id,
            created_by=actor.account_id,
            role=role.value,
            level=data.level.value,
            path=data.path,
            solution_id=sol.id,
            proxy_solution_id=data.proxy_solution_id,
            osp_habilitation_id=data.osp_habilitation_id,
            software_name=data.software_name.strip(),
            software_version=data.software_version.strip(),
            description=data.description,
            nru_numbers=list(data.nru_numbers),
            maturity=dict(data.maturity),
            commitments={},
            status=wf.CandidatureStatus.DRAFT.value,
            referentiel_version=cat.version,
            parcours_done=["guichet_registration"] if data.path == "trust_space" else [],
            collaborators=[],
            renews_habilitation_id=data.renews_habilitation_id,
            created_at=now,
            updated_at=now,
        )
        s.add(c)
        s.flush()
        dossier.sync_chapters(svc, s, c, cat)
        svc.audit(
            s,
            actor,
            "candidature.creer",
            f"candidature:{c.id}",
            after={**outputs.snapshot(svc, c), "role": role.value, "solution_id": sol.id, "relies_on": found},
        )
        tell_relied_on(svc, s, actor, c, found)
        out: sc.CandidatureOut = outputs.cand_out(svc, s, c)
        return out

    return svc.run(op)


def tell_relied_on(svc: ServiceCore, s: Session, actor: Principal, c: Candidature, found: list[int]) -> None:
    """An operator declares it relies on another company's habilitation: that company is told
    who operates its solution (the link itself is the candidature and, at the grant, the
    habilitation's ``relies_on``)."""
    me = lookups.get(svc, s, Organisation, c.organisation_id, "structure")
    for hid in found:
        h = lookups.get(svc, s, Habilitation, hid, "habilitation")
        if h.organisation_id == c.organisation_id:
            continue
        sol = lookups.get(svc, s, Solution, h.solution_id, "solution")
        svc.notify(
            s,
            "dependance_declaree",
            f"{me.name} s'appuie sur votre habilitation {h.role} n° {h.id} ({sol.name})",
            f"Candidature {c.role} n° {c.id} : {me.name} demande à opérer « {c.software_name} » "
            f"version {c.software_version} en s'appuyant sur votre habilitation.",
            org_id=h.organisation_id,
            candidature_id=h.candidature_id,
        )


def check_osu_proxy(svc: ServiceCore, s: Session, found: list[int]) -> None:
    """The proxy operator an OSU names must operate the proxy its user software was habilitated with."""
    habs = [lookups.get(svc, s, Habilitation, i, "habilitation") for i in found]
    elu = next(h for h in habs if h.role == Role.ELU.value)
    osp = next(h for h in habs if h.role == Role.OSP.value)
    elu_cand = lookups.get(svc, s, Candidature, elu.candidature_id, "candidature")
    if elu_cand.proxy_solution_id != osp.solution_id:
        proxies = {x.id: x.name for x in s.execute(select(Solution)).scalars()}
        raise DomainError(
            "osp_incoherent",
            f"l'opérateur de proxy nommé opère « {proxies.get(osp.solution_id, '?')} », "
            f"alors que le logiciel est habilité avec le proxy « {proxies.get(elu_cand.proxy_solution_id or 0, '?')} »",
        )


def list_candidatures(
    svc: ServiceCore, actor: Principal, status: wf.CandidatureStatus | None = None
) -> list[sc.CandidatureOut]:
    def op(s: Session) -> list[sc.CandidatureOut]:
        q = select(Candidature).order_by(Candidature.id)
        if not actor.is_ans:
            base.require_validated(actor)
            q = q.where(Candidature.organisation_id == (actor.organisation_id or 0))
        if status is not None:
            q = q.where(Candidature.status == status.value)
        rows = list(s.execute(q.limit(1000)).scalars())
        if not actor.is_ans and actor.org_role is OrgRole.SALARIE:
            rows = [c for c in rows if c.created_by == actor.account_id or actor.account_id in (c.collaborators or [])]
        return [outputs.cand_out(svc, s, c) for c in rows]

    return svc.read(op)


def get_candidature(svc: ServiceCore, actor: Principal, cid: int) -> sc.CandidatureDetail:
    def op(s: Session) -> sc.CandidatureDetail:
        c = lookups.cand_for_read(svc, s, actor, cid)
        return outputs.detail(svc, s, c)

    return svc.read(op)


def update_form(svc: ServiceCore, actor: Principal, cid: int, data: sc.FormUpdateIn) -> sc.CandidatureOut:
    """Edit the declaration. After deposit, affected evidence is flagged for re-review."""

    def op(s: Session) -> sc.CandidatureOut:
        c = lookups.cand_for_candidate(svc, s, actor, cid)
        base.check_version(c.row_version, data.version, "la candidature")
        st = wf.CandidatureStatus(c.status)
        if not wf.can_edit_form(st):
            raise IllegalTransition(
                "formulaire_verrouille", f"le formulaire n'est pas modifiable à l'état « {label(st)} »"
            )
        before = outputs.snapshot(svc, c)
        changes = data.model_dump(exclude_unset=True, exclude={"version"})
        for key, value in changes.items():
            if value is not None:
                setattr(c, key, value.strip() if isinstance(value, str) and key != "description" else value)
        changed = {k for k in changes if before.get(k) != getattr(c, k)}
        if not changed:
            out0: sc.CandidatureOut = outputs.cand_out(svc, s, c)
            return out0
        c.updated_at = svc.clock()
        if st in (wf.CandidatureStatus.EVIDENCE, wf.CandidatureStatus.COLLEGE) and changed & {
            "software_name",
            "software_version",
        }:
            dossier.flag_evidence(
                svc,
                s,
                c,
                {EvidenceKind.PENTEST, EvidenceKind.CONFORMITY},
                "nom ou version du logiciel modifiés après le dépôt",
            )
        s.flush()
        svc.audit(
            s,
            actor,
            "candidature.modifier_formulaire",
            f"candidature:{c.id}",
            before=before,
            after=outputs.snapshot(svc, c),
        )
        out: sc.CandidatureOut = outputs.cand_out(svc, s, c)
        return out

    return svc.run(op)


def submit_form(svc: ServiceCore, actor: Principal, cid: int, data: sc.CommitmentsIn) -> sc.CandidatureOut:
    def op(s: Session) -> sc.CandidatureOut:
        c = lookups.cand_for_candidate(svc, s, actor, cid)
        base.check_version(c.row_version, data.version, "la candidature")
        if not (data.respect_referentiels_cgu and data.exactitude_informations and data.acceptation_audits):
            raise DomainError(
                "engagements_requis",
                "les trois engagements sont obligatoires : respect des référentiels PSC et des CGU, exactitude des informations, preuves et contrôles, respect du processus d'audit",
            )
        dossier.transition(svc, s, actor, c, "soumettre_formulaire", wf.Actor.CANDIDATE)
        c.commitments = {
            "respect_referentiels_cgu": True,
            "exactitude_informations": True,
            "acceptation_audits": True,
            "accepted_by": actor.account_id,
            "accepted_at": svc.clock().isoformat(),
        }
        svc.audit(s, actor, "candidature.accepter_engagements", f"candidature:{c.id}", after=c.commitments)
        out: sc.CandidatureOut = outputs.cand_out(svc, s, c)
        return out

    return svc.run(op)


def validate_form(svc: ServiceCore, actor: Principal, cid: int, data: sc.ActionIn) -> sc.CandidatureOut:
    return verifier_action(svc, actor, cid, data.version, "valider_formulaire", data.reason)


def return_form(svc: ServiceCore, actor: Principal, cid: int, data: sc.ReasonIn) -> sc.CandidatureOut:
    return verifier_action(svc, actor, cid, data.version, "renvoyer_formulaire", data.reason)


def verifier_action(
    svc: ServiceCore, actor: Principal, cid: int, version: int | None, name: str, reason: str | None
) -> sc.CandidatureOut:
    def op(s: Session) -> sc.CandidatureOut:
        base.require_ans(actor, AnsRole.VERIFIER)
        c = lookups.get(svc, s, Candidature, cid, "candidature")
        base.check_version(c.row_version, version, "la candidature")
        dossier.transition(svc, s, actor, c, name, wf.Actor.VERIFIER, reason)
        if name == "renvoyer_formulaire":
            svc.notify(
                s,
                "complement_demande",
                f"Candidature n° {c.id} : formulaire à compléter",
                reason or "",
                org_id=c.organisation_id,
                candidature_id=c.id,
            )
        out: sc.CandidatureOut = outputs.cand_out(svc, s, c)
        return out

    return svc.run(op)


def abandon(svc: ServiceCore, actor: Principal, cid: int, data: sc.ActionIn) -> sc.CandidatureOut:
    def op(s: Session) -> sc.CandidatureOut:
        c = lookups.cand_for_candidate(svc, s, actor, cid)
        base.check_version(c.row_version, data.version, "la candidature")
        dossier.transition(svc, s, actor, c, "abandonner", wf.Actor.CANDIDATE, data.reason)
        out: sc.CandidatureOut = outputs.cand_out(svc, s, c)
        return out

    return svc.run(op)


def add_collaborator(svc: ServiceCore, actor: Principal, cid: int, data: sc.CollaboratorIn) -> sc.CandidatureOut:
    def op(s: Session) -> sc.CandidatureOut:
        c = lookups.cand_for_candidate(svc, s, actor, cid)
        acc = lookups.get(svc, s, Account, data.account_id, "compte")
        if acc.organisation_id != c.organisation_id or not acc.validated:
            raise DomainError("collaborateur_invalide", "un collaborateur est un compte validé de la même structure")
        if acc.id in (c.collaborators or []):
            raise conflict("ce compte collabore déjà à la candidature", code="deja_collaborateur")
        c.collaborators = [*(c.collaborators or []), acc.id]
        c.updated_at = svc.clock()
        s.flush()
        svc.audit(s, actor, "candidature.ajouter_collaborateur", f"candidature:{c.id}", after={"account_id": acc.id})
        out: sc.CandidatureOut = outputs.cand_out(svc, s, c)
        return out

    return svc.run(op)


def parcours_checklist(svc: ServiceCore, actor: Principal, cid: int) -> list[sc.StepOut]:
    return svc.read(lambda s: outputs.checklist(svc, lookups.cand_for_read(svc, s, actor, cid)))


def declare_step(svc: ServiceCore, actor: Principal, cid: int, step_id: str) -> list[sc.StepOut]:
    """The candidate declares a step done; steps the platform completes itself are refused."""

    def op(s: Session) -> list[sc.StepOut]:
        c = lookups.cand_for_candidate(svc, s, actor, cid)
        if step_id in pc.PLATFORM_STEPS:
            raise DomainError("etape_plateforme", "cette étape est réalisée par la plateforme elle-même")
        if step_id in (c.parcours_done or []):
            raise conflict("étape déjà déclarée faite", code="etape_faite")
        pc.require_reachable(svc.parcours, c.path, Role(c.role), set(c.parcours_done or []), step_id)
        if svc.parcours.step(step_id).after_grant and c.status != wf.CandidatureStatus.GRANTED.value:
            raise IllegalTransition(
                "etape_apres_habilitation", "cette étape suit l'habilitation : attendez la décision du collège"
            )
        c.parcours_done = [*(c.parcours_done or []), step_id]
        c.updated_at = svc.clock()
        s.flush()
        svc.audit(s, actor, "parcours.declarer_etape", f"candidature:{c.id}", after={"step": step_id})
        return outputs.checklist(svc, c)

    return svc.run(op)
