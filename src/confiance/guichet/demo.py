"""Demo data: ANS staff, two companies, an ELP in evidence deposit, an ELU draft naming that proxy.

Seeded through the service layer (the same rules as real use), so the demo can never hold
a state the rules forbid. Idempotent: does nothing if the demo administrator exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from . import schemas as sc
from .db import Account
from .domain.identifiers import luhn_ok
from .domain.model import AnsRole, ComponentKind, EvidenceKind, OrgRole, Role, SolutionKind
from .services import GuichetService, Principal

DEMO_PASSWORD = "demo-guichet-2025"


def _siren(prefix8: str) -> str:
    return next(prefix8 + d for d in "0123456789" if luhn_ok(prefix8 + d))


@dataclass
class DemoAccounts:
    admin_token: str
    verifier_token: str
    college_token: str
    editor_token: str


def seed(service: GuichetService) -> DemoAccounts | None:
    with service.db.transaction() as s:
        if s.scalar(select(Account.id).where(Account.email == "admin@ans.demo")) is not None:
            return None
    for email, name, role in (
        ("admin@ans.demo", "Administratrice ANS", AnsRole.ADMIN),
        ("verificateur@ans.demo", "Vérificateur ANS", AnsRole.VERIFIER),
        ("college@ans.demo", "Membre du collège", AnsRole.COLLEGE),
    ):
        service.bootstrap_account(email, name, DEMO_PASSWORD, [role])
    proxy_org = sc.OrganisationIn(name="Proxy Santé Démo", country="FR", siren=_siren("12345678"))
    lps_org = sc.OrganisationIn(name="Logiciel Médical Démo", country="FR", siren=_siren("87654321"))
    service.bootstrap_account(
        "mandataire@proxy.demo", "Mandataire Proxy", DEMO_PASSWORD, org=proxy_org, org_role=OrgRole.MANDATAIRE
    )
    service.bootstrap_account(
        "mandataire@lps.demo", "Mandataire LPS", DEMO_PASSWORD, org=lps_org, org_role=OrgRole.MANDATAIRE
    )

    def who(email: str) -> Principal:
        tok = service.issue_token_for(email, "demo")
        p = service.authenticate(tok.access_token)
        assert p is not None
        return p

    verifier, proxy_ed, lps_ed = (
        who(e) for e in ("verificateur@ans.demo", "mandataire@proxy.demo", "mandataire@lps.demo")
    )
    proxy = service.create_solution(
        proxy_ed,
        sc.SolutionIn(
            name="Proxy e-Santé Démo",
            kind=SolutionKind.PROXY,
            components=[sc.ComponentIn(kind=ComponentKind.PROXY, name="proxy-demo")],
        ),
    )
    elp = service.create_candidature(
        proxy_ed,
        sc.CandidatureIn(role=Role.ELP, solution_id=proxy.id, software_name=proxy.name, software_version="1.0.0"),
    )
    service.submit_form(
        proxy_ed,
        elp.id,
        sc.CommitmentsIn(respect_referentiels_cgu=True, exactitude_informations=True, acceptation_audits=True),
    )
    service.validate_form(verifier, elp.id, sc.ActionIn())
    # documentary evidence deposited; pentest and conformity report are left for the demo user
    detail = service.get_candidature(proxy_ed, elp.id)
    for ch in detail.chapters:
        for rid in ch.requirement_ids:
            req = next(r for r in service.current_referentiel().requirements if r.id == rid)
            if req.evidence == ["document"]:
                service.deposit_evidence(
                    proxy_ed,
                    elp.id,
                    sc.EvidenceIn(
                        requirement_id=rid, kind=EvidenceKind.DOCUMENT, description=f"Démonstration : {req.text}"
                    ),
                )
    lps = service.create_solution(
        lps_ed,
        sc.SolutionIn(
            name="Logiciel de cabinet Démo",
            kind=SolutionKind.USER,
            components=[sc.ComponentIn(kind=ComponentKind.LPS, name="lps-demo")],
        ),
    )
    service.create_candidature(
        lps_ed,
        sc.CandidatureIn(
            role=Role.ELU,
            solution_id=lps.id,
            proxy_solution_id=proxy.id,
            software_name=lps.name,
            software_version="3.2",
        ),
    )
    return DemoAccounts(
        admin_token=service.issue_token_for("admin@ans.demo", "demo").access_token,
        verifier_token=service.issue_token_for("verificateur@ans.demo", "demo").access_token,
        college_token=service.issue_token_for("college@ans.demo", "demo").access_token,
        editor_token=service.issue_token_for("mandataire@lps.demo", "demo").access_token,
    )
