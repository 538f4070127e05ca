"""Drive the service (not the UI) to reach a state quickly: a granted habilitation.

Used to set up pages that need existing habilitations (dependency graph, at-risk views);
the UI journey itself is covered end to end in test_journey.py.
"""

from __future__ import annotations

import contextlib
from typing import Any

from confiance.core.jose import KeyStore
from confiance.guichet import schemas as sc
from confiance.guichet.domain.model import EvidenceKind, Role, SolutionKind
from confiance.guichet.services import GuichetService, Principal, ServiceError
from tests.guichet.helpers import PDF, conformity_report, pentest_payload


def principal(svc: GuichetService, email: str) -> Principal:
    p = svc.authenticate(svc.issue_token_for(email, "factory").access_token)
    assert p is not None
    return p


def solution(svc: GuichetService, who: Principal, name: str, proxy: bool) -> Any:
    kind = SolutionKind.PROXY if proxy else SolutionKind.USER
    comps = [sc.ComponentIn(kind="PROXY" if proxy else "LPS", name=name.lower().replace(" ", "-"))]
    return svc.create_solution(who, sc.SolutionIn(name=name, kind=kind, components=comps))


def complete_parcours(svc: GuichetService, who: Principal, cid: int) -> None:
    """Declare, in order, every step the candidate declares itself before the grant."""
    for step in svc.parcours_checklist(who, cid):
        if step.status != "fait" and not step.by_platform and not step.after_grant:
            svc.declare_step(who, cid, step.id)


def habilitate(
    svc: GuichetService,
    keys: KeyStore,
    who: Principal,
    verifier: Principal,
    college: Principal,
    role: Role,
    solution_id: int,
    name: str,
    **extra: Any,
) -> int:
    """File, instruct and grant a candidature through the service; returns the habilitation id."""
    version = "1.0"
    c = svc.create_candidature(
        who, sc.CandidatureIn(role=role, solution_id=solution_id, software_name=name, software_version=version, **extra)
    )
    c = svc.submit_form(
        who,
        c.id,
        sc.CommitmentsIn(respect_referentiels_cgu=True, exactitude_informations=True, acceptation_audits=True),
    )
    svc.validate_form(verifier, c.id, sc.ActionIn())
    detail = svc.get_candidature(who, c.id)
    ref = {r.id: r for r in svc.current_referentiel().requirements}
    # Bytes unique per dossier: the registry's file rows belong to the first uploader's
    # organisation, so identical bytes from another company would be refused.
    pdf = svc.upload_file(who, PDF + f"% {c.id}\n".encode(), "application/pdf").sha256
    txt = svc.upload_file(who, f"preuve {c.id}\n".encode(), "text/plain").sha256
    for step in detail.parcours:
        if (
            step.status != "fait"
            and not step.by_platform
            and step.id
            in (
                "isc_account",
                "psc_api_access",
                "authenticated_space",
                "bas_connection",
                "test_mie",
                "tests",
                "production_connection",
            )
        ):
            with contextlib.suppress(ServiceError):  # later steps may not be reachable yet
                svc.declare_step(who, c.id, step.id)
    for ch in detail.chapters:
        for rid in ch.requirement_ids:
            for kind in ref[rid].evidence:
                k = EvidenceKind(kind)
                if k is EvidenceKind.PENTEST:
                    data = sc.EvidenceIn(
                        requirement_id=rid,
                        kind=k,
                        file_sha256=pdf,
                        pentest=sc.PentestIn.model_validate(pentest_payload(name, version)),
                    )
                elif k is EvidenceKind.CONFORMITY:
                    data = sc.EvidenceIn(requirement_id=rid, kind=k, conformity_report=conformity_report(keys, version))
                elif k is EvidenceKind.CNDA:
                    data = sc.EvidenceIn(
                        requirement_id=rid,
                        kind=k,
                        file_sha256=pdf,
                        cnda=sc.CndaIn(number="CNDA-1", issued_on="2025-01-01"),
                    )  # type: ignore[arg-type]
                elif k in (EvidenceKind.TEST_CERTIFICATE, EvidenceKind.PRODUCTION_CERTIFICATE):
                    sol = svc.get_solution(who, solution_id)
                    svc.order_certificate(who, c.id, sol.components[0].id)
                    continue
                else:
                    data = sc.EvidenceIn(requirement_id=rid, kind=k, file_sha256=txt)
                svc.deposit_evidence(who, c.id, data)
    for ch in svc.get_candidature(who, c.id).chapters:
        svc.submit_chapter(who, c.id, ch.chapter_id, sc.ActionIn())
        svc.review_chapter(verifier, c.id, ch.chapter_id, sc.ChapterReviewIn(decision="accepter"))
    complete_parcours(svc, who, c.id)
    out = svc.decide(college, c.id, sc.DecisionIn(decision="accorder"))
    assert out.habilitation_id is not None
    return out.habilitation_id
