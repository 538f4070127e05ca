"""mTLS certificates ordered from a dossier through the PKI, and their revocation when
the habilitation is withdrawn."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from confiance.pki import PkiError

from .. import schemas as sc
from ..db import (
    Candidature,
    CertificateRow,
    ChapterRow,
    Component,
    Evidence,
    Habilitation,
    Organisation,
)
from ..domain import parcours as pc
from ..domain import workflow as wf
from ..domain.errors import DomainError, IllegalTransition
from ..domain.model import (
    EvidenceKind,
    EvidenceStatus,
    Role,
    environment_for,
)
from . import dossier, lookups, outputs
from .base import (
    Principal,
    ServiceCore,
    ServiceError,
    log,
)


def order_certificate(svc: ServiceCore, actor: Principal, cid: int, component_id: int) -> sc.IssuedCertificateOut:
    """Test certificate (editors, BAS) or production certificate (operators), once the parcours step is reached."""

    def op(s: Session) -> sc.IssuedCertificateOut:
        c = lookups.cand_for_candidate(svc, s, actor, cid)
        role = Role(c.role)
        step = "test_certificate" if role.is_editor else "production_certificate"
        if c.status in (
            wf.CandidatureStatus.DRAFT.value,
            wf.CandidatureStatus.FORM_SUBMITTED.value,
            wf.CandidatureStatus.REFUSED.value,
            wf.CandidatureStatus.ABANDONED.value,
        ):
            raise IllegalTransition(
                "commande_impossible", "les certificats se commandent une fois le formulaire administratif validé"
            )
        pc.require_reachable(svc.parcours, c.path, role, set(c.parcours_done or []), step)
        if svc.pki is None:
            raise ServiceError(503, "pki_indisponible", "aucune IGC n'est configurée sur ce guichet")
        comp = lookups.get(svc, s, Component, component_id, "composant")
        if comp.solution_id != c.solution_id:
            raise DomainError("composant_etranger", "ce composant n'appartient pas à la solution de la candidature")
        org = lookups.get(svc, s, Organisation, c.organisation_id, "structure")
        struct_id = "3" + (
            org.siret or org.siren or re.sub(r"[^0-9A-Za-z]", "", org.registration_number or "")[:19]
        ).ljust(8, "0")
        env = environment_for(role)
        n = secrets.token_hex(4)  # unique name in a PKI possibly shared with other guichets
        try:
            issued = svc.pki.issue_client(
                struct_id,
                comp.name.replace(" ", "-"),
                organization=org.name[:64],
                name=f"guichet-{c.id}-{comp.id}-{env.value.lower()}-{n}",
            )
        except PkiError as exc:
            raise DomainError("certificat_refuse", f"l'IGC refuse la demande : {exc}") from exc
        cert_pem = open(issued.cert_path).read()  # noqa: SIM115
        key_pem = open(issued.key_path).read()  # noqa: SIM115
        row = CertificateRow(
            candidature_id=c.id,
            component_id=comp.id,
            environment=env.value,
            pki_name=issued.name,
            serial=str(issued.serial),
            subject_dn=issued.subject_dn,
            x5t_s256=issued.x5t_s256,
            not_after=issued.not_after,
            cert_pem=cert_pem,
            issued_at=svc.clock(),
        )
        s.add(row)
        s.flush()
        dossier.mark_step(svc, s, c, step)
        kind = EvidenceKind.TEST_CERTIFICATE if role.is_editor else EvidenceKind.PRODUCTION_CERTIFICATE
        cat = lookups.catalogue(svc, s, c.referentiel_version)
        for ch in s.execute(select(ChapterRow).where(ChapterRow.candidature_id == c.id)).scalars():
            for rid in ch.requirement_ids:
                req = cat.by_id.get(rid)
                if (
                    req is not None
                    and kind in req.evidence
                    and wf.ChapterStatus(ch.status) in wf.EDITABLE_CHAPTER
                    and c.status == wf.CandidatureStatus.EVIDENCE.value
                ):
                    s.add(
                        Evidence(
                            candidature_id=c.id,
                            requirement_id=rid,
                            kind=kind.value,
                            data={"certificate_id": row.id, "subject_dn": row.subject_dn, "x5t#S256": row.x5t_s256},
                            checks={"emis_par": "IGC-Santé (test)"},
                            status=EvidenceStatus.VALID.value,
                            deposited_by=actor.account_id,
                            deposited_at=svc.clock(),
                        )
                    )
        svc.audit(
            s,
            actor,
            "certificat.commander",
            f"candidature:{c.id}",
            after={
                "component": comp.id,
                "environment": env.value,
                "subject_dn": row.subject_dn,
                "x5t#S256": row.x5t_s256,
            },
        )
        return sc.IssuedCertificateOut(**outputs.cert_out(row).model_dump(), key_pem=key_pem)

    return svc.run(op)


def revoke_certificates(svc: ServiceCore, s: Session, h: Habilitation) -> list[str]:
    """A withdrawn habilitation's certificates are revoked at the IGC (CRL rewritten).

    Services re-read the CRL at each handshake, so the certificates stop working
    everywhere, not only where the trust list is enforced. The ones revoked are those
    the trust list published for this habilitation: the holder's certificates for the
    solution's components in the habilitation's environment.
    """
    rows = s.execute(
        select(CertificateRow)
        .join(Candidature, Candidature.id == CertificateRow.candidature_id)
        .join(Component, Component.id == CertificateRow.component_id)
        .where(
            Component.solution_id == h.solution_id,
            CertificateRow.environment == h.environment,
            CertificateRow.revoked_at.is_(None),
            Candidature.organisation_id == h.organisation_id,
        )
    ).scalars()
    revoked = []
    for row in rows:
        if svc.pki is not None:
            try:
                svc.pki.revoke(row.pki_name, "cessationOfOperation")
            except PkiError as exc:  # already revoked by an operator: record it all the same
                log.warning("révocation du certificat %s : %s", row.pki_name, exc)
        row.revoked_at = svc.clock()
        revoked.append(row.subject_dn)
    s.flush()
    return revoked
