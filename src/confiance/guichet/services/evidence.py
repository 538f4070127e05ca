"""Files and evidence (stage 2): uploads, executable checks of pentest / conformity /
CNDA evidence at deposit, chapter submission and review."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import schemas as sc
from ..db import (
    Candidature,
    ChapterRow,
    Evidence,
    FileGrant,
    PassiProvider,
    StoredFile,
)
from ..domain import conformity, pentest, pentest_pdf, pentest_signature
from ..domain import workflow as wf
from ..domain.errors import DomainError, IllegalTransition
from ..domain.labels import MEDIA, label, label_of
from ..domain.model import (
    AnsRole,
    CandidatureStatus,
    ChapterStatus,
    EvidenceKind,
    EvidenceStatus,
    Role,
)
from ..domain.referentiel import Requirement
from ..files import check_content
from . import base, dossier, lookups, outputs
from .base import (
    Principal,
    ServiceCore,
    ServiceError,
    not_found,
)


def upload_file(svc: ServiceCore, actor: Principal, data: bytes, content_type: str) -> sc.FileOut:
    def op(s: Session) -> sc.FileOut:
        base.require_validated(actor)
        ctype = check_content(data, content_type, svc.settings.max_upload_bytes)
        digest = svc.files.put(data)
        row = s.get(StoredFile, digest)
        if row is None:
            row = StoredFile(
                sha256=digest,
                size=len(data),
                content_type=ctype,
                organisation_id=actor.organisation_id,
                uploaded_by=actor.account_id,
                uploaded_at=svc.clock(),
            )
            s.add(row)
            s.flush()
            svc.audit(
                s, actor, "fichier.deposer", f"fichier:{digest}", after={"size": len(data), "content_type": ctype}
            )
        if actor.organisation_id is not None and not lookups.file_granted(s, digest, actor.organisation_id):
            s.add(FileGrant(sha256=digest, organisation_id=actor.organisation_id, granted_at=svc.clock()))
        return sc.FileOut(sha256=digest, size=row.size, content_type=row.content_type)

    return svc.run(op)


def read_file(svc: ServiceCore, actor: Principal, sha256: str) -> tuple[bytes, str]:
    def op(s: Session) -> tuple[bytes, str]:
        base.require_validated(actor)
        row = s.get(StoredFile, sha256)
        if row is None or (not actor.is_ans and not lookups.file_granted(s, sha256, actor.organisation_id)):
            raise not_found("fichier")
        return svc.files.get(sha256), row.content_type

    return svc.read(op)


def deposit_evidence(svc: ServiceCore, actor: Principal, cid: int, data: sc.EvidenceIn) -> sc.EvidenceOut:
    """Deposit one piece of evidence; executable checks run now and refuse ineligible evidence."""

    def op(s: Session) -> sc.EvidenceOut:
        c = lookups.cand_for_candidate(svc, s, actor, cid)
        if c.status != wf.CandidatureStatus.EVIDENCE.value:
            raise IllegalTransition(
                "depot_ferme",
                f"le dépôt de preuves n'est pas ouvert (état « {label_of(CandidatureStatus, c.status)} ») : il s'ouvre quand un vérificateur a validé le formulaire administratif",
            )
        cat = lookups.catalogue(svc, s, c.referentiel_version)
        req = cat.by_id.get(data.requirement_id)
        chapter = next(
            (
                ch
                for ch in s.execute(select(ChapterRow).where(ChapterRow.candidature_id == c.id)).scalars()
                if data.requirement_id in ch.requirement_ids
            ),
            None,
        )
        if req is None or chapter is None:
            raise DomainError(
                "exigence_inconnue", f"l'exigence {data.requirement_id} ne s'applique pas à cette candidature"
            )
        if data.kind not in req.evidence:
            raise DomainError(
                "preuve_inattendue", f"l'exigence {req.id} attend : {', '.join(label(k) for k in req.evidence)}"
            )
        if data.kind in (EvidenceKind.TEST_CERTIFICATE, EvidenceKind.PRODUCTION_CERTIFICATE):
            raise DomainError(
                "preuve_plateforme",
                "les certificats sont commandés via le guichet (POST …/certificats), pas déposés",
            )
        if wf.ChapterStatus(chapter.status) not in wf.EDITABLE_CHAPTER:
            raise IllegalTransition(
                "chapitre_verrouille",
                f"le chapitre « {chapter.title} » est à l'état « {label_of(ChapterStatus, chapter.status)} » : dépôt impossible",
            )
        if data.file_sha256 is not None:
            f = s.get(StoredFile, data.file_sha256)
            if f is None or not lookups.file_granted(s, f.sha256, c.organisation_id):
                raise DomainError("fichier_inconnu", "fichier inconnu : déposez-le d'abord (POST /files)")
        checks, payload = check_evidence(svc, s, c, req, data)
        # a new deposit supersedes the previous ones for the same requirement and kind
        for old in s.execute(
            select(Evidence).where(
                Evidence.candidature_id == c.id,
                Evidence.requirement_id == req.id,
                Evidence.kind == data.kind.value,
                Evidence.status != EvidenceStatus.REPLACED.value,
            )
        ).scalars():
            old.status = EvidenceStatus.REPLACED.value
        e = Evidence(
            candidature_id=c.id,
            requirement_id=req.id,
            kind=data.kind.value,
            file_sha256=data.file_sha256,
            file_name=safe_file_name(data.file_name) if data.file_sha256 else None,
            data=payload,
            checks=checks,
            status=EvidenceStatus.VALID.value,
            deposited_by=actor.account_id,
            deposited_at=svc.clock(),
        )
        s.add(e)
        s.flush()
        svc.audit(
            s,
            actor,
            "preuve.deposer",
            f"candidature:{c.id}",
            after={
                "evidence": e.id,
                "requirement": req.id,
                "kind": e.kind,
                "file": e.file_sha256,
                "checks": checks,
            },
        )
        return outputs.evidence_out(e)

    return svc.run(op)


def safe_file_name(name: str | None) -> str | None:
    """The base name as deposited, without path or control characters (it is echoed in a
    Content-Disposition header)."""
    if not name:
        return None
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable() and ch not in '"<>;').strip()
    return cleaned[:200] or None


def check_evidence(
    svc: ServiceCore, s: Session, c: Candidature, req: Requirement, data: sc.EvidenceIn
) -> tuple[dict[str, Any], dict[str, Any]]:
    today = svc.clock().date()
    if data.kind is EvidenceKind.PENTEST:
        if data.pentest is None:
            raise DomainError(
                "donnees_requises", "un test d'intrusion se dépose avec ses données structurées (champ « pentest »)"
            )
        require_file(svc, s, data.file_sha256, "application/pdf", "le rapport de test d'intrusion signé (PDF)")
        p = data.pentest
        report = p.to_report()
        passi = set(s.execute(select(PassiProvider.name).where(PassiProvider.active.is_(True))).scalars())
        verdict = pentest.check_report(
            report,
            role=Role(c.role),
            software_name=c.software_name,
            software_version=c.software_version,
            passi_providers=passi,
            rules=svc.parcours.pentest,
            today=today,
        )
        if not verdict.accepted:
            raise ServiceError(
                422,
                "test_intrusion_refuse",
                "test d'intrusion refusé : " + " ; ".join(verdict.problems),
                problems=list(verdict.problems),
                ko=verdict.ko_counts,
            )
        # the PDF itself: does its first page state what was typed, and is it signed by a
        # PASSI auditor, unaltered since (PAdES, chained to a trusted root)?
        raw = svc.files.get(data.file_sha256 or "")
        text, _ = pentest_pdf.read_report(raw)
        roots = pentest_signature.load_roots(svc.pentest_roots())
        crls = pentest_signature.load_crls(svc.pentest_crls())
        sig = pentest_signature.verify(raw, roots, passi, svc.clock(), crls)
        pdf = pentest_pdf.check_first_page(text, sig.signed, p.application_name, p.application_version, True)
        checks: dict[str, Any] = {
            "eligible": True,
            "ko": verdict.ko_counts,
            "checked_on": today.isoformat(),
            "pdf": {"lisible": pdf.readable, "signe": sig.signed, "signature_valide": sig.valid},
        }
        if sig.organisation is not None:
            checks["pdf"]["signataire"] = sig.organisation
        problems = pdf.problems + sig.problems
        if problems:
            checks["problems"] = problems
        return checks, p.model_dump(mode="json")
    if data.kind is EvidenceKind.CONFORMITY:
        if data.conformity_report is None:
            raise DomainError(
                "donnees_requises",
                "déposez le rapport signé de l'outil de conformité (champ « conformity_report »)",
            )
        if svc.conformity_verifier is None:
            raise ServiceError(
                503,
                "verification_indisponible",
                "aucune clé de l'outil de conformité n'est configurée sur ce guichet",
            )
        payload = svc.conformity_verifier.verify(data.conformity_report)
        report_data = conformity.parse_payload(payload)
        cv = conformity.check_report(
            report_data,
            proxy_version=c.software_version,
            today=today,
            max_age_days=svc.settings.conformity_max_age_days,
        )
        if not cv.accepted:
            raise ServiceError(
                422,
                "rapport_conformite_refuse",
                "rapport de conformité refusé : " + " ; ".join(cv.problems),
                problems=list(cv.problems),
            )
        return {"signature": "valide", "all_passed": True, "checked_on": today.isoformat()}, {
            "report": cv.report,
            "jws": data.conformity_report,
        }
    if data.kind is EvidenceKind.CNDA:
        if data.cnda is None:
            raise DomainError(
                "donnees_requises", "indiquez le numéro et la date de l'attestation CNDA (champ « cnda »)"
            )
        require_file(svc, s, data.file_sha256, "application/pdf", "l'attestation CNDA (PDF)")
        if data.cnda.issued_on > today:
            raise DomainError("cnda_future", "l'attestation CNDA est datée dans le futur")
        return {"cnda": "attestation fournie"}, data.cnda.model_dump(mode="json")
    if data.file_sha256 is None and not data.description.strip():
        raise DomainError("preuve_vide", "une preuve libre comporte un fichier ou une description")
    return {}, {"description": data.description}


def require_file(svc: ServiceCore, s: Session, sha: str | None, ctype: str, what: str) -> None:
    if sha is None:
        raise DomainError("fichier_requis", f"joignez {what}")
    f = s.get(StoredFile, sha)
    if f is None or f.content_type != ctype:
        raise DomainError(
            "fichier_requis",
            f"joignez {what} : "
            + (f"le fichier joint est un fichier {label_of(MEDIA, f.content_type)}" if f else "fichier absent"),
        )


def submit_chapter(svc: ServiceCore, actor: Principal, cid: int, chapter_id: str, data: sc.ActionIn) -> sc.ChapterOut:
    """A chapter goes to review only once complete (every requirement has its evidence)."""

    def op(s: Session) -> sc.ChapterOut:
        c = lookups.cand_for_candidate(svc, s, actor, cid)
        if c.status != wf.CandidatureStatus.EVIDENCE.value:
            raise IllegalTransition(
                "depot_ferme",
                f"le dépôt de preuves n'est pas ouvert (état « {label_of(CandidatureStatus, c.status)} »)",
            )
        ch = lookups.chapter(svc, s, c.id, chapter_id)
        base.check_version(ch.row_version, data.version, "le chapitre")
        evid = list(s.execute(select(Evidence).where(Evidence.candidature_id == c.id)).scalars())
        missing = lookups.missing(lookups.catalogue(svc, s, c.referentiel_version), ch, evid)
        if missing:
            raise DomainError(
                "chapitre_incomplet", f"chapitre « {ch.title} » incomplet ; manque : {', '.join(missing)}"
            )
        dossier.chapter_transition(svc, s, actor, c, ch, "soumettre_chapitre", wf.Actor.CANDIDATE, None)
        return outputs.chapter_out(svc, s, c, ch)

    return svc.run(op)


def review_chapter(
    svc: ServiceCore, actor: Principal, cid: int, chapter_id: str, data: sc.ChapterReviewIn
) -> sc.ChapterOut:
    """Verifier: accept, reject (reasons) or request a complement (reasons) on a submitted chapter."""

    def op(s: Session) -> sc.ChapterOut:
        base.require_ans(actor, AnsRole.VERIFIER)
        c = lookups.get(svc, s, Candidature, cid, "candidature")
        if c.status != wf.CandidatureStatus.EVIDENCE.value:
            raise IllegalTransition(
                "instruction_fermee",
                f"la candidature n'est pas en dépôt de preuves (état « {label_of(CandidatureStatus, c.status)} »)",
            )
        ch = lookups.chapter(svc, s, c.id, chapter_id)
        base.check_version(ch.row_version, data.version, "le chapitre")
        name = {
            "accepter": "accepter_chapitre",
            "rejeter": "rejeter_chapitre",
            "complement": "demander_complement",
        }[data.decision]
        dossier.chapter_transition(svc, s, actor, c, ch, name, wf.Actor.VERIFIER, data.reason)
        if data.decision != "accepter":
            svc.notify(
                s,
                "complement_demande" if data.decision == "complement" else "chapitre_rejete",
                f"Candidature n° {c.id}, chapitre « {ch.title} » : {'complément demandé' if data.decision == 'complement' else 'rejeté'}",
                data.reason or "",
                org_id=c.organisation_id,
                candidature_id=c.id,
            )
        else:
            chapters = list(s.execute(select(ChapterRow).where(ChapterRow.candidature_id == c.id)).scalars())
            if all(x.status == wf.ChapterStatus.ACCEPTED.value for x in chapters):
                dossier.transition(svc, s, None, c, "transmettre_college", wf.Actor.SYSTEM)
                dossier.mark_step(svc, s, c, "evidence_deposit")
        return outputs.chapter_out(svc, s, c, ch)

    return svc.run(op)
