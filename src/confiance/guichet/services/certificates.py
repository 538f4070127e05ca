"""mTLS certificates ordered from a dossier through the PKI, and their revocation when
the habilitation is withdrawn."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
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
from ..domain import dependencies
from ..domain import parcours as pc
from ..domain import workflow as wf
from ..domain.errors import DomainError, IllegalTransition
from ..domain.model import (
    Environment,
    EvidenceKind,
    EvidenceStatus,
    Role,
)
from . import dossier, lookups, outputs
from .base import (
    Principal,
    ServiceCore,
    ServiceError,
    log,
    not_found,
)


def public_key_from_csr(csr_pem: str) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """The requester's public key from a PKCS#10 request whose signature proves they hold the
    private key. The subject of the certificate is set by the guichet, not by the CSR."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.strip().encode())
    except ValueError as exc:
        raise DomainError("csr_invalide", "la demande de certificat (CSR) n'est pas un PKCS#10 PEM lisible") from exc
    if not csr.is_signature_valid:
        raise DomainError("csr_invalide", "la signature de la demande de certificat (CSR) est invalide")
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in ("secp256r1", "secp384r1"):
        return key
    raise DomainError("csr_invalide", "clé refusée : RSA de 2048 bits au moins, ou EC P-256 / P-384")


def _struct_id(org: Organisation) -> str:
    return "3" + (org.siret or org.siren or re.sub(r"[^0-9A-Za-z]", "", org.registration_number or "")[:19]).ljust(
        8, "0"
    )


def _refuse_if_dependencies_broken(svc: ServiceCore, s: Session, c: Candidature) -> None:
    """Nothing is issued on the strength of a suspended, withdrawn or expired habilitation."""
    needs = dependencies.needs_for(
        Role(c.role), c.solution_id, c.proxy_solution_id, c.osp_habilitation_id, svc.parcours.dependencies
    )
    broken = dependencies.broken(needs, lookups.hab_views(svc, s), svc.clock())
    if broken:
        raise ServiceError(
            409,
            "dependances_invalides",
            "certificat refusé : ce dossier s'appuie sur une habilitation qui n'est plus valide : "
            + " ; ".join(broken),
            problems=broken,
        )


def _which(c: Candidature) -> tuple[str, Environment]:
    """Before the grant an editor orders its sandbox test certificate; after the grant every
    holder orders its production certificate (the step that follows the decision)."""
    if c.status == wf.CandidatureStatus.GRANTED.value:
        return "production_certificate", Environment.PRODUCTION
    if Role(c.role).is_editor:
        return "test_certificate", Environment.BAS
    raise IllegalTransition(
        "commande_impossible", "le certificat de production se commande une fois l'habilitation accordée"
    )


def _issue(
    svc: ServiceCore,
    s: Session,
    actor: Principal,
    c: Candidature,
    comp: Component,
    env: Environment,
    csr_pem: str | None,
) -> tuple[CertificateRow, str | None]:
    if svc.pki is None:
        raise ServiceError(503, "pki_indisponible", "aucune IGC n'est configurée sur ce guichet")
    if csr_pem is None and env is not Environment.BAS:
        raise DomainError(
            "csr_requise",
            "joignez la demande de certificat (CSR) : la clé privée de production reste chez vous, "
            "le guichet ne la génère que pour le bac à sable",
        )
    public_key = public_key_from_csr(csr_pem) if csr_pem is not None else None
    org = lookups.get(svc, s, Organisation, c.organisation_id, "structure")
    n = secrets.token_hex(4)  # unique name in a PKI possibly shared with other guichets
    try:
        issued = svc.pki.issue_client(
            _struct_id(org),
            comp.name.replace(" ", "-"),
            organization=org.name[:64],
            name=f"guichet-{c.id}-{comp.id}-{env.value.lower()}-{n}",
            public_key=public_key,
        )
    except PkiError as exc:
        raise DomainError("certificat_refuse", f"l'IGC refuse la demande : {exc}") from exc
    cert_pem = Path(issued.cert_path).read_text()
    key_pem = Path(issued.key_path).read_text() if issued.key_path else None
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
    return row, key_pem


def order_certificate(
    svc: ServiceCore, actor: Principal, cid: int, component_id: int, csr_pem: str | None = None
) -> sc.IssuedCertificateOut:
    """Test certificate (editors, sandbox, before the grant) or production certificate (every
    holder, after the grant, from a CSR), once the parcours step is reached."""

    def op(s: Session) -> sc.IssuedCertificateOut:
        c = lookups.cand_for_candidate(svc, s, actor, cid)
        role = Role(c.role)
        if c.status in (
            wf.CandidatureStatus.DRAFT.value,
            wf.CandidatureStatus.FORM_SUBMITTED.value,
            wf.CandidatureStatus.REFUSED.value,
            wf.CandidatureStatus.ABANDONED.value,
        ):
            raise IllegalTransition(
                "commande_impossible", "les certificats se commandent une fois le formulaire administratif validé"
            )
        step, env = _which(c)
        pc.require_reachable(svc.parcours, c.path, role, set(c.parcours_done or []), step)
        _refuse_if_dependencies_broken(svc, s, c)
        comp = lookups.get(svc, s, Component, component_id, "composant")
        if comp.solution_id != c.solution_id:
            raise DomainError("composant_etranger", "ce composant n'appartient pas à la solution de la candidature")
        row, key_pem = _issue(svc, s, actor, c, comp, env, csr_pem)
        dossier.mark_step(svc, s, c, step)
        kind = EvidenceKind.TEST_CERTIFICATE if env is Environment.BAS else EvidenceKind.PRODUCTION_CERTIFICATE
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
                "csr": csr_pem is not None,
            },
        )
        return sc.IssuedCertificateOut(**outputs.cert_out(row).model_dump(), key_pem=key_pem)

    return svc.run(op)


def renew_certificate(
    svc: ServiceCore, actor: Principal, cid: int, certificate_id: int, csr_pem: str | None = None
) -> sc.IssuedCertificateOut:
    """A new certificate for the same component and environment; the one it replaces is
    revoked (superseded) in the same transaction, so the trust list carries exactly one."""

    def op(s: Session) -> sc.IssuedCertificateOut:
        c = lookups.cand_for_candidate(svc, s, actor, cid)
        old = lookups.get(svc, s, CertificateRow, certificate_id, "certificat")
        if old.candidature_id != c.id:
            raise not_found("certificat")
        if old.revoked_at is not None:
            raise IllegalTransition("certificat_revoque", "ce certificat est révoqué : commandez-en un nouveau")
        if old.environment == Environment.PRODUCTION.value and c.status != wf.CandidatureStatus.GRANTED.value:
            raise IllegalTransition("commande_impossible", "le dossier n'est plus habilité")
        _refuse_if_dependencies_broken(svc, s, c)
        comp = lookups.get(svc, s, Component, old.component_id, "composant")
        row, key_pem = _issue(svc, s, actor, c, comp, Environment(old.environment), csr_pem)
        if svc.pki is not None:
            try:
                svc.pki.revoke(old.pki_name, "superseded")
            except PkiError as exc:
                log.warning("révocation du certificat %s : %s", old.pki_name, exc)
        old.revoked_at = svc.clock()
        s.flush()
        svc.audit(
            s,
            actor,
            "certificat.renouveler",
            f"candidature:{c.id}",
            before={"x5t#S256": old.x5t_s256},
            after={"x5t#S256": row.x5t_s256, "environment": row.environment, "csr": csr_pem is not None},
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
