"""Sign-in, sign-out and the home redirect.

Sign-in goes through ``GuichetService.check_password`` (same argon2id check and audit as
the API login). The web session is the web layer's own random token — deliberately *not*
an API bearer token, so a session cookie is useless against the JSON API — stored as a
SHA-256 with idle/absolute timers; every request resolves the account with
``service.principal_for``, so a deactivated account is signed out at once. The lockout is checked *before* the password is, and the failure message is the
same for an unknown address, a wrong password and a locked account.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import ValidationError
from starlette.responses import Response

from .. import schemas as sc
from .core import Rq
from .security import password_problems


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
    principal = web.service.check_password(email, password) if 0 < len(password) <= 200 else None
    if principal is None:
        web.sessions.record_attempt(email, False, rq.now)
        return rq.render("login.html", status=401, title="Connexion", next=nxt, email=email, error=GENERIC_FAILURE)
    web.sessions.record_attempt(email, True, rq.now)
    name = web.service.me(principal).name
    sess = web.sessions.create(principal.account_id, name, rq.now)
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


def register_form(rq: Rq) -> Response:
    return rq.render("register.html", title="Inscrire ma structure", v={"country": "FR"}, errors=[])


REGISTER_FIELDS = {
    ("email",): "email",
    ("name",): "name",
    ("password",): "password",
    ("organisation",): "org_name",
    ("organisation", "name"): "org_name",
    ("organisation", "country"): "country",
    ("organisation", "siren"): "siren",
    ("organisation", "siret"): "siret",
    ("organisation", "registration_number"): "registration_number",
}
REGISTER_LABELS = {
    "org_name": "Raison sociale",
    "country": "Pays",
    "siren": "SIREN",
    "siret": "SIRET",
    "registration_number": "N° d'immatriculation",
    "name": "Nom et prénom",
    "email": "Adresse électronique",
    "password": "Mot de passe",
    "password_confirm": "Confirmation du mot de passe",
}
# the domain's refusals, by the field they are about
REGISTER_CODES = {
    "pays_hors_ue": "country",
    "siren_requis": "siren",
    "siren_invalide": "siren",
    "siret_invalide": "siret",
    "siret_incoherent": "siret",
    "immatriculation_requise": "registration_number",
    "structure_existante": "siren",
    "compte_existant": "email",
}


def register_submit(rq: Rq) -> Response:
    """A mandataire registers the company; ANS checks the identity before the account is usable.

    Every problem of the form is reported at once, each beside its field, and what was
    typed is kept (passwords excepted)."""
    from confiance.guichet.domain.errors import DomainError
    from confiance.guichet.domain.identifiers import validate_registration

    from ..services import ServiceError
    from .common import field_errors

    v = {k: rq.f(k) for k in ("org_name", "country", "siren", "siret", "registration_number", "name", "email")}
    password = rq.form.get("password") if rq.form is not None else None
    confirm = rq.form.get("password_confirm") if rq.form is not None else None
    password = password if isinstance(password, str) else ""
    errors: dict[str, str] = {}
    problems = ["champ obligatoire"] if not password else password_problems(password, v["email"])
    if problems:
        errors["password"] = " ; ".join(problems)
    if password != confirm:
        errors["password_confirm"] = "les deux mots de passe diffèrent"
    country = (v["country"] or "FR").upper()
    try:
        data = sc.RegisterIn.model_validate(
            {
                "email": v["email"].lower(),
                "name": v["name"],
                "password": password or "x" * 12,  # its own rules are checked above
                "organisation": {
                    "name": v["org_name"],
                    "country": country,
                    "siren": v["siren"] or None,
                    "siret": v["siret"] or None,
                    "registration_number": v["registration_number"] or None,
                },
            }
        )
    except ValidationError as exc:
        data = None
        errors.update({k: e for k, e in field_errors(exc, REGISTER_FIELDS).items() if k not in errors})
    if not {"country", "siren", "siret", "registration_number"} & set(errors):
        try:  # the identifiers' rules (Luhn, EU), so they are reported with the rest
            validate_registration(country, v["siren"] or None, v["siret"] or None, v["registration_number"] or None)
        except DomainError as exc:
            errors[REGISTER_CODES.get(exc.code, "_form")] = exc.message
    if not errors and data is not None:
        try:
            rq.web.service.register(data)
        except ServiceError as exc:
            errors[REGISTER_CODES.get(exc.code, "_form")] = exc.message
    if errors:
        return rq.render(
            "register.html", status=422, title="Inscrire ma structure", v=v, fe=errors, register_labels=REGISTER_LABELS
        )
    from .core import Flash

    return rq.redirect(
        rq.url("login"),
        Flash(
            "ok",
            "Inscription enregistrée. Vous pouvez vous connecter ; l'ANS doit valider votre identité de mandataire avant tout dépôt.",
        ),
    )
