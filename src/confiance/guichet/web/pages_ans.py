"""ANS side: verifier queue and review, college, registry of habilitations, audit trail,
and the public page of valid habilitations."""

from __future__ import annotations

import yaml
from pydantic import ValidationError
from starlette.responses import Response

from .. import schemas as sc
from ..domain.model import Role, habilitation_state
from . import graph
from .common import attempt, read_or_raise, validation_messages
from .core import Flash, Rq
from .pages_candidate import candidature_context
from .pages_company import dependency_nodes
from .queries import public_page


def _page_no(rq: Rq) -> int:
    try:
        return max(1, min(100_000, int(rq.query.get("page", "1"))))
    except ValueError:
        return 1


def _clip(value: str, n: int = 100) -> str:
    return value.strip()[:n]


def queue(rq: Rq) -> Response:
    kind = rq.query.get("type", "")
    role = rq.query.get("profil", "")
    kind = kind if kind in ("chapitre", "formulaire") else ""
    role = role if role in {r.value for r in Role} else ""
    q = _clip(rq.query.get("q", ""))
    page = rq.web.read.queue(kind=kind, role=role, q=q, page=_page_no(rq), size=rq.web.settings.page_size)
    return rq.render(
        "queue.html",
        title="File d'instruction",
        page=page,
        f={"type": kind, "profil": role, "q": q},
        roles=[r.value for r in Role],
    )


def review(rq: Rq) -> Response:
    svc, me = rq.web.service, rq.user_required().principal
    cid = rq.int_param("cid")
    c = read_or_raise(svc.get_candidature, me, cid)
    ctx = candidature_context(rq, c)
    ctx["title"] = f"Instruction — candidature {c.role} n° {c.id}"
    ctx["evidence_data"] = rq.web.read.evidence_data(cid)
    ctx["focus"] = rq.query.get("chapitre", "")
    ctx["history"] = svc.audit_entries(me, target=f"candidature:{cid}", limit=100)
    ctx["can_act"] = False
    ctx["registry_link"] = True
    return rq.render("review.html", **ctx)


def review_form(rq: Rq) -> Response:
    svc, me = rq.web.service, rq.user_required().principal
    cid = rq.int_param("cid")
    version = _int(rq.f("version"))
    reason = rq.f("reason")
    if rq.f("decision") == "valider":
        _, err = attempt(svc.validate_form, me, cid, sc.ActionIn(version=version, reason=reason or None))
        ok = "Formulaire administratif validé : le dépôt de preuves est ouvert."
    else:
        try:
            data = sc.ReasonIn(version=version, reason=reason)
        except ValidationError as exc:
            return rq.redirect(
                rq.url("review", cid=cid), Flash("error", "Renvoi impossible :", validation_messages(exc))
            )
        _, err = attempt(svc.return_form, me, cid, data)
        ok = "Formulaire renvoyé au candidat avec votre motif."
    return rq.redirect(rq.url("review", cid=cid), err or Flash("ok", ok))


def review_chapter(rq: Rq) -> Response:
    svc, me = rq.web.service, rq.user_required().principal
    cid = rq.int_param("cid")
    chapter = str(rq.path_params["chapter"])[:64]
    decision = rq.f("decision")
    reason = rq.f("reason") or None
    if decision in ("rejeter", "complement") and not reason:
        return rq.redirect(
            rq.url("review", cid=cid) + f"#chap-{chapter}", Flash("error", "Indiquez le motif communiqué au candidat.")
        )
    try:
        data = sc.ChapterReviewIn(version=_int(rq.f("version")), decision=decision, reason=reason)  # type: ignore[arg-type]
    except ValidationError as exc:
        return rq.redirect(rq.url("review", cid=cid), Flash("error", "Décision invalide :", validation_messages(exc)))
    _, err = attempt(svc.review_chapter, me, cid, chapter, data)
    msg = {
        "accepter": "Chapitre accepté.",
        "rejeter": "Chapitre rejeté ; le candidat est notifié.",
        "complement": "Complément demandé ; le candidat est notifié.",
    }[decision]
    return rq.redirect(rq.url("queue"), err) if err else rq.redirect(rq.url("queue"), Flash("ok", msg))


def college(rq: Rq) -> Response:
    page = rq.web.read.college(page=_page_no(rq), size=rq.web.settings.page_size)
    return rq.render("college.html", title="Collège", page=page)


