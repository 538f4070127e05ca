"""Candidate side: dashboard, wizard, candidature (form, evidence, parcours), pentest,
certificates, habilitations with their dependency graph, accounts.

Every action calls one ``GuichetService`` method with the signed-in principal; the
service checks membership (a salarié only reaches their own dossiers, nobody reaches
another organisation's) so the web layer cannot widen access by mistake.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError
from starlette.responses import Response

from .. import schemas as sc
from ..domain.model import (
    ChapterStatus,
    EvidenceKind,
    EvidenceStatus,
    habilitation_state,
)
from ..domain.workflow import EDITABLE_CHAPTER
from .common import (
    COMMITMENTS,
    MATURITY,
    PATHS,
    attempt,
    read_or_raise,
    validation_messages,
)
from .core import Flash, NotFound, Rq
from .queries import chapter_summary


def _svc(rq: Rq) -> Any:
    return rq.web.service


def _principal(rq: Rq) -> Any:
    return rq.user_required().principal


def _int(value: str) -> int | None:
    try:
        v = int(value)
    except ValueError:
        return None
    return v if 1 <= v <= 2**31 - 1 else None


def slug(name: str, kind: str) -> str:
    """A default component name the registry accepts (ASCII letters, digits, . _ -)."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_name).strip("-._").lower()[:50]
    return f"{base or 'composant'}-{kind.lower()}"


def _version(rq: Rq) -> int | None:
    return _int(rq.f("version"))


# ------------------------------------------------------------------ dashboard
def dashboard(rq: Rq) -> Response:
    svc, me = _svc(rq), _principal(rq)
    org = read_or_raise(svc.get_organisation, me, me.organisation_id)
    cands = read_or_raise(svc.list_candidatures, me) if me.validated else []
    counts, pending = chapter_summary(rq.web.service.db.engine, [c.id for c in cands])
    by_id = {c.id: c for c in cands}
    rows = []
    for c in sorted(cands, key=lambda c: c.updated_at, reverse=True):
        pct = _progress(c.status)
        done, total = counts.get(c.id, (0, 0))
        if c.status == "depot_preuves":
            pct = 34 + int(33 * done / max(1, total))
        rows.append({"c": c, "pct": pct, "next": _next_action(c.status, done, total)})
    requests = [
        {"candidature": by_id[p["cid"]], "chapter": p} for p in pending if by_id[p["cid"]].status == "depot_preuves"
    ]
    flashes = (
        []
        if me.validated
        else [Flash("info", "Votre compte attend sa validation : vous pourrez déposer des candidatures ensuite.")]
    )
    rq.flashes.extend(flashes)
    notes = svc.notifications(me, limit=8) if me.validated else []
    return rq.render(
        "dashboard.html", title="Tableau de bord", organisation=org, rows=rows, requests=requests, notes=notes
    )


def _next_action(status: str, accepted: int, total: int) -> str:
    """What the candidate should expect or do next, in one line."""
    return {
        "brouillon": "À vous : compléter et soumettre le formulaire administratif",
        "formulaire_soumis": "ANS : vérification du formulaire",
        "depot_preuves": f"{accepted} chapitre(s) accepté(s) sur {total} : déposez et soumettez les autres",
        "college": "ANS : décision du collège",
        "accordee": "Habilitation accordée",
        "refusee": "Candidature refusée (motifs sur la candidature)",
        "abandonnee": "Candidature abandonnée",
    }.get(status, "")


def _progress(status: str) -> int:
    return {"brouillon": 10, "formulaire_soumis": 25, "depot_preuves": 34, "college": 85, "accordee": 100}.get(
        status, 0
    )


# ------------------------------------------------------------------ candidature page
def _requirements(svc: Any) -> dict[str, Any]:
    ref = svc.current_referentiel()
    return {r.id: r for r in ref.requirements}


def candidature_context(rq: Rq, c: Any) -> dict[str, Any]:
    svc, me = _svc(rq), _principal(rq)
    org = svc.get_organisation(me, c.organisation_id)
    solution = svc.get_solution(me, c.solution_id)
    evidence_by_req: dict[str, list[Any]] = {}
    for e in c.evidence:
        if e.status != EvidenceStatus.REPLACED:
            evidence_by_req.setdefault(e.requirement_id, []).append(e)
    chapters = []
    for ch in c.chapters:
        d = ch.model_dump()
        d["editable"] = ChapterStatus(ch.status) in EDITABLE_CHAPTER
        chapters.append(_Obj(d))
    accepted = sum(1 for ch in c.chapters if ch.status == ChapterStatus.ACCEPTED)
    hab = svc.get_habilitation(me, c.habilitation_id) if c.habilitation_id else None
    return {
        "title": f"Candidature {c.role} n° {c.id}",
        "c": c,
        "organisation": org,
        "solution": solution,
        "path_label": dict(PATHS).get(c.path, c.path),
        "chapters": chapters,
        "accepted": accepted,
        "pct": int(100 * accepted / max(1, len(c.chapters))),
        "requirements": _requirements(svc),
        "evidence_by_req": evidence_by_req,
        "certificates": c.certificates,
        "component_names": {comp.id: comp.name for comp in solution.components},
        "c_parcours": c.parcours,
        "commitments": COMMITMENTS,
        "maturity_labels": dict(MATURITY),
        "habilitation": hab,
        "hab_state": habilitation_state(hab.status, hab.valid_until, hab.at_risk, rq.now) if hab else None,
        "editable": c.status in ("brouillon", "depot_preuves", "college"),
        "can_act": rq.user is not None and rq.user.is_candidate,
    }


