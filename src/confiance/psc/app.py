"""HTTP edge of the PSC sandbox: Keycloak paths, client credentials, pages, wiring.

Handlers only extract values (form fields, Basic credentials, the verified TLS client
certificate) and render what ``domain.Provider`` decides. Request reading lives in
``http.py``, the published documents in ``discovery.py``, the admin API in ``admin.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from confiance.core.clientcert import CertificateVerifier, client_certificate, parse_networks
from confiance.core.errors import oauth_error
from confiance.core.health import Health
from confiance.core.jose import KeyStore
from confiance.core.trustlist import TrustListClient
from confiance.pki import normalize_dn

from . import pages
from .acr import CHANNELS
from .admin import AdminApi
from .clients import CIBA_GRANT, Client, Credentials, parse_basic
from .config import REALM, SIGNING_ALGS, ClientConfig, EcpsPolicy, Lifetimes, PscConfig
from .discovery import discovery, realm_document
from .domain import Provider
from .errors import (
    InvalidRequestError,
    OAuthError,
    RedirectError,
    UnauthorizedClientError,
    UnsupportedTokenTypeError,
    error_headers,
)
from .hotpath import HotPath
from .http import BodyTooLarge, json_response, query_params, read_form, with_query
from .identities import Identity, load_identities_file, seeded_identities
from .readiness import readiness_checks
from .sharing import SharedSettings, client_from_config
from .store import StateStore, open_store
from .tokens import JwtSigner

log = logging.getLogger("confiance.psc")
REALM_PATH = f"/auth/realms/{REALM}"
OIDC = f"{REALM_PATH}/protocol/openid-connect"
Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class PscSandbox:
    """The running sandbox: configuration, keys, provider, and the Starlette app."""

    config: PscConfig
    clock: Callable[[], float] = time.time
    provider: Provider = field(init=False)
    keys: KeyStore = field(init=False)
    app: HotPath = field(init=False)
    base_url: str = field(init=False)
    store: StateStore = field(init=False)
    shared: SharedSettings = field(init=False)
    _form_key: bytes = field(init=False)
    trust: TrustListClient | None = field(init=False, default=None)
    _dn_cache: dict[bytes, str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        cfg = self.config
        self.keys = KeyStore(cfg.keys_path, algs=SIGNING_ALGS)
        self.base_url = cfg.issuer_base()
        self.store = open_store(cfg.store_url(), cfg.store_prefix)
        self.provider = Provider(
            issuer=self.base_url + REALM_PATH,
            store=self.store,
            signer=JwtSigner(self.keys),
            lifetimes=cfg.lifetimes,
            ecps_default=cfg.ecps_default,
            signing_alg=cfg.signing_alg,
            # shared by every worker and kept across restarts, so refresh tokens and e-CPS forms stay valid
            refresh_key=self.store.secret("refresh_key", lambda: secrets.token_bytes(32)),
        )
        self._form_key = self.store.secret("form_key", lambda: secrets.token_bytes(32))
        idents: list[Identity] = seeded_identities() if cfg.seed_identities else []
        if cfg.identities_file is not None:
            idents += load_identities_file(cfg.identities_file)
        for ident in idents:
            self.provider.add_identity(ident)
        for c in cfg.clients:
            self.provider.add_client(client_from_config(c))
        self._load_legacy_state()
        self.shared = SharedSettings(self.store, self.provider, cfg, on_keys=self._reload_keys)
        self.shared.sync(force=True)
        self._trusted = parse_networks(cfg.trusted_proxies)
        self._verifier = (
            CertificateVerifier(cfg.tls.ca_bundle, cfg.tls.crl)
            if cfg.tls is not None and cfg.tls.ca_bundle is not None and self._trusted
            else None
        )
        self.trust = cfg.trust_list.client(cfg.tls.ca_bundle if cfg.tls else None) if cfg.trust_list else None
        self.app = HotPath(self, self._build_app(), OIDC)
        self.app.state.sandbox = self

    # ------------------------------------------------------------------ runtime knobs
    @property
    def issuer(self) -> str:
        return self.provider.issuer

    def set_base_url(self, base_url: str) -> None:
        """Fix the public URL once the port is known (tests bind port 0 first)."""
        self.base_url = base_url.rstrip("/")
        self.provider.issuer = self.base_url + REALM_PATH

    def set_lifetimes(self, **values: float) -> Lifetimes:
        """Test hook: shorten (or restore) any lifetime on the live instance."""
        lifetimes = Lifetimes.model_validate({**self.provider.lifetimes.model_dump(), **values})
        self.shared.set_lifetimes(lifetimes)
        return lifetimes

    def set_ecps(self, mode: str, delay_ms: int = 0, national_id: str | None = None) -> EcpsPolicy:
        """Default e-CPS policy, or one identity's when ``national_id`` is given."""
        policy = EcpsPolicy.model_validate({"mode": mode, "delay_ms": delay_ms})
        if national_id is None:
            self.shared.set_ecps_default(policy)
        else:
            if national_id not in self.provider.identities:
                raise KeyError(national_id)
            self.shared.set_ecps_overrides({**self.provider.ecps_overrides, national_id: policy})
        return policy

    def set_outage(self, seconds: float, mode: str = "503") -> dict[str, Any]:
        """Test hook: play "PSC is down" on the protocol endpoints for ``seconds`` (bounded, so
        a tool that dies mid-check never leaves the sandbox down); admin routes stay up."""
        outage = {"until": self.clock() + seconds, "mode": mode}
        self.shared.set_outage(outage)
        return self.outage_view()

    def end_outage(self) -> None:
        self.shared.set_outage(None)

    def outage_now(self) -> dict[str, Any] | None:
        """The outage in force at this instant (every worker sees it within ``shared.interval``)."""
        self.shared.sync()
        outage = self.shared.outage
        if outage is None or float(outage.get("until", 0)) <= self.clock():
            return None
        return outage

    def outage_view(self) -> dict[str, Any]:
        outage = self.outage_now()
        if outage is None:
            return {"active": False}
        remaining = round(float(outage["until"]) - self.clock(), 3)
        return {"active": True, "mode": outage.get("mode", "503"), "remaining_seconds": remaining}

    def clear_ecps_overrides(self) -> None:
        self.shared.set_ecps_overrides({})

    def rotate_keys(self) -> None:
        lt = self.provider.lifetimes
        self.provider.signer.rotate(keep_for_seconds=max(lt.access_token, lt.id_token) + 60)
        self.shared.keys_rotated()

    def _reload_keys(self) -> None:
        """Another worker rotated the keys: read them again from ``keys_path``."""
        if self.config.keys_path is not None:
            self.keys = KeyStore(self.config.keys_path, algs=SIGNING_ALGS)
            self.provider.signer = JwtSigner(self.keys)

    # ------------------------------------------------------------------ admin additions
    def _load_legacy_state(self) -> None:
        """Clients and identities an older sandbox saved in ``state_file`` (now kept in the store)."""
        path = self.config.state_file
        if path is None or not path.exists():
            return
        data = json.loads(path.read_text())
        for c in data.get("clients", []):
            self.provider.add_client(client_from_config(ClientConfig.model_validate(c)))
        for i in data.get("identities", []):
            self.provider.add_identity(Identity.model_validate(i))

    def register_client(self, cfg: ClientConfig) -> Client:
        return self.shared.add_client(cfg)

    def register_identity(self, ident: Identity) -> Identity:
        self.shared.add_identity(ident)
        return ident

    def discovery(self) -> dict[str, Any]:
        return discovery(self.issuer)

    # ------------------------------------------------------------------ request helpers
    async def _form(self, request: Request) -> dict[str, str]:
        return await read_form(request, self.config.max_body_bytes)

    def _cert_dn(self, scope: Scope) -> str | None:
        """The normalised subject DN of the caller's verified certificate, parsed once per
        certificate (a keep-alive connection presents the same one on every request)."""
        cert = client_certificate(scope, self._trusted, self._verifier)
        if cert is None:
            return None
        dn = self._dn_cache.get(cert.der)
        if dn is None:
            if len(self._dn_cache) >= 4096:
                self._dn_cache.clear()
            dn = self._dn_cache[cert.der] = normalize_dn(cert.subject_dn)
        return dn

    def _credentials(self, scope: Scope, authorization: str | None, form: dict[str, str]) -> Credentials:
        basic, malformed = parse_basic(authorization)
        cid = basic[0] if basic else form.get("client_id")
        if cid and cid not in self.provider.clients:
            self.shared.sync(force=True)  # registered on another worker?
        return Credentials(
            client_id=form.get("client_id"),
            basic=basic,
            basic_malformed=malformed,
            secret_post=form.get("client_secret"),
            cert_dn=self._cert_dn(scope),
        )

    def authenticated(
        self, scope: Scope, authorization: str | None, form: dict[str, str], issuing: bool = False
    ) -> Client:
        """Authenticate the client; ``issuing`` calls (CIBA, token) also pass the trust-space check."""
        client = self.provider.authenticate(self._credentials(scope, authorization, form))
        if issuing:
            self._admit(scope, client)
        return client

    def _client(self, request: Request, form: dict[str, str], issuing: bool = False) -> Client:
        return self.authenticated(request.scope, request.headers.get("authorization"), form, issuing)

    def _admit(self, scope: Scope, client: Client) -> None:
        """Trust-space mode: the client's certificate must belong to a valid habilitation.

        Checked on every call that issues something (CIBA request, token, refresh), so a
        withdrawn habilitation stops new tokens within one trust-list refresh period;
        introspection, revocation and logout stay open so sessions can always be closed.
        """
        settings = self.config.trust_list
        if self.trust is None or settings is None or not settings.applies_to(client.trust_list_required):
            return
        cert = client_certificate(scope, self._trusted, self._verifier)
        if cert is None:
            raise UnauthorizedClientError(
                "Espace de Confiance : authentification mTLS par un certificat habilité requise"
            )
        admission = self.trust.admit(cert.x5t_s256)
        if not admission.admitted:
            raise UnauthorizedClientError(f"Espace de Confiance : {admission.reason}")

    # ------------------------------------------------------------------ endpoints
    async def well_known(self, _request: Request) -> Response:
        return JSONResponse(self.discovery())

    async def realm_info(self, _request: Request) -> Response:
        """Keycloak's realm document (``GET /auth/realms/{realm}``), read by some adapters."""
        public = self.keys.signing_key("RS256").public_key
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return json_response(realm_document(self.issuer, base64.b64encode(der).decode()))

    async def certs(self, _request: Request) -> Response:
        return JSONResponse(self.keys.jwks(), headers={"Cache-Control": "no-cache"})

    # The two endpoints relying parties call most; ``hotpath`` serves their POSTs without
    # Starlette's request objects, these handlers anything else that reaches them.
    def ciba_request(self, scope: Scope, authorization: str | None, form: dict[str, str]) -> dict[str, Any]:
        self.shared.sync(force=True)  # the request snapshots e-CPS policy and lifetimes
        client = self.authenticated(scope, authorization, form, issuing=True)
        result = self.provider.ciba_start(client, form, self.clock())
        log.info("ciba request %s client=%s", result["auth_req_id"], client.client_id)
        return result

    def token_request(self, scope: Scope, authorization: str | None, form: dict[str, str]) -> dict[str, Any]:
        client = self.authenticated(scope, authorization, form, issuing=True)
        return self.provider.token(client, form, self.clock())

    async def ciba_auth(self, request: Request) -> Response:
        form = await self._form(request)
        return json_response(self.ciba_request(request.scope, request.headers.get("authorization"), form))

    async def token(self, request: Request) -> Response:
        form = await self._form(request)
        return json_response(self.token_request(request.scope, request.headers.get("authorization"), form))

    async def introspect(self, request: Request) -> Response:
        form = await self._form(request)
        client = self._client(request, form)
        return json_response(
            self.provider.introspect(client, form.get("token"), form.get("token_type_hint"), self.clock())
        )

    async def revoke(self, request: Request) -> Response:
        form = await self._form(request)
        client = self._client(request, form)
        hint = form.get("token_type_hint")
        if hint is not None and hint not in ("access_token", "refresh_token"):
            raise UnsupportedTokenTypeError("token_type_hint non supporté")
        self.provider.revoke(client, form.get("token"), self.clock())
        return Response(status_code=200, headers={"Cache-Control": "no-store"})

    async def userinfo(self, request: Request) -> Response:
        token: str | None = None
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        if request.method == "POST":
            form = await self._form(request) if request.headers.get("content-type") else {}
            if "access_token" in form:
                if token is not None:
                    raise InvalidRequestError("jeton d'accès transmis deux fois")
                token = form["access_token"]
        claims, client = self.provider.userinfo(token, self.clock())
        wants_jwt = "application/jwt" in request.headers.get("accept", "")
        alg = client.userinfo_alg if client is not None else None
        if wants_jwt or alg:
            signed = {**claims, "iss": self.issuer, "aud": client.client_id if client else None}
            signed["iat"] = int(self.clock())
            jwt = self.provider.signer.sign(signed, alg or self.provider.signing_alg)
            return Response(jwt, media_type="application/jwt", headers={"Cache-Control": "no-store"})
        return json_response(claims)

    async def logout(self, request: Request) -> Response:
        now = self.clock()
        if request.method == "POST":
            form = await self._form(request)
        else:
            form = query_params(request)
        if request.method == "POST" and "refresh_token" in form and "id_token_hint" not in form:
            self.provider.logout_by_refresh(self._client(request, form), form.get("refresh_token"))
            return Response(status_code=204)
        target = form.get("post_logout_redirect_uri")
        session = self.provider.logout(form.get("id_token_hint"), target, now)
        if target:
            params = {"state": form["state"]} if "state" in form else {}
            return RedirectResponse(with_query(target, params), status_code=302)
        return HTMLResponse(pages.logged_out(session is not None))

    async def authorize(self, request: Request) -> Response:
        self.shared.sync(force=True)
        now = self.clock()
        if request.method == "GET":
            params = query_params(request)
            try:
                client, tx = self.provider.authorize_request(params, now)
            except RedirectError as exc:
                return _redirect_error(exc, self.issuer)
            except OAuthError as exc:
                return HTMLResponse(pages.error_page(exc.description), status_code=400)
            idents = sorted(self.provider.identities.values(), key=lambda i: (i.family_name, i.given_name))
            return HTMLResponse(
                pages.login_page(client, tx.id, idents, self._form_token(tx.id), params.get("login_hint")),
                headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
            )
        form = await self._form(request)
        tx_id = form.get("tx", "")
        if not hmac.compare_digest(form.get("csrf", ""), self._form_token(tx_id)):
            return HTMLResponse(pages.error_page("formulaire invalide (jeton anti-rejeu)"), status_code=400)
        try:
            channel = form.get("channel", "CARD")
            if channel not in CHANNELS:
                raise InvalidRequestError("moyen d'authentification inconnu")
            uri, query = self.provider.login_answer(
                tx_id, form.get("national_id"), form.get("action") == "approve", now, channel
            )
        except OAuthError as exc:
            return HTMLResponse(pages.error_page(exc.description), status_code=400)
        return RedirectResponse(with_query(uri, query), status_code=302)

    def _form_token(self, value: str) -> str:
        return hmac.new(self._form_key, value.encode(), "sha256").hexdigest()

    # ------------------------------------------------------------------ e-CPS simulator page
    async def ecps_page(self, request: Request) -> Response:
        now = self.clock()
        pending = self.provider.pending_ciba(now)
        rows = [(r, self.provider.identities.get(r.national_id), self._form_token("ecps:" + r.id)) for r in pending]
        return HTMLResponse(
            pages.ecps_page(rows, now, request.query_params.get("msg")),
            headers={"Cache-Control": "no-store", "Refresh": "3", "X-Frame-Options": "DENY"},
        )

    async def ecps_decide(self, request: Request) -> Response:
        rid = request.path_params["rid"]
        if request.path_params["action"] not in ("approve", "deny"):
            return HTMLResponse(pages.error_page("action inconnue"), status_code=404)
        form = await self._form(request)
        if not hmac.compare_digest(form.get("csrf", ""), self._form_token("ecps:" + rid)):
            return HTMLResponse(pages.error_page("formulaire invalide (jeton anti-rejeu)"), status_code=400)
        approve = request.path_params["action"] == "approve"
        try:
            self.provider.ciba_decide(rid, approve, self.clock())
        except OAuthError as exc:
            return HTMLResponse(pages.error_page(exc.description), status_code=exc.status)
        msg = "Demande approuvée" if approve else "Demande refusée"
        return RedirectResponse("/sandbox/ecps?" + urlencode({"msg": msg}), status_code=303)

    async def health(self, _request: Request) -> Response:
        # ``worker``: which process answered (several share the socket with --workers N)
        return json_response({"status": "ok", "issuer": self.issuer, "worker": os.getpid()})

    # ------------------------------------------------------------------ wiring
    def _build_app(self) -> Starlette:
        def wrap(fn: Handler) -> Handler:
            async def handler(request: Request) -> Response:
                try:
                    self.shared.sync()
                    return await fn(request)
                except OAuthError as exc:
                    return oauth_error(exc.error, exc.description, exc.status, **error_headers(exc, request.url.path))
                except BodyTooLarge:
                    return oauth_error("invalid_request", "corps de requête trop volumineux", 413)
                except Exception:
                    log.exception("unexpected error on %s", request.url.path)
                    return oauth_error("server_error", "erreur interne du bac à sable", 500)

            return handler

        def r(path: str, fn: Handler, methods: list[str]) -> Route:
            return Route(path, wrap(fn), methods=methods)

        routes = [
            r(REALM_PATH, self.realm_info, ["GET"]),
            r(f"{REALM_PATH}/.well-known/openid-configuration", self.well_known, ["GET"]),
            r(f"{REALM_PATH}/.well-known/wallet-openid-configuration", self.well_known, ["GET"]),
            r(f"{OIDC}/certs", self.certs, ["GET"]),
            r(f"{OIDC}/ext/ciba/auth", self.ciba_auth, ["POST"]),
            r(f"{OIDC}/token", self.token, ["POST"]),
            r(f"{OIDC}/token/introspect", self.introspect, ["POST"]),
            r(f"{OIDC}/revoke", self.revoke, ["POST"]),
            r(f"{OIDC}/userinfo", self.userinfo, ["GET", "POST"]),
            r(f"{OIDC}/logout", self.logout, ["GET", "POST"]),
            r(f"{OIDC}/auth", self.authorize, ["GET", "POST"]),
            r("/sandbox/ecps", self.ecps_page, ["GET"]),
            r("/sandbox/ecps/{rid}/{action:str}", self.ecps_decide, ["POST"]),
            *(r(path, fn, methods) for path, fn, methods in AdminApi(self).routes()),
            r("/health", self.health, ["GET"]),
            *Health("psc", readiness_checks(self)).routes(),
        ]
        app = Starlette(routes=routes, lifespan=self._lifespan)
        return app

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        if self.trust is not None:
            # first fetch off the loop; an unreachable guichet is retried by the refresh thread
            await asyncio.to_thread(self.trust.start)
        try:
            yield
        finally:
            if self.trust is not None:
                self.trust.stop()


def _redirect_error(exc: RedirectError, issuer: str) -> Response:
    params = {"error": exc.error, "error_description": exc.description, "iss": issuer}
    if exc.state is not None:
        params["state"] = exc.state
    return RedirectResponse(with_query(exc.redirect_uri, params), status_code=302)


def create_app(config: PscConfig, clock: Callable[[], float] = time.time) -> HotPath:
    """The ASGI app; ``app.state.sandbox`` is the ``PscSandbox`` (runtime knobs for tests)."""
    return PscSandbox(config, clock).app


__all__ = ["CIBA_GRANT", "OIDC", "REALM_PATH", "PscSandbox", "create_app"]
