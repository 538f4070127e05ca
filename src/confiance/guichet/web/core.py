"""The web edge's plumbing: request context, sessions, CSRF, rendering, access control.

Every page is a plain synchronous function ``(Rq) -> Response`` run in the thread pool
(the service layer is synchronous SQLAlchemy). ``Page`` wraps it: it loads the session,
checks the CSRF token of every unsafe request *before* the page code runs, enforces the
roles the route declares, and turns domain errors into French messages. So no page can
forget a check: they are properties of the route table, not of each handler.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..services import ServiceError
from .security import csrf_token, csrf_valid, new_token
from .sessions import ActiveSession, SessionStore
from .settings import WebSettings

log = logging.getLogger("confiance.guichet.web")

STATIC_DIR = Path(__file__).parent / "static"
# No inline script or style anywhere: the policy can forbid both (XSS defence in depth).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
MAX_FORM_FILES = 4
MAX_FORM_FIELDS = 3000


class Forbidden(Exception):
    """The signed-in account may not see or do this (rendered as 403)."""


class NotFound(Exception):
    """No such object, or one the account may not know exists (rendered as 404)."""


@dataclass
class User:
    """The signed-in account, as the web layer needs it."""

    id: int
    email: str
    name: str
    organisation_id: int | None
    org_role: str | None
    ans_roles: frozenset[str]
    principal: Any  # what the service layer takes as "who acts"

    @property
    def is_candidate(self) -> bool:
        return self.organisation_id is not None

    @property
    def is_ans(self) -> bool:
        return bool(self.ans_roles)

    def has(self, role: str) -> bool:
        return role in self.ans_roles or role == self.org_role


@dataclass
class Flash:
    kind: str  # ok | error | info
    text: str
    details: list[str] = field(default_factory=list)


@dataclass
class Rq:
    """One request, already authenticated and CSRF-checked, ready for a synchronous page."""

    request: Request
    web: Web
    user: User | None
    cookie: str  # the session (or anonymous) cookie value the CSRF token is bound to
    form: FormData | None
    now: dt.datetime
    flashes: list[Flash] = field(default_factory=list)
    set_cookies: list[tuple[str, str, int | None]] = field(default_factory=list)

    @property
    def path_params(self) -> Mapping[str, Any]:
        return self.request.path_params

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query_params

    def int_param(self, name: str) -> int:
        try:
            value = int(self.request.path_params[name])
        except (KeyError, ValueError):
            raise NotFound from None
        if not 1 <= value <= 2**31 - 1:
            raise NotFound
        return value

    def f(self, name: str, default: str = "") -> str:
        if self.form is None:
            return default
        v = self.form.get(name)
        return v.strip() if isinstance(v, str) else default

    def flist(self, name: str) -> list[str]:
        if self.form is None:
            return []
        return [v for v in self.form.getlist(name) if isinstance(v, str)]

    def file(self, name: str) -> UploadFile | None:
        if self.form is None:
            return None
        v = self.form.get(name)
        if isinstance(v, UploadFile) and v.filename:
            return v
        return None

    @property
    def csrf(self) -> str:
        return csrf_token(self.web.settings.key(), self.cookie)

    def user_required(self) -> User:
        if self.user is None:
            raise Forbidden
        return self.user

    def render(self, template: str, status: int = 200, **ctx: Any) -> Response:
        return self.web.render(self, template, status=status, **ctx)

    def redirect(self, to: str, flash: Flash | None = None) -> RedirectResponse:
        resp = RedirectResponse(to, status_code=303)
        if flash is not None:
            self.web.set_flash(resp, flash)
        return resp

    def url(self, name: str, **params: Any) -> str:
        return self.web.url(name, **params)


Handler = Callable[[Rq], Response]


class BodyTooLarge(Exception):
    """The request body went past the limit while streaming (no Content-Length, or a lie)."""


def _limited_receive(receive: Any, limit: int) -> Any:
    """An ASGI receive that stops reading once ``limit`` body bytes have arrived."""
    seen = 0

    async def wrapped() -> Any:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge
        return message

    return wrapped


class Web:
    """State shared by every page: settings, session store, templates, the service."""

    def __init__(
        self,
        service: Any,
        settings: WebSettings,
        sessions: SessionStore,
        *,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.sessions = sessions
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        prefix = "__Host-" if settings.cookie_secure else ""
        self.session_cookie = f"{prefix}guichet_session"
        self.anon_cookie = f"{prefix}guichet_anon"
        self.flash_cookie = f"{prefix}guichet_flash"
        self.env = Environment(
            loader=PackageLoader("confiance.guichet.web", "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["url"] = self.url
        self.env.globals["static"] = self.static_url
        self._static_version = _static_version()
        self._url_names: dict[str, str] = {}
        self.nav_builder: Callable[[Rq], list[dict[str, Any]]] = lambda rq: []
        self.load_user: Callable[[ActiveSession], User | None] = lambda sess: None
        self.on_session_end: Callable[[str], None] = lambda token: None
        self.globals: dict[str, Any] = {}
        self.read: Any = None  # ReadModels, set by web_routes

    # ----- URLs -----
    def register_url(self, name: str, path: str) -> None:
        self._url_names[name] = path

    def url(self, name: str, **params: Any) -> str:
        path = self._url_names[name]
        query = {}
        for k, v in params.items():
            token = "{" + k + "}"
            token_int = "{" + k + ":int}"
            if token in path or token_int in path:
                path = path.replace(token_int, str(v)).replace(token, str(v))
            elif v is not None and v != "":
                query[k] = v
        return path + ("?" + urlencode(query) if query else "")

    def static_url(self, name: str) -> str:
        return f"/static/{name}?v={self._static_version}"

    # ----- cookies -----
    def _cookie(self, resp: Response, name: str, value: str, max_age: int | None) -> None:
        resp.set_cookie(
            name, value, max_age=max_age, path="/", secure=self.settings.cookie_secure, httponly=True, samesite="lax"
        )

    def set_session_cookie(self, resp: Response, token: str) -> None:
        self._cookie(resp, self.session_cookie, token, self.settings.session_absolute_hours * 3600)
        resp.delete_cookie(
            self.anon_cookie, path="/", secure=self.settings.cookie_secure, httponly=True, samesite="lax"
        )

    def clear_session_cookie(self, resp: Response) -> None:
        resp.delete_cookie(
            self.session_cookie, path="/", secure=self.settings.cookie_secure, httponly=True, samesite="lax"
        )

    def set_flash(self, resp: Response, flash: Flash) -> None:
        raw = json.dumps({"k": flash.kind, "t": flash.text[:500], "d": [d[:500] for d in flash.details[:20]]}).encode()
        sig = hmac.new(self.settings.key(), b"flash:" + raw, hashlib.sha256).hexdigest()[:32]
        self._cookie(resp, self.flash_cookie, base64.urlsafe_b64encode(raw).decode() + "." + sig, 60)

    def read_flash(self, request: Request) -> Flash | None:
        value = request.cookies.get(self.flash_cookie)
        if not value or "." not in value:
            return None
        b64, sig = value.rsplit(".", 1)
        try:
            raw = base64.urlsafe_b64decode(b64.encode())
        except ValueError:
            return None
        good = hmac.new(self.settings.key(), b"flash:" + raw, hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(good, sig):
            return None
        data = json.loads(raw)
        return Flash(str(data["k"]), str(data["t"]), [str(d) for d in data.get("d", [])])

    # ----- rendering -----
    def render(self, rq: Rq, template: str, status: int = 200, **ctx: Any) -> Response:
        tpl = self.env.get_template(template)
        html = tpl.render(
            user=rq.user,
            csrf=rq.csrf,
            flashes=rq.flashes,
            nav=self.nav_builder(rq),
            now=rq.now,
            request=rq.request,
            qs=lambda **kw: urlencode({**dict(rq.request.query_params), **kw}),
            **self.globals,
            **ctx,
        )
        return HTMLResponse(html, status_code=status)

    # ----- the route wrapper -----
    def page(
        self,
        handler: Handler,
        *,
        login: bool = True,
        roles: Iterable[str] | None = None,
        candidate: bool = False,
        ans: bool = False,
    ) -> Callable[[Request], Any]:
        """Wrap a page: session, CSRF on unsafe methods, role checks, error rendering."""
        allowed = frozenset(roles or ())

        async def endpoint(request: Request) -> Response:
            now = self.clock()
            token = request.cookies.get(self.session_cookie)
            user: User | None = None
            cookie = ""
            if token:
                sess = await run_in_threadpool(self.sessions.lookup, token, now)
                if sess is not None:
                    user = await run_in_threadpool(self.load_user, sess)
                if user is None:
                    await run_in_threadpool(self.on_session_end, token)
                else:
                    cookie = token
            anon_new = False
            if user is None:
                cookie = request.cookies.get(self.anon_cookie) or ""
                if not cookie:
                    cookie, anon_new = new_token(), True
            form: FormData | None = None
            rq = Rq(request, self, user, cookie, None, now)
            if request.method not in ("GET", "HEAD"):
                if not self._same_origin(request):
                    return self._error(rq, 403, "Requête refusée : origine inattendue (protection CSRF).")
                limit = self.max_body()
                declared = request.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    return self._error(rq, 413, f"Envoi trop volumineux (maximum {limit // 1024} Kio).")
                request = Request(request.scope, _limited_receive(request.receive, limit))
                rq.request = request
                try:
                    form = await request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)
                except BodyTooLarge:
                    return self._error(rq, 413, f"Envoi trop volumineux (maximum {limit // 1024} Kio).")
                except Exception:  # malformed multipart or too many parts
                    return self._error(rq, 400, "Formulaire illisible ou trop volumineux.")
                submitted = form.get("csrf")
                if anon_new or not csrf_valid(
                    self.settings.key(), cookie, submitted if isinstance(submitted, str) else None
                ):
                    resp = self._error(
                        rq, 403, "Formulaire expiré ou invalide (jeton anti-CSRF). Rechargez la page et recommencez."
                    )
                    if anon_new:
                        self._cookie(resp, self.anon_cookie, cookie, 3600)
                    return resp
                rq.form = form
            if login and user is None:
                if request.method in ("GET", "HEAD"):
                    nxt = request.url.path + (("?" + request.url.query) if request.url.query else "")
                    return RedirectResponse(self.url("login", next=nxt), status_code=303)
                return self._error(rq, 401, "Session expirée : reconnectez-vous.")
            if user is not None and (
                (candidate and not user.is_candidate)
                or (ans and not user.is_ans)
                or (allowed and not any(user.has(r) for r in allowed))
            ):
                return self._error(
                    rq, 403, "Accès refusé : votre compte n'a pas les droits nécessaires pour cette page."
                )
            flash = self.read_flash(request)
            if flash is not None:
                rq.flashes.append(flash)
            try:
                resp = await run_in_threadpool(handler, rq)
            except Forbidden:
                resp = self._error(rq, 403, "Accès refusé : cet élément ne relève pas de votre compte.")
            except NotFound:
                resp = self._error(rq, 404, "Page ou élément introuvable.")
            except ServiceError as exc:  # a refusal a page did not handle itself: show it, in French
                status = exc.status if exc.status in (403, 404, 409, 422) else 400
                resp = self._error(rq, status, exc.message[:1].upper() + exc.message[1:] + ".")
            except Exception:
                log.exception("erreur interne sur %s %s", request.method, request.url.path)
                resp = self._error(
                    rq, 500, "Erreur interne : l'action n'a pas abouti. Réessayez ou contactez le support."
                )
            finally:
                if form is not None:
                    await form.close()
            if flash is not None:
                resp.delete_cookie(
                    self.flash_cookie, path="/", secure=self.settings.cookie_secure, httponly=True, samesite="lax"
                )
            if anon_new:
                self._cookie(resp, self.anon_cookie, cookie, 3600)
            for name, value, max_age in rq.set_cookies:
                self._cookie(resp, name, value, max_age)
            for k, v in SECURITY_HEADERS.items():
                resp.headers.setdefault(k, v)
            if user is not None:
                resp.headers.setdefault("Cache-Control", "private, no-store")
            return resp

        return endpoint

    def max_body(self) -> int:
        """Largest accepted request body: one evidence file plus the form's fields."""
        upload = int(getattr(getattr(self.service, "settings", None), "max_upload_bytes", 10 * 1024 * 1024))
        return upload + 256 * 1024

    def _same_origin(self, request: Request) -> bool:
        """Defence in depth beside the token: a browser's Origin must be this site."""
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return origin is None
        host = request.headers.get("host", "")
        return urlsplit(origin).netloc == host

    def _error(self, rq: Rq, status: int, message: str) -> Response:
        titles = {
            400: "Requête invalide",
            401: "Connexion requise",
            403: "Accès refusé",
            404: "Introuvable",
            500: "Erreur",
        }
        return self.render(
            rq, "error.html", status=status, title=titles.get(status, "Erreur"), message=message, status_code=status
        )


def _static_version() -> str:
    h = hashlib.sha256()
    for p in sorted(STATIC_DIR.iterdir()):
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()[:10]