class _Obj(dict[str, Any]):
    """Attribute access over a dict, for templates."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def candidature(rq: Rq) -> Response:
    svc, me = _svc(rq), _principal(rq)
    c = read_or_raise(svc.get_candidature, me, rq.int_param("cid"))
    ctx = candidature_context(rq, c)
    accounts = {a.id: a for a in svc.list_accounts(me)}
    ctx["collaborators"] = [accounts[i] for i in c.collaborators if i in accounts]
    ctx["author"] = accounts.get(c.created_by)
    ctx["can_add_collaborator"] = me.org_role in ("mandataire", "representant") or me.account_id == c.created_by
    ctx["collaborator_choices"] = [
        a
        for a in accounts.values()
        if a.validated and a.active and a.id not in c.collaborators and a.id != c.created_by
    ]
    diff = svc.referentiel_changes(me, c.id)
    ctx["ref_diff"] = diff if not diff.up_to_date else None
    return rq.render("candidature.html", **ctx)


def collaborator_add(rq: Rq) -> Response:
    cid = rq.int_param("cid")
    aid = _int(rq.f("account_id"))
    if aid is None:
        return _back(rq, cid, Flash("error", "Choisissez un compte."), "")
    _, err = attempt(_svc(rq).add_collaborator, _principal(rq), cid, sc.CollaboratorIn(account_id=aid))
    return _back(rq, cid, err, "Collaborateur ajouté : il voit et complète désormais la candidature.")


def referentiel_adopt(rq: Rq) -> Response:
    cid = rq.int_param("cid")
    _, err = attempt(_svc(rq).adopt_referentiel, _principal(rq), cid, sc.ActionIn(version=_version(rq)))
    return _back(
        rq,
        cid,
        err,
        "La candidature suit désormais la dernière version du référentiel ; les chapitres modifiés sont à revoir.",
    )


def _back(rq: Rq, cid: int, flash: Flash | None, ok: str, anchor: str = "") -> Response:
    return rq.redirect(rq.url("candidature", cid=cid) + anchor, flash or Flash("ok", ok))


def candidature_edit(rq: Rq) -> Response:
    cid = rq.int_param("cid")
    try:
        data = sc.FormUpdateIn(
            version=_version(rq) or 1,
            software_name=rq.f("software_name"),
            software_version=rq.f("software_version"),
            description=rq.f("description"),
            nru_numbers=[x.strip() for x in rq.f("nru_numbers").splitlines() if x.strip()],
        )
    except ValidationError as exc:
        return _back(rq, cid, Flash("error", "Modification refusée :", validation_messages(exc)), "")
    _, err = attempt(_svc(rq).update_form, _principal(rq), cid, data)
    return _back(rq, cid, err, "Déclaration mise à jour.")


def candidature_submit(rq: Rq) -> Response:
    cid = rq.int_param("cid")
    got = set(rq.flist("commitment"))
    data = sc.CommitmentsIn(
        version=_version(rq),
        respect_referentiels_cgu="respect_referentiels_cgu" in got,
        exactitude_informations="exactitude_informations" in got,
        acceptation_audits="acceptation_audits" in got,
    )
    _, err = attempt(_svc(rq).submit_form, _principal(rq), cid, data)
    return _back(rq, cid, err, "Formulaire soumis à l'ANS.")


def candidature_abandon(rq: Rq) -> Response:
    cid = rq.int_param("cid")
    _, err = attempt(_svc(rq).abandon, _principal(rq), cid, sc.ActionIn(version=_version(rq)))
    return _back(rq, cid, err, "Candidature abandonnée.")


def _upload(rq: Rq, name: str = "file") -> tuple[str | None, Flash | None]:
    up = rq.file(name)
    if up is None:
        return None, Flash("error", "Joignez un fichier.")
    data = up.file.read(rq.web.service.settings.max_upload_bytes + 1)
    ctype = up.content_type or "application/octet-stream"
    if (up.filename or "").lower().endswith((".jws", ".txt")) and ctype in ("application/octet-stream", ""):
        ctype = "text/plain"
    out, err = attempt(rq.web.service.upload_file, _principal(rq), data, ctype)
    return (out.sha256 if out else None), err


def _deposit(rq: Rq, cid: int, data: Any, ok: str) -> Response:
    _, err = attempt(_svc(rq).deposit_evidence, _principal(rq), cid, data)
    return _back(rq, cid, err, ok)


def _refused(exc: ValidationError) -> Flash:
    return Flash("error", "Dépôt refusé :", validation_messages(exc))


def _deposit_upload(rq: Rq, ok: str, build: Callable[[str | None], sc.EvidenceIn]) -> Response:
    """A file-backed piece of evidence: the file is uploaded first, then ``build(sha256)``
    is deposited; an upload or form refusal comes back as a message on the candidature."""
    cid = rq.int_param("cid")
    sha, err = _upload(rq)
    if err is not None:
        return _back(rq, cid, err, "")
    try:
        data = build(sha)
    except ValidationError as exc:
        return _back(rq, cid, _refused(exc), "")
    if data.file_sha256:
        data = data.model_copy(update={"file_name": _file_name(rq)})
    return _deposit(rq, cid, data, ok)


def _file_name(rq: Rq, name: str = "file") -> str | None:
    up = rq.file(name)
    return up.filename[:200] if up is not None and up.filename else None


def evidence_document(rq: Rq) -> Response:
    return _deposit_upload(
        rq,
        "Document déposé.",
        lambda sha: sc.EvidenceIn(
            requirement_id=rq.f("requirement_id"),
            kind=EvidenceKind.DOCUMENT,
            file_sha256=sha,
            description=rq.f("description"),
        ),
    )


def evidence_cnda(rq: Rq) -> Response:
    return _deposit_upload(
        rq,
        "Attestation CNDA déposée.",
        lambda sha: sc.EvidenceIn(
            requirement_id=rq.f("requirement_id"),
            kind=EvidenceKind.CNDA,
            file_sha256=sha,
            cnda=sc.CndaIn(number=rq.f("number"), issued_on=rq.f("issued_on")),  # type: ignore[arg-type]
        ),
    )


def evidence_conformity(rq: Rq) -> Response:
    """The signed report is verified at once (signature, date, version, every check passed)."""
    cid = rq.int_param("cid")
    up = rq.file("file")
    if up is None:
        return _back(rq, cid, Flash("error", "Joignez le rapport signé de l'outil de conformité."), "")
    raw = up.file.read(200_001)
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return _back(
            rq,
            cid,
            Flash("error", "Le rapport de conformité doit être le fichier texte (JWS) produit par l'outil."),
            "",
        )
    try:
        data = sc.EvidenceIn(
            requirement_id=rq.f("requirement_id"), kind=EvidenceKind.CONFORMITY, conformity_report=text
        )
    except ValidationError as exc:
        return _back(rq, cid, _refused(exc), "")
    _, err = attempt(_svc(rq).deposit_evidence, _principal(rq), cid, data)
    if err is not None:
        err.text = "Vérification automatique : rapport refusé. " + err.text
        return _back(rq, cid, err, "")
    return _back(
        rq,
        cid,
        None,
        "Vérification automatique réussie : signature de l'outil valide, version du proxy conforme, tous les contrôles passés.",
    )


def chapter_submit(rq: Rq) -> Response:
    cid = rq.int_param("cid")
    chapter = str(rq.path_params["chapter"])[:64]
    _, err = attempt(_svc(rq).submit_chapter, _principal(rq), cid, chapter, sc.ActionIn(version=_version(rq)))
    return _back(rq, cid, err, "Chapitre soumis à l'ANS pour examen.", f"#chap-{chapter}")


def parcours_done(rq: Rq) -> Response:
    cid = rq.int_param("cid")
    step = str(rq.path_params["step"])[:64]
    _, err = attempt(_svc(rq).declare_step, _principal(rq), cid, step)
    return _back(rq, cid, err, "Étape du parcours enregistrée.")


def content_disposition(inline: bool, name: str) -> str:
    """``filename`` in ASCII for old clients, ``filename*`` (RFC 6266/5987) with the real name."""
    ascii_name = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in name)
    return f"{'inline' if inline else 'attachment'}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


def file_view(rq: Rq) -> Response:
    """Evidence files, served inertly (no sniffing, sandboxed, downloaded unless PDF/image)."""
    sha = str(rq.path_params["sha"])
    cid = rq.int_param("cid")
    svc, me = _svc(rq), _principal(rq)
    detail = read_or_raise(svc.get_candidature, me, cid)
    names = {e.file_sha256: e.file_name for e in detail.evidence if e.file_sha256}
    if sha not in names:
        raise NotFound
    data, ctype = read_or_raise(svc.read_file, me, sha)
    inline = ctype in ("application/pdf", "image/png", "image/jpeg")
    resp = Response(data, media_type=ctype if inline else "text/plain; charset=utf-8")
    resp.headers["Content-Disposition"] = content_disposition(inline, names[sha] or sha[:16])
    resp.headers["Content-Security-Policy"] = "sandbox; default-src 'none'; style-src 'unsafe-inline'"
    resp.headers["Cache-Control"] = "private, no-store"
    return resp
