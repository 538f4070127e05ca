"""The guichet's web application (French UI) for candidates, ANS staff and the public.

``web_routes(service, settings)`` returns Starlette routes to mount in the guichet app, so
the UI runs in the same process as the JSON API and calls the same ``GuichetService``.
Access rules are declared per route here (sign-in required, candidate-only, ANS roles);
the service re-checks every action against the acting principal.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..domain.labels import LABELS, MEDIA
from ..domain.model import ComponentKind, Environment, EvidenceStatus, Level, SolutionKind
from ..domain.pentest import AppType
from ..services import GuichetService
from . import pages_ans as ans
from . import pages_auth as auth
from . import pages_candidate as cand
from . import pages_certificates as certs
from . import pages_company as comp
from . import pages_pentest as pent
from . import pages_solutions as sols
from . import pages_wizard as wiz
from .common import (
    ANS_ROLE_LABELS,
    BADGE_TONES,
    EVIDENCE_LABELS,
    ORG_ROLE_LABELS,
    ROLE_LABELS_STR,
    STATUS_LABELS,
    TEMPLATE_ENUMS,
)
from .core import STATIC_DIR, Rq, User, Web
from .queries import ReadModels
from .security import LockoutPolicy
from .sessions import ActiveSession, SessionStore
from .settings import WebSettings

__all__ = ["WebSettings", "build_web", "web_routes"]

VERIFY = ("verificateur", "administrateur")
COLLEGE = ("college", "administrateur")
ANS_ANY = ("verificateur", "college", "administrateur")


def _nav(rq: Rq) -> list[dict[str, Any]]:
    u = rq.user
    path = rq.request.url.path
    items: list[tuple[str, str]] = []
    if u is None:
        items = [("public", "Habilitations en vigueur"), ("register", "Inscrire ma structure")]
    elif u.is_candidate:
        items = [
            ("dashboard", "Tableau de bord"),
            ("wizard", "Nouvelle candidature"),
            ("habilitations", "Habilitations"),
            ("solutions", "Solutions"),
        ]
        if u.org_role in ("mandataire", "representant"):
            items.append(("accounts", "Comptes"))
        items.append(("public", "Habilitations en vigueur"))
    else:
        if u.ans_roles & set(VERIFY):
            items.append(("queue", "Instruction"))
        if u.ans_roles & set(COLLEGE):
            items.append(("college", "Collège"))
        items += [("registry", "Registre"), ("audit", "Journal d'audit")]
        if u.ans_roles & set(VERIFY):
            items.append(("ans_accounts", "Comptes"))
        items += [("referentiel", "Référentiel"), ("passi", "PASSI")]
    out = []
    for name, label in items:
        href = rq.url(name)
        out.append(
            {"href": href, "label": label, "current": path == href or (href != "/" and path.startswith(href + "/"))}
        )
    return out


def build_web(
    service: GuichetService, settings: WebSettings | None = None, *, clock: Callable[[], dt.datetime] | None = None
) -> Web:
    settings = settings or WebSettings()
    sessions = SessionStore(
        service.db.engine,
        idle_timeout=dt.timedelta(minutes=settings.session_idle_minutes),
        absolute_timeout=dt.timedelta(hours=settings.session_absolute_hours),
        lockout=LockoutPolicy(
            settings.lockout_max_failures,
            dt.timedelta(minutes=settings.lockout_window_minutes),
            dt.timedelta(minutes=settings.lockout_minutes),
        ),
    )
    web = Web(service, settings, sessions, clock=clock or service.clock)
    web.read = ReadModels(service.db.engine)
    web.nav_builder = _nav
    web.env.globals.update(
        status_labels=STATUS_LABELS,
        badge_tones=BADGE_TONES,
        max_upload_bytes=service.settings.max_upload_bytes,
        level_labels=LABELS[Level],
        environment_labels=LABELS[Environment],
        solution_kind_labels=LABELS[SolutionKind],
        component_kind_labels=LABELS[ComponentKind],
        app_type_labels=LABELS[AppType],
        evidence_status_labels=LABELS[EvidenceStatus],
        media_labels=LABELS[MEDIA],
        **TEMPLATE_ENUMS,
        role_labels=ROLE_LABELS_STR,
        evidence_labels=EVIDENCE_LABELS,
        org_role_labels=ORG_ROLE_LABELS,
        ans_role_labels=ANS_ROLE_LABELS,
    )

    def load_user(sess: ActiveSession) -> User | None:
        p = service.principal_for(sess.account_id)
        if p is None:
            return None
        return User(
            id=p.account_id,
            email=p.email,
            name=sess.name,
            organisation_id=p.organisation_id,
            org_role=p.org_role.value if p.org_role else None,
            ans_roles=frozenset(r.value for r in p.ans_roles),
            principal=p,
        )

    def end(token: str) -> None:
        sessions.revoke(token)

    web.load_user = load_user
    web.on_session_end = end
    return web


def web_routes(
    service: GuichetService, settings: WebSettings | None = None, *, clock: Callable[[], dt.datetime] | None = None
) -> list[BaseRoute]:
    """All web routes (HTML pages and /static), ready for ``Starlette(routes=[...])``."""
    web = build_web(service, settings, clock=clock)
    P = web.page
    table: list[tuple[str, str, Callable[[Rq], Any], list[str], dict[str, Any]]] = [
        ("/", "home", auth.home, ["GET"], {"login": False}),
        ("/connexion", "login", auth.login_form, ["GET"], {"login": False}),
        ("/connexion", "login_post", auth.login_submit, ["POST"], {"login": False}),
        ("/deconnexion", "logout", auth.logout, ["POST"], {"login": False}),
        ("/habilitations-publiques", "public", ans.public, ["GET"], {"login": False}),
        ("/inscription", "register", auth.register_form, ["GET"], {"login": False}),
        ("/inscription", "register_post", auth.register_submit, ["POST"], {"login": False}),
        # candidate side
        ("/tableau-de-bord", "dashboard", cand.dashboard, ["GET"], {"candidate": True}),
        ("/candidatures/nouvelle", "wizard", wiz.wizard_form, ["GET"], {"candidate": True}),
        ("/candidatures/nouvelle", "wizard_post", wiz.wizard_submit, ["POST"], {"candidate": True}),
        ("/candidatures/{cid}", "candidature", cand.candidature, ["GET"], {"candidate": True}),
        ("/candidatures/{cid}/modifier", "candidature_edit", cand.candidature_edit, ["POST"], {"candidate": True}),
        ("/candidatures/{cid}/soumettre", "candidature_submit", cand.candidature_submit, ["POST"], {"candidate": True}),
        (
            "/candidatures/{cid}/abandonner",
            "candidature_abandon",
            cand.candidature_abandon,
            ["POST"],
            {"candidate": True},
        ),
        (
            "/candidatures/{cid}/preuves/document",
            "evidence_document",
            cand.evidence_document,
            ["POST"],
            {"candidate": True},
        ),
        ("/candidatures/{cid}/preuves/cnda", "evidence_cnda", cand.evidence_cnda, ["POST"], {"candidate": True}),
        (
            "/candidatures/{cid}/preuves/conformite",
            "evidence_conformity",
            cand.evidence_conformity,
            ["POST"],
            {"candidate": True},
        ),
        ("/candidatures/{cid}/test-intrusion", "pentest", pent.pentest_form, ["GET"], {"candidate": True}),
        ("/candidatures/{cid}/test-intrusion", "pentest_post", pent.pentest_submit, ["POST"], {"candidate": True}),
        (
            "/candidatures/{cid}/test-intrusion/verdict",
            "pentest_preview",
            pent.pentest_preview,
            ["POST"],
            {"candidate": True},
        ),
        (
            "/candidatures/{cid}/certificats",
            "certificate_order",
            certs.certificate_order,
            ["POST"],
            {"candidate": True},
        ),
        (
            "/candidatures/{cid}/certificats/{cert}/renouveler",
            "certificate_renew",
            certs.certificate_renew,
            ["POST"],
            {"candidate": True},
        ),
        (
            "/candidatures/{cid}/chapitres/{chapter}/soumettre",
            "chapter_submit",
            cand.chapter_submit,
            ["POST"],
            {"candidate": True},
        ),
        ("/candidatures/{cid}/parcours/{step}", "parcours_done", cand.parcours_done, ["POST"], {"candidate": True}),
        ("/candidatures/{cid}/fichiers/{sha}", "file", cand.file_view, ["GET"], {}),
        (
            "/candidatures/{cid}/collaborateurs",
            "collaborator_add",
            cand.collaborator_add,
            ["POST"],
            {"candidate": True},
        ),
        ("/candidatures/{cid}/referentiel", "referentiel_adopt", cand.referentiel_adopt, ["POST"], {"candidate": True}),
        ("/habilitations", "habilitations", comp.habilitations, ["GET"], {"candidate": True}),
        ("/solutions", "solutions", sols.solutions, ["GET"], {"candidate": True}),
        ("/solutions/{sid}/renommer", "solution_rename", sols.solution_rename, ["POST"], {"candidate": True}),
        ("/solutions/{sid}/supprimer", "solution_delete", sols.solution_delete, ["POST"], {"candidate": True}),
        ("/comptes", "accounts", comp.accounts, ["GET"], {"roles": ("mandataire", "representant")}),
        ("/comptes", "accounts_post", comp.account_create, ["POST"], {"roles": ("mandataire", "representant")}),
        (
            "/comptes/{aid}/valider",
            "account_validate",
            comp.account_validate,
            ["POST"],
            {"roles": ("mandataire", "representant")},
        ),
        # ANS side
        ("/ans/instruction", "queue", ans.queue, ["GET"], {"roles": VERIFY}),
        ("/ans/candidatures/{cid}", "review", ans.review, ["GET"], {"roles": VERIFY}),
        ("/ans/candidatures/{cid}/formulaire", "review_form", ans.review_form, ["POST"], {"roles": VERIFY}),
        (
            "/ans/candidatures/{cid}/chapitres/{chapter}",
            "review_chapter",
            ans.review_chapter,
            ["POST"],
            {"roles": VERIFY},
        ),
        ("/ans/college", "college", ans.college, ["GET"], {"roles": COLLEGE}),
        ("/ans/college/{cid}", "college_dossier", ans.college_dossier, ["GET"], {"roles": COLLEGE}),
        ("/ans/college/{cid}/decision", "college_decide", ans.college_decide, ["POST"], {"roles": COLLEGE}),
        ("/ans/registre", "registry", ans.registry, ["GET"], {"roles": ANS_ANY}),
        ("/ans/registre/graphe", "registry_graph", ans.registry_graph, ["GET"], {"roles": ANS_ANY}),
        (
            "/ans/habilitations/{hid}/statut",
            "habilitation_status",
            ans.habilitation_status,
            ["POST"],
            {"roles": COLLEGE},
        ),
        ("/ans/audit", "audit", ans.audit, ["GET"], {"roles": ANS_ANY}),
        ("/ans/comptes", "ans_accounts", ans.accounts, ["GET"], {"roles": VERIFY}),
        ("/ans/comptes", "ans_accounts_post", ans.staff_create, ["POST"], {"roles": ("administrateur",)}),
        ("/ans/comptes/{aid}/valider", "ans_account_validate", ans.account_validate, ["POST"], {"roles": VERIFY}),
        ("/ans/referentiel", "referentiel", ans.referentiel, ["GET"], {"roles": ANS_ANY}),
        ("/ans/referentiel", "referentiel_post", ans.referentiel_publish, ["POST"], {"roles": ("administrateur",)}),
        ("/ans/passi", "passi", ans.passi, ["GET"], {"roles": ANS_ANY}),
        ("/ans/passi", "passi_post", ans.passi_add, ["POST"], {"roles": ("administrateur",)}),
        ("/ans/passi/{pid}", "passi_toggle", ans.passi_toggle, ["POST"], {"roles": ("administrateur",)}),
    ]
    routes: list[BaseRoute] = []
    for path, name, handler, methods, opts in table:
        if name.endswith("_post"):
            pass
        else:
            web.register_url(name, path)
        routes.append(Route(path, P(handler, **opts), methods=methods, name=f"web:{name}"))
    routes.append(Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="web:static"))
    return routes