def college_dossier(rq: Rq) -> Response:
    svc, me = rq.web.service, rq.user_required().principal
    c = read_or_raise(svc.get_candidature, me, rq.int_param("cid"))
    ctx = candidature_context(rq, c)
    ctx["title"] = f"Collège — candidature {c.role} n° {c.id}"
    ctx["evidence_data"] = rq.web.read.evidence_data(c.id)
    ctx["can_act"] = False
    ctx["registry_link"] = True
    return rq.render("college_dossier.html", **ctx)


def college_decide(rq: Rq) -> Response:
    svc, me = rq.web.service, rq.user_required().principal
    cid = rq.int_param("cid")
    decision = rq.f("decision")
    reason = rq.f("reason") or None
    if decision == "refuser" and not reason:
        return rq.redirect(rq.url("college_dossier", cid=cid), Flash("error", "Un refus doit être motivé."))
    try:
        data = sc.DecisionIn(version=_int(rq.f("version")), decision=decision, reason=reason)  # type: ignore[arg-type]
    except ValidationError as exc:
        return rq.redirect(
            rq.url("college_dossier", cid=cid), Flash("error", "Décision invalide :", validation_messages(exc))
        )
    out, err = attempt(svc.decide, me, cid, data)
    if err is not None or out is None:
        return rq.redirect(rq.url("college_dossier", cid=cid), err)
    msg = (
        f"Habilitation n° {out.habilitation_id} accordée."
        if decision == "accorder"
        else "Candidature refusée ; le candidat est notifié."
    )
    return rq.redirect(rq.url("college"), Flash("ok", msg))


def registry(rq: Rq) -> Response:
    view = rq.query.get("vue", "")
    view = view if view in ("valides", "expirent", "a_risque") else ""
    role = rq.query.get("profil", "")
    role = role if role in {r.value for r in Role} else ""
    q = _clip(rq.query.get("q", ""))
    page = rq.web.read.registry(
        now=rq.now,
        q=q,
        view=view,
        role=role,
        expiring_days=rq.web.settings.expiring_days,
        page=_page_no(rq),
        size=rq.web.settings.page_size,
    )
    for r in page.rows:
        r["days"] = (r["valid_until"] - rq.now).days
        r["state"] = habilitation_state(r["status"], r["valid_until"], r["at_risk"], rq.now)
    can_manage = rq.user is not None and bool({"college", "administrateur"} & rq.user.ans_roles)
    return rq.render(
        "registry.html",
        title="Registre des habilitations",
        page=page,
        f={"vue": view, "profil": role, "q": q},
        roles=[r.value for r in Role],
        can_manage=can_manage,
        expiring_days=rq.web.settings.expiring_days,
    )


def registry_graph(rq: Rq) -> Response:
    svc, me = rq.web.service, rq.user_required().principal
    habs = svc.list_habilitations(me)
    svg = graph.render_svg(dependency_nodes(habs, None), caption="Dépendances de toutes les habilitations")
    return rq.render("graph.html", title="Graphe des habilitations", svg=svg)


def habilitation_status(rq: Rq) -> Response:
    svc, me = rq.web.service, rq.user_required().principal
    hid = rq.int_param("hid")
    action = rq.f("action")
    fn = {"suspendre": svc.suspend, "retirer": svc.withdraw, "retablir": svc.reinstate}.get(action)
    if fn is None:
        return rq.redirect(rq.url("registry"), Flash("error", "Action inconnue."))
    try:
        data = sc.ReasonIn(version=_int(rq.f("version")), reason=rq.f("reason"))
    except ValidationError:
        return rq.redirect(rq.url("registry"), Flash("error", "Indiquez le motif de la décision."))
    out, err = attempt(fn, me, hid, data)
    return rq.redirect(
        rq.url("registry"),
        err
        or Flash(
            "ok",
            f"Habilitation n° {hid} : {out.status if out else action}. Les habilitations qui s'appuient sur elle sont signalées à risque.",
        ),
    )


def audit(rq: Rq) -> Response:
    f = {k: _clip(rq.query.get(k, ""), 64) for k in ("acteur", "action", "cible")}
    page = rq.web.read.audit(
        actor=f["acteur"], action=f["action"], target=f["cible"], page=_page_no(rq), size=rq.web.settings.page_size
    )
    check = rq.web.service.verify_audit(rq.user_required().principal) if rq.query.get("verifier") == "1" else None
    return rq.render("audit.html", title="Journal d'audit", page=page, f=f, check=check)


def public(rq: Rq) -> Response:
    role = rq.query.get("profil", "")
    role = role if role in {r.value for r in Role} else ""
    page = public_page(rq.web.service.db.engine, rq.now, role, _page_no(rq), rq.web.settings.page_size)
    return rq.render(
        "public.html", title="Habilitations en vigueur", page=page, profil=role, roles=[r.value for r in Role]
    )


