"""Sign-in, sign-out and the home redirect.

Sign-in goes through ``GuichetService.login`` (same password rules and audit as the API)
and the bearer token it issues becomes the web session: the cookie carries it, the web
layer keeps only its SHA-256 with idle/absolute timers, and ``service.authenticate``
resolves it on every request — so a deactivated account or a revoked token is signed out
at once. The lockout is checked *before* the password is, and the failure message is the
same for an unknown address, a wrong password and a locked account.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import ValidationError
from starlette.responses import Response

from .. import schemas as sc
from ..service import ServiceError
from .core import Rq


def safe_next(value: str) -> str:
    """Only same-site relative paths (no open redirect)."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def home(rq: Rq) -> Response:
    u = rq.user
    if u is None:
        return rq.redirect(rq.url("public"))
    if u.is_candidate:
        return rq.redirect(rq.url("dashboard"))
    if "verificateur" in u.ans_roles or "administrateur" in u.ans_roles:
        return rq.redirect(rq.url("queue"))
    if "college" in u.ans_roles:
        return rq.redirect(rq.url("college"))
    return rq.redirect(rq.url("registry"))


def login_form(rq: Rq) -> Response:
    if rq.user is not None:
        return rq.redirect(safe_next(rq.query.get("next", "/")))
    return rq.render("login.html", title="Connexion", next=safe_next(rq.query.get("next", "/")), email="", error=None)


GENERIC_FAILURE = "Adresse ou mot de passe incorrect, ou compte temporairement verrouillé après plusieurs échecs."


def login_submit(rq: Rq) -> Response:
    web = rq.web
    email = rq.f("email").lower()[:254]
    password = rq.form.get("password") if rq.form is not None else None
    nxt = safe_next(rq.f("next", "/"))
    if not isinstance(password, str):
        password = ""
    locked = web.sessions.locked_until(email, rq.now)
    if locked is not None:
        web.sessions.record_attempt(email, False, rq.now)
        return rq.render("login.html", status=401, title="Connexion", next=nxt, email=email, error=GENERIC_FAILURE)
    try:
        tok = web.service.login(sc.LoginIn(email=email, password=password, label="web"))
    except (ServiceError, ValidationError):
        web.sessions.record_attempt(email, False, rq.now)
        return rq.render("login.html", status=401, title="Connexion", next=nxt, email=email, error=GENERIC_FAILURE)
    web.sessions.record_attempt(email, True, rq.now)
    sess = web.sessions.create(tok.account.id, tok.account.name, rq.now, token=tok.access_token)
    resp = rq.redirect(nxt)
    web.set_session_cookie(resp, sess.token)
    return resp


def logout(rq: Rq) -> Response:
    token = rq.request.cookies.get(rq.web.session_cookie)
    if token:
        rq.web.sessions.revoke(token)
        rq.web.on_session_end(token)
    resp = rq.redirect(rq.url("login"))
    rq.web.clear_session_cookie(resp)
    return resp
