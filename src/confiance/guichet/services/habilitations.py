"""The college decision and the life of a habilitation: suspension, reinstatement,
withdrawal, expiry sweep, and the at-risk cascade on whatever relies on it."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import schemas as sc
from ..db import (
    Candidature,
    Habilitation,
    Organisation,
    Solution,
)
from ..domain import dependencies
from ..domain import parcours as pc
from ..domain import workflow as wf
from ..domain.errors import IllegalTransition
from ..domain.labels import label
from ..domain.model import (
    AnsRole,
    HabilitationStatus,
    Role,
    environment_for,
)
from . import base, certificates, dossier, lookups, outputs
from .base import (
    Principal,
    ServiceCore,
    ServiceError,
    add_years,
)


def decide(svc: ServiceCore, actor: Principal, cid: int, data: sc.DecisionIn) -> sc.CandidatureOut:
    """College decision. A grant is refused while a habilitation it relies on is not valid."""

    def op(s: Session) -> sc.CandidatureOut:
        base.require_ans(actor, AnsRole.COLLEGE)
        c = lookups.get(svc, s, Candidature, cid, "candidature")
        base.check_version(c.row_version, data.version, "la candidature")
        role = Role(c.role)
        if data.decision == "refuser":
            dossier.transition(svc, s, actor, c, "refuser", wf.Actor.COLLEGE, data.reason)
            svc.notify(
                s,
                "decision",
                f"Candidature n° {c.id} ({role.value}) refusée",
                data.reason or "",
                org_id=c.organisation_id,
                candidature_id=c.id,
            )
            out0: sc.CandidatureOut = outputs.cand_out(svc, s, c)
            return out0
        wf.fire(wf.CANDIDATURE_TRANSITIONS, "accorder", wf.CandidatureStatus(c.status), wf.Actor.COLLEGE)
        now = svc.clock()
        needs = dependencies.needs_for(
            role, c.solution_id, c.proxy_solution_id, c.osp_habilitation_id, svc.parcours.dependencies
        )
        missing = pc.missing_before_grant(svc.parcours, c.path, role, set(c.parcours_done or []))
        if missing:
            raise ServiceError(
                409,
                "parcours_incomplet",
                "habilitation impossible, étapes du parcours non faites : " + " ; ".join(missing),
                problems=missing,
            )
        found, problems = dependencies.resolve(needs, lookups.hab_views(svc, s), now)
        if problems:
            raise ServiceError(
                409, "dependances_invalides", "habilitation impossible : " + " ; ".join(problems), problems=problems
            )
        dossier.transition(svc, s, actor, c, "accorder", wf.Actor.COLLEGE, data.reason)
        h = Habilitation(
            candidature_id=c.id,
            organisation_id=c.organisation_id,
            role=role.value,
            environment=environment_for(role).value,
            solution_id=c.solution_id,
            granted_at=now,
            valid_until=add_years(now, svc.validity_years),
            status=HabilitationStatus.VALID.value,
            relies_on=found,
        )
        s.add(h)
        s.flush()
        if c.renews_habilitation_id:
            old = s.get(Habilitation, c.renews_habilitation_id)
            if old is not None and old.status in (HabilitationStatus.VALID.value, HabilitationStatus.EXPIRED.value):
                old.status = HabilitationStatus.RENEWED.value
                old.status_reason = f"renouvelée par l'habilitation n° {h.id}"
                for dep in s.execute(select(Habilitation)).scalars():
                    if old.id in (dep.relies_on or []):
                        dep.relies_on = [h.id if x == old.id else x for x in dep.relies_on]
        svc.audit(
            s,
            actor,
            "habilitation.accorder",
            f"habilitation:{h.id}",
            after=outputs.hab_out(svc, s, h).model_dump(mode="json"),
        )
        svc.notify(
            s,
            "decision",
            f"Habilitation {role.value} accordée (candidature n° {c.id})",
            f"valide jusqu'au {h.valid_until.date().isoformat()}",
            org_id=c.organisation_id,
            candidature_id=c.id,
        )
        out: sc.CandidatureOut = outputs.cand_out(svc, s, c)
        return out

    return svc.run(op)


def list_habilitations(
    svc: ServiceCore, actor: Principal, only_valid: bool = False, role: Role | None = None, q: str | None = None
) -> list[sc.HabilitationOut]:
    """Habilitations are public within the platform: operators rely on other companies'
    habilitated solutions and find them here, by profile and by editor, solution or version
    (``q``: every word must appear in one of them, case-insensitive)."""

    def op(s: Session) -> list[sc.HabilitationOut]:
        base.require_validated(actor)
        query = select(Habilitation).order_by(Habilitation.id).limit(5000)
        if role is not None:
            query = query.where(Habilitation.role == role.value)
        rows = list(s.execute(query).scalars())
        # strong references: the identity map is weak, so s.get() in hab_out finds these without SQL
        keep = [
            *s.execute(select(Organisation)).scalars(),
            *s.execute(select(Solution)).scalars(),
            *s.execute(select(Candidature).where(Candidature.id.in_([h.candidature_id for h in rows]))).scalars(),
        ]
        out = [outputs.hab_out(svc, s, h) for h in rows]
        del keep
        if only_valid:
            out = [h for h in out if h.valid]
        words = (q or "").casefold().split()
        if words:
            out = [
                h
                for h in out
                if all(
                    w in f"{h.holder} {h.solution_name} {h.software_name} {h.software_version}".casefold()
                    for w in words
                )
            ]
        return out

    return svc.read(op)


def get_habilitation(svc: ServiceCore, actor: Principal, hid: int) -> sc.HabilitationOut:
    def op(s: Session) -> sc.HabilitationOut:
        base.require_validated(actor)
        return outputs.hab_out(svc, s, lookups.get(svc, s, Habilitation, hid, "habilitation"))

    return svc.read(op)


def set_hab_status(
    svc: ServiceCore,
    actor: Principal | None,
    hid: int,
    data: sc.ReasonIn | None,
    allowed_from: set[HabilitationStatus],
    target: HabilitationStatus,
    action: str,
) -> sc.HabilitationOut:
    def op(s: Session) -> sc.HabilitationOut:
        if actor is not None:
            base.require_ans(actor, AnsRole.COLLEGE, AnsRole.ADMIN)
        h = lookups.get(svc, s, Habilitation, hid, "habilitation")
        if data is not None:
            base.check_version(h.row_version, data.version, "l'habilitation")
        cur = HabilitationStatus(h.status)
        if cur not in allowed_from:
            raise IllegalTransition(
                "transition_impossible", f"habilitation à l'état « {label(cur)} » : action « {action} » impossible"
            )
        before = outputs.hab_out(svc, s, h).model_dump(mode="json")
        h.status = target.value
        h.status_reason = data.reason if data else None
        s.flush()
        after = outputs.hab_out(svc, s, h).model_dump(mode="json")
        if target is HabilitationStatus.WITHDRAWN:
            after["certificats_revoques"] = certificates.revoke_certificates(svc, s, h)
        svc.audit(s, actor, f"habilitation.{action}", f"habilitation:{h.id}", before=before, after=after)
        svc.notify(
            s,
            "decision",
            f"Habilitation n° {h.id} ({h.role}) : {action}",
            data.reason if data else "",
            org_id=h.organisation_id,
            candidature_id=h.candidature_id,
        )
        if target is HabilitationStatus.VALID:
            clear_risks(svc, s)
        else:
            cascade(svc, s, [h.id], f"s'appuie sur l'habilitation n° {h.id} ({h.role}) {label(target)}")
        return outputs.hab_out(svc, s, h)

    return svc.run(op)


def suspend(svc: ServiceCore, actor: Principal, hid: int, data: sc.ReasonIn) -> sc.HabilitationOut:
    return set_hab_status(svc, actor, hid, data, {HabilitationStatus.VALID}, HabilitationStatus.SUSPENDED, "suspendre")


def reinstate(svc: ServiceCore, actor: Principal, hid: int, data: sc.ReasonIn) -> sc.HabilitationOut:
    return set_hab_status(svc, actor, hid, data, {HabilitationStatus.SUSPENDED}, HabilitationStatus.VALID, "retablir")


def withdraw(svc: ServiceCore, actor: Principal, hid: int, data: sc.ReasonIn) -> sc.HabilitationOut:
    return set_hab_status(
        svc,
        actor,
        hid,
        data,
        {HabilitationStatus.VALID, HabilitationStatus.SUSPENDED},
        HabilitationStatus.WITHDRAWN,
        "retirer",
    )


def cascade(svc: ServiceCore, s: Session, roots: list[int], why: str) -> list[int]:
    """Flag every habilitation relying (transitively) on ``roots`` at risk, and tell their holders."""
    views = lookups.hab_views(svc, s)
    hit = dependencies.dependents_closure(roots, views)
    flagged = []
    for hid in sorted(hit):
        h = s.get(Habilitation, hid)
        if (
            h is None
            or h.at_risk
            or h.status not in (HabilitationStatus.VALID.value, HabilitationStatus.SUSPENDED.value)
        ):
            continue
        h.at_risk = True
        h.at_risk_reason = why
        flagged.append(hid)
        svc.audit(
            s,
            None,
            "habilitation.signaler_risque",
            f"habilitation:{hid}",
            before={"at_risk": False},
            after={"at_risk": True, "motif": why},
        )
        svc.notify(
            s,
            "habilitation_a_risque",
            f"Habilitation n° {hid} ({h.role}) à risque",
            why,
            org_id=h.organisation_id,
            candidature_id=h.candidature_id,
        )
    s.flush()
    return flagged


def clear_risks(svc: ServiceCore, s: Session) -> None:
    views = {v.id: v for v in lookups.hab_views(svc, s)}
    now = svc.clock()
    for h in s.execute(select(Habilitation).where(Habilitation.at_risk.is_(True))).scalars():
        if not dependencies.still_at_risk(views[h.id], views, now):
            h.at_risk = False
            h.at_risk_reason = None
            svc.audit(
                s,
                None,
                "habilitation.lever_risque",
                f"habilitation:{h.id}",
                before={"at_risk": True},
                after={"at_risk": False},
            )
    s.flush()