def _int(value: str) -> int | None:
    try:
        v = int(value)
    except ValueError:
        return None
    return v if 1 <= v <= 2**31 - 1 else None


def accounts(rq: Rq) -> Response:
    """Accounts awaiting ANS validation (mandataires' identity) and, for admins, every account."""
    svc, me = rq.web.service, rq.user_required().principal
    accs = svc.list_accounts(me)
    pending = [a for a in accs if not a.validated and a.org_role == "mandataire"]
    orgs = {o.id: o for o in svc.list_organisations(me)}
    staff = [a for a in accs if a.ans_roles]
    return rq.render(
        "ans_accounts.html",
        title="Comptes",
        pending=pending,
        orgs=orgs,
        staff=staff,
        is_admin="administrateur" in rq.user_required().ans_roles,
    )


def account_validate(rq: Rq) -> Response:
    aid = rq.int_param("aid")
    out, err = attempt(rq.web.service.validate_account, rq.user_required().principal, aid)
    return rq.redirect(
        rq.url("ans_accounts"),
        err or Flash("ok", f"Identité validée : {out.email if out else aid} peut déposer des candidatures."),
    )


def staff_create(rq: Rq) -> Response:
    password = rq.form.get("password") if rq.form is not None else None
    try:
        data = sc.AccountIn.model_validate(
            {
                "email": rq.f("email").lower(),
                "name": rq.f("name"),
                "password": password if isinstance(password, str) else None,
                "ans_roles": rq.flist("ans_role"),
            }
        )
    except ValidationError as exc:
        return rq.redirect(rq.url("ans_accounts"), Flash("error", "Compte non créé :", validation_messages(exc)))
    out, err = attempt(rq.web.service.create_account, rq.user_required().principal, data)
    return rq.redirect(rq.url("ans_accounts"), err or Flash("ok", f"Compte ANS {out.email if out else ''} créé."))


def passi(rq: Rq) -> Response:
    return rq.render("passi.html", title="Registre PASSI", providers=rq.web.service.list_passi())


def passi_add(rq: Rq) -> Response:
    try:
        data = sc.PassiIn(name=rq.f("name"), reference=rq.f("reference"))
    except ValidationError as exc:
        return rq.redirect(rq.url("passi"), Flash("error", "Prestataire non ajouté :", validation_messages(exc)))
    out, err = attempt(rq.web.service.add_passi, rq.user_required().principal, data)
    return rq.redirect(
        rq.url("passi"), err or Flash("ok", f"Prestataire « {out.name if out else ''} » ajouté au registre.")
    )


def passi_toggle(rq: Rq) -> Response:
    pid = rq.int_param("pid")
    active = rq.f("active") == "1"
    out, err = attempt(rq.web.service.set_passi_active, rq.user_required().principal, pid, active)
    return rq.redirect(
        rq.url("passi"),
        err
        or Flash("ok", f"Prestataire « {out.name if out else pid} » {'réactivé' if active else 'retiré du registre'}."),
    )


def referentiel(rq: Rq) -> Response:
    svc = rq.web.service
    cur = svc.current_referentiel()
    text = rq.f("yaml") or yaml.safe_dump(
        {
            "version": cur.version,
            "chapters": cur.chapters,
            "requirements": [r.model_dump(exclude_none=True) for r in cur.requirements],
        },
        allow_unicode=True,
        sort_keys=False,
    )
    titles = {c["id"]: c["title"] for c in cur.chapters}
    return rq.render(
        "referentiel.html",
        title="Référentiel PSC",
        cur=cur,
        titles=titles,
        versions=svc.list_referentiel_versions(),
        text=text,
        is_admin="administrateur" in rq.user_required().ans_roles,
    )


def referentiel_publish(rq: Rq) -> Response:
    try:
        data = yaml.safe_load(rq.f("yaml"))
    except yaml.YAMLError as exc:
        rq.flashes.append(Flash("error", f"YAML illisible : {str(exc)[:300]}"))
        return referentiel(rq)
    try:
        ref_in = sc.ReferentielIn.model_validate(data)
    except ValidationError as exc:
        rq.flashes.append(Flash("error", "Référentiel invalide :", validation_messages(exc)))
        return referentiel(rq)
    out, err = attempt(rq.web.service.publish_referentiel, rq.user_required().principal, ref_in)
    if err is not None or out is None:
        rq.flashes.append(err or Flash("error", "Publication refusée."))
        return referentiel(rq)
    return rq.redirect(
        rq.url("referentiel"),
        Flash("ok", f"Version {out.version} publiée : chaque dossier concerné voit ce qui change pour lui."),
    )
