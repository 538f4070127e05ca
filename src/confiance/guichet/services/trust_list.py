"""The signed trust list of valid habilitations (and editors' test access), cached by
registry revision."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from confiance.core import trustlist_contract as tl

from ..db import (
    AuditHead,
    Candidature,
    CertificateRow,
    Component,
    Habilitation,
    Organisation,
    Solution,
)
from ..domain import workflow as wf
from ..domain.labels import ROLE_LABELS
from ..domain.model import (
    HabilitationStatus,
    Role,
    environment_for,
)
from .base import (
    ServiceCore,
)


def trust_list(svc: ServiceCore) -> tl.TrustList:
    """The currently valid habilitations, their holders and their components' certificates,
    as the typed contract of ``confiance.core.trustlist_contract`` (what ``admit`` reads)."""
    now = svc.clock()
    with svc.db.read() as s:
        habs = [
            h
            for h in s.execute(
                select(Habilitation)
                .where(Habilitation.status == HabilitationStatus.VALID.value)
                .order_by(Habilitation.id)
            ).scalars()
            if h.valid_until > now
        ]
        # a handful of set-wise queries, not a few per habilitation
        orgs = {o.id: o for o in s.execute(select(Organisation)).scalars()}
        sols = {x.id: x for x in s.execute(select(Solution)).scalars()}
        cands = {
            c.id: c
            for c in s.execute(
                select(Candidature).where(Candidature.id.in_([h.candidature_id for h in habs]))
            ).scalars()
        }
        comps_by_sol: dict[int, list[Component]] = {}
        for comp in s.execute(select(Component).order_by(Component.id)).scalars():
            comps_by_sol.setdefault(comp.solution_id, []).append(comp)
        certs: dict[tuple[int, str, int], list[tl.TrustedCertificate]] = {}
        rows = s.execute(
            select(CertificateRow, Candidature.organisation_id)
            .join(Candidature, Candidature.id == CertificateRow.candidature_id)
            .where(CertificateRow.revoked_at.is_(None))
            .order_by(CertificateRow.id)
        ).all()
        for cert, org_id in rows:
            certs.setdefault((cert.component_id, cert.environment, org_id), []).append(_trusted(cert))
        items = []
        for h in habs:
            org, sol, cand = orgs[h.organisation_id], sols[h.solution_id], cands[h.candidature_id]
            items.append(
                tl.HabilitationEntry(
                    id=h.id,
                    holder=tl.Holder(
                        name=org.name,
                        country=org.country,
                        siren=org.siren,
                        siret=org.siret,
                        registration_number=org.registration_number,
                    ),
                    role=h.role,
                    role_label=ROLE_LABELS[Role(h.role)],
                    environment=h.environment,
                    valid_from=h.granted_at,
                    valid_until=h.valid_until,
                    at_risk=h.at_risk,
                    at_risk_reason=h.at_risk_reason,
                    relies_on=list(h.relies_on or []),
                    solution=tl.SolutionRef(
                        id=sol.id, name=sol.name, software_name=cand.software_name, version=cand.software_version
                    ),
                    components=[
                        tl.ComponentEntry(
                            kind=comp.kind,
                            name=comp.name,
                            certificates=certs.get((comp.id, h.environment, h.organisation_id), []),
                        )
                        for comp in comps_by_sol.get(sol.id, [])
                    ],
                )
            )
        # Editors test in the sandbox before they are habilitated (parcours: test certificate,
        # then tests, then evidence): their test certificates are admitted in BAS while the
        # candidature is being instructed, and only then.
        in_instruction = (wf.CandidatureStatus.EVIDENCE.value, wf.CandidatureStatus.COLLEGE.value)
        test_access = []
        for c in s.execute(
            select(Candidature)
            .where(Candidature.status.in_(in_instruction), Candidature.role.in_([Role.ELU.value, Role.ELP.value]))
            .order_by(Candidature.id)
        ).scalars():
            test_certs = [
                _trusted(x)
                for x in s.execute(
                    select(CertificateRow)
                    .where(CertificateRow.candidature_id == c.id, CertificateRow.revoked_at.is_(None))
                    .order_by(CertificateRow.id)
                ).scalars()
            ]
            if test_certs:
                holder = orgs.get(c.organisation_id)
                test_access.append(
                    tl.TestAccess(
                        candidature_id=c.id,
                        role=c.role,
                        holder=holder.name if holder else "",
                        environment=environment_for(Role(c.role)).value,
                        certificates=test_certs,
                    )
                )
    iat = int(now.timestamp())
    return tl.TrustList(
        iss=svc.settings.issuer,
        iat=iat,
        exp=iat + svc.settings.trust_list_ttl_seconds,
        habilitations=items,
        test_access=test_access,
    )


def _trusted(x: CertificateRow) -> tl.TrustedCertificate:
    return tl.TrustedCertificate.model_validate(
        {"subject_dn": x.subject_dn, "x5t#S256": x.x5t_s256, "not_after": x.not_after}
    )


def trust_list_claims(svc: ServiceCore) -> dict[str, Any]:
    """The claims to sign: the typed list as JSON (the wire shape is the contract's)."""
    return trust_list(svc).to_claims()


def signed_trust_list(svc: ServiceCore) -> str:
    """The signed list, cached until the registry changes (every change appends to the audit
    trail, so its head sequence is the revision) or a listed habilitation expires."""
    now = svc.clock()
    with svc.db.read() as s:
        head = s.get(AuditHead, 1)
        revision = head.last_seq if head else 0
    cached = svc.trust_list_cache
    if cached is not None and cached[0] == revision and now < cached[1]:
        return cached[2]
    typed = trust_list(svc)
    token = svc.keys.sign(typed.to_claims(), alg=svc.keys.algs[0], typ=tl.TRUST_LIST_TYP)
    horizon = now + dt.timedelta(seconds=svc.settings.trust_list_ttl_seconds / 2)
    for item in typed.habilitations:
        horizon = min(horizon, item.valid_until)
    svc.trust_list_cache = (revision, horizon, token)
    return token


def jwks(svc: ServiceCore) -> dict[str, Any]:
    return svc.keys.jwks()
