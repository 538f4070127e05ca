"""HTTP edge of the PSC sandbox: Keycloak paths, form parsing, client credentials, pages.

Handlers only extract values (form fields, Basic credentials, the verified TLS client
certificate) and render what ``domain.Provider`` decides. Bodies are read with a hard size
limit and parsed strictly (duplicate parameters refused, RFC 6749 §3.2), so hostile input
ends as an OAuth error JSON with a 4xx status, never as a 500.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from confiance.core.clientcert import CertificateVerifier, client_certificate, parse_networks
from confiance.core.config import format_validation_error
from confiance.core.errors import oauth_error
from confiance.core.jose import KeyStore
from confiance.core.trustlist import TrustListClient
from confiance.pki import normalize_dn

from . import pages
from .config import REALM, SIGNING_ALGS, ClientConfig, EcpsPolicy, Lifetimes, PscConfig
from .domain import (
    CIBA_GRANT,
    SUPPORTED_GRANTS,
    SUPPORTED_SCOPES,
    Client,
    Credentials,
    OAuthError,
    Provider,
    RedirectError,
    parse_basic,
)
from .identities import Identity, load_identities_file, seeded_identities
from .store import MemoryStore

log = logging.getLogger("confiance.psc")
REALM_PATH = f"/auth/realms/{REALM}"
OIDC = f"{REALM_PATH}/protocol/openid-connect"
Handler = Callable[[Request], Awaitable[Response]]


class BodyTooLarge(Exception):
    pass


def client_from_config(c: ClientConfig) -> Client:
    return Client(
        client_id=c.client_id,
        secret=c.secret,
        subject_dn=c.tls_client_auth_subject_dn,
        espace_de_confiance=c.espace_de_confiance,
        trust_list_required=c.trust_list_required,
        redirect_uris=tuple(c.redirect_uris),
        post_logout_redirect_uris=tuple(c.post_logout_redirect_uris),
        grant_types=tuple(g for g in c.grant_types if g in SUPPORTED_GRANTS),
        name=c.name,
        id_token_alg=c.id_token_signed_response_alg,
        access_token_alg=c.access_token_signed_response_alg,
        userinfo_alg=c.userinfo_signed_response_alg,
    )


@dataclass
class PscSandbox:
    """The running sandbox: configuration, keys, provider, and the Starlette app."""

    config: PscConfig
    clock: Callable[[], float] = time.time
    provider: Provider = field(init=False)
    keys: KeyStore = field(init=False)
    app: Starlette = field(init=False)
    base_url: str = field(init=False)
    _form_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    trust: TrustListClient | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        from .tokens import JwtSigner

        cfg = self.config
        self.keys = KeyStore(cfg.keys_path, algs=SIGNING_ALGS)
        self.base_url = cfg.issuer_base()
        self.provider = Provider(
            issuer=self.base_url + REALM_PATH,
            store=MemoryStore(),
            signer=JwtSigner(self.keys),
            lifetimes=cfg.lifetimes,
            ecps_default=cfg.ecps_default,
            signing_alg=cfg.signing_alg,
        )
        idents: list[Identity] = seeded_identities() if cfg.seed_identities else []
        if cfg.identities_file is not None:
            idents += load_identities_file(cfg.identities_file)
        for ident in idents:
            self.provider.add_identity(ident)
        for c in cfg.clients:
            self.provider.add_client(client_from_config(c))
        self._load_state()
        self._trusted = parse_networks(cfg.trusted_proxies)
        self._verifier = (
            CertificateVerifier(cfg.tls.ca_bundle, cfg.tls.crl)
            if cfg.tls is not None and cfg.tls.ca_bundle is not None and self._trusted
            else None
        )
        self.trust = cfg.trust_list.client(cfg.tls.ca_bundle if cfg.tls else None) if cfg.trust_list else None
        self.app = self._build_app()
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
        self.provider.lifetimes = Lifetimes.model_validate({**self.provider.lifetimes.model_dump(), **values})
        return self.provider.lifetimes

    def set_ecps(self, mode: str, delay_ms: int = 0, national_id: str | None = None) -> EcpsPolicy:
        """Default e-CPS policy, or one identity's when ``national_id`` is given."""
        policy = EcpsPolicy.model_validate({"mode": mode, "delay_ms": delay_ms})
        if national_id is None:
            self.provider.ecps_default = policy
        else:
            if national_id not in self.provider.identities:
                raise KeyError(national_id)
            self.provider.ecps_overrides[national_id] = policy
        return policy

    def rotate_keys(self) -> None:
        lt = self.provider.lifetimes
        self.provider.signer.rotate(keep_for_seconds=max(lt.access_token, lt.id_token) + 60)

    # ------------------------------------------------------------------ persistence of admin additions
    def _load_state(self) -> None:
        path = self.config.state_file
        if path is None or not path.exists():
            return
        data = json.loads(path.read_text())
        for c in data.get("clients", []):
            self.provider.add_client(client_from_config(ClientConfig.model_validate(c)))
        for i in data.get("identities", []):
            self.provider.add_identity(Identity.model_validate(i))

    def _save_state(self, kind: str, item: dict[str, Any]) -> None:
        path = self.config.state_file
        if path is None:
            return
        data = json.loads(path.read_text()) if path.exists() else {"clients": [], "identities": []}
        key = "client_id" if kind == "clients" else "national_id"
        data[kind] = [x for x in data.get(kind, []) if x.get(key) != item[key]] + [item]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1))
        tmp.replace(path)

    def register_client(self, cfg: ClientConfig) -> Client:
        client = client_from_config(cfg)
        self.provider.add_client(client)
        self._save_state("clients", cfg.model_dump(mode="json"))
        return client

    def register_identity(self, ident: Identity) -> Identity:
        self.provider.add_identity(ident)
        self._save_state("identities", ident.model_dump(mode="json", exclude_none=True))
        return ident

    # ------------------------------------------------------------------ documents
    def discovery(self) -> dict[str, Any]:
        iss = self.issuer
        o = f"{iss}/protocol/openid-connect"
        return {
            "issuer": iss,
            "authorization_endpoint": f"{o}/auth",
            "token_endpoint": f"{o}/token",
            "introspection_endpoint": f"{o}/token/introspect",
            "userinfo_endpoint": f"{o}/userinfo",
            "end_session_endpoint": f"{o}/logout",
            "revocation_endpoint": f"{o}/revoke",
            "jwks_uri": f"{o}/certs",
            "backchannel_authentication_endpoint": f"{o}/ext/ciba/auth",
            "grant_types_supported": [*SUPPORTED_GRANTS],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": list(SIGNING_ALGS),
            "userinfo_signing_alg_values_supported": list(SIGNING_ALGS),
            "introspection_endpoint_auth_methods_supported": _AUTH_METHODS,
            "revocation_endpoint_auth_methods_supported": _AUTH_METHODS,
            "token_endpoint_auth_methods_supported": _AUTH_METHODS,
            "backchannel_authentication_request_signing_alg_values_supported": list(SIGNING_ALGS),
            "backchannel_token_delivery_modes_supported": ["poll"],
            "backchannel_user_code_parameter_supported": False,
            "tls_client_certificate_bound_access_tokens": False,
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": sorted(SUPPORTED_SCOPES),
            "claims_supported": _CLAIMS,
            "acr_values_supported": ["eidas1"],
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
            "frontchannel_logout_supported": False,
            "backchannel_logout_supported": False,
            "mtls_endpoint_aliases": {
                "token_endpoint": f"{o}/token",
                "introspection_endpoint": f"{o}/token/introspect",
                "revocation_endpoint": f"{o}/revoke",
                "userinfo_endpoint": f"{o}/userinfo",
                "backchannel_authentication_endpoint": f"{o}/ext/ciba/auth",
                "end_session_endpoint": f"{o}/logout",
            },
        }

    # ------------------------------------------------------------------ request helpers
    async def _body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > limit:
                    raise BodyTooLarge
            except ValueError:
                raise OAuthError("invalid_request", "Content-Length invalide") from None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def _form(self, request: Request) -> dict[str, str]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await self._body(request)
        if ctype != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", "Content-Type application/x-www-form-urlencoded attendu")
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
        except (UnicodeDecodeError, ValueError):
            raise OAuthError("invalid_request", "corps de requête mal formé") from None
        form: dict[str, str] = {}
        for k, v in pairs:
            if k in form:
                raise OAuthError("invalid_request", f"paramètre répété : {k[:40]}")
            if len(v) > 8192:
                raise OAuthError("invalid_request", f"paramètre trop long : {k[:40]}")
            form[k] = v
        return form

    def _credentials(self, request: Request, form: dict[str, str]) -> Credentials:
        basic, malformed = parse_basic(request.headers.get("authorization"))
        cert = client_certificate(request.scope, self._trusted, self._verifier)
        return Credentials(
            client_id=form.get("client_id"),
            basic=basic,
            basic_malformed=malformed,
            secret_post=form.get("client_secret"),
            cert_dn=normalize_dn(cert.subject_dn) if cert is not None else None,
        )

    def _client(self, request: Request, form: dict[str, str], issuing: bool = False) -> Client:
        """Authenticate the client; ``issuing`` calls (CIBA, token) also pass the trust-space check."""
        client = self.provider.authenticate(self._credentials(request, form))
        if issuing:
            self._admit(request, client)
        return client

    def _admit(self, request: Request, client: Client) -> None:
        """Trust-space mode: the client's certificate must belong to a valid habilitation.

        Checked on every call that issues something (CIBA request, token, refresh), so a
        withdrawn habilitation stops new tokens within one trust-list refresh period;
        introspection, revocation and logout stay open so sessions can always be closed.
        """
        settings = self.config.trust_list
        if self.trust is None or settings is None or not settings.applies_to(client.trust_list_required):
            return
        cert = client_certificate(request.scope, self._trusted, self._verifier)
        if cert is None:
            raise OAuthError(
                "unauthorized_client", "Espace de Confiance : authentification mTLS par un certificat habilité requise"
            )
        admission = self.trust.admit(cert.x5t_s256)
        if not admission.admitted:
            raise OAuthError("unauthorized_client", f"Espace de Confiance : {admission.reason}")

    # ------------------------------------------------------------------ endpoints
    async def well_known(self, _request: Request) -> Response:
        return JSONResponse(self.discovery())

    async def realm_info(self, _request: Request) -> Response:
        """Keycloak's realm document (``GET /auth/realms/{realm}``), read by some adapters."""
        public = self.keys.signing_key("RS256").public_key
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return _json(
            {
                "realm": REALM,
                "public_key": base64.b64encode(der).decode(),
                "token-service": f"{self.issuer}/protocol/openid-connect",
                "account-service": f"{self.issuer}/account",
                "tokens-not-before": 0,
            }
        )

    async def certs(self, _request: Request) -> Response:
        return JSONResponse(self.keys.jwks(), headers={"Cache-Control": "no-cache"})

    async def ciba_auth(self, request: Request) -> Response:
        form = await self._form(request)
        client = self._client(request, form, issuing=True)
        result = self.provider.ciba_start(client, form, self.clock())
        log.info("ciba request %s client=%s", result["auth_req_id"], client.client_id)
        return _json(result)

    async def token(self, request: Request) -> Response:
        form = await self._form(request)
        client = self._client(request, form, issuing=True)
        return _json(self.provider.token(client, form, self.clock()))

    async def introspect(self, request: Request) -> Response:
        form = await self._form(request)
        client = self._client(request, form)
        return _json(self.provider.introspect(client, form.get("token"), form.get("token_type_hint"), self.clock()))

    async def revoke(self, request: Request) -> Response:
        form = await self._form(request)
        client = self._client(request, form)
        hint = form.get("token_type_hint")
        if hint is not None and hint not in ("access_token", "refresh_token"):
            raise OAuthError("unsupported_token_type", "token_type_hint non supporté")
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
                    raise OAuthError("invalid_request", "jeton d'accès transmis deux fois")
                token = form["access_token"]
        claims, client = self.provider.userinfo(token, self.clock())
        wants_jwt = "application/jwt" in request.headers.get("accept", "")
        alg = client.userinfo_alg if client is not None else None
        if wants_jwt or alg:
            signed = {**claims, "iss": self.issuer, "aud": client.client_id if client else None}
            signed["iat"] = int(self.clock())
            jwt = self.provider.signer.sign(signed, alg or self.provider.signing_alg)
            return Response(jwt, media_type="application/jwt", headers={"Cache-Control": "no-store"})
        return _json(claims)

    async def logout(self, request: Request) -> Response:
        now = self.clock()
        if request.method == "POST":
            form = await self._form(request)
        else:
            form = _query(request)
        if request.method == "POST" and "refresh_token" in form and "id_token_hint" not in form:
            self.provider.logout_by_refresh(self._client(request, form), form.get("refresh_token"))
            return Response(status_code=204)
        target = form.get("post_logout_redirect_uri")
        session = self.provider.logout(form.get("id_token_hint"), target, now)
        if target:
            params = {"state": form["state"]} if "state" in form else {}
            return RedirectResponse(_with_query(target, params), status_code=302)
        return HTMLResponse(pages.logged_out(session is not None))

    async def authorize(self, request: Request) -> Response:
        now = self.clock()
        if request.method == "GET":
            params = _query(request)
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
            uri, query = self.provider.login_answer(
                tx_id, form.get("national_id"), form.get("action") == "approve", now
            )
        except OAuthError as exc:
            return HTMLResponse(pages.error_page(exc.description), status_code=400)
        return RedirectResponse(_with_query(uri, query), status_code=302)

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

    # ------------------------------------------------------------------ admin API
    def _admin(self, request: Request) -> None:
        expected = self.config.admin_token
        if not expected:
            raise OAuthError("access_denied", "API d'administration désactivée (admin_token absent)", 403)
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise OAuthError("invalid_token", "jeton d'administration invalide", 401)

    async def _json_body(self, request: Request) -> Any:
        body = await self._body(request)
        try:
            return json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise OAuthError("invalid_request", "JSON invalide") from None

    async def admin_identities(self, request: Request) -> Response:
        self._admin(request)
        if request.method == "GET":
            return _json([i.summary() for i in self.provider.identities.values()])
        data = await self._json_body(request)
        try:
            ident = Identity.model_validate(data)
        except ValidationError as exc:
            raise OAuthError("invalid_request", format_validation_error(exc, "identité")) from None
        if ident.national_id in self.provider.identities:
            raise OAuthError("invalid_request", "identifiant national déjà utilisé", 409)
        self.register_identity(ident)
        return _json(ident.summary(), 201)

    async def admin_identity(self, request: Request) -> Response:
        self._admin(request)
        nid = request.path_params["national_id"]
        ident = self.provider.identities.get(nid)
        if ident is None:
            raise OAuthError("invalid_request", "identité inconnue", 404)
        return _json(
            {**ident.model_dump(exclude_none=True), "ecps_effective": self.provider.policy_for(nid).model_dump()}
        )

    async def admin_ecps(self, request: Request) -> Response:
        self._admin(request)
        data = await self._json_body(request)
        nid = request.path_params.get("national_id")
        try:
            policy = EcpsPolicy.model_validate(data)
            self.set_ecps(policy.mode, policy.delay_ms, nid)
        except ValidationError as exc:
            raise OAuthError("invalid_request", format_validation_error(exc, "politique e-CPS")) from None
        except KeyError:
            raise OAuthError("invalid_request", "identité inconnue", 404) from None
        return _json(policy.model_dump())

    async def admin_clients(self, request: Request) -> Response:
        self._admin(request)
        if request.method == "GET":
            return _json([c.describe() for c in self.provider.clients.values()])
        data = await self._json_body(request)
        try:
            cfg = ClientConfig.model_validate(data)
        except ValidationError as exc:
            raise OAuthError("invalid_request", format_validation_error(exc, "client")) from None
        if cfg.client_id in self.provider.clients:
            raise OAuthError("invalid_request", "client_id déjà enregistré", 409)
        return _json(self.register_client(cfg).describe(), 201)

    async def admin_trust_list(self, request: Request) -> Response:
        """The trust-space check as it stands: the guichet's list this sandbox enforces, which
        clients it applies to, and (``?x5t=<x5t#S256>``) whether one certificate would be
        admitted, with the reason a refusal gives. Why: when CIBA or a token is refused with
        ``unauthorized_client``, the operator sees here what the sandbox knows."""
        self._admin(request)
        settings = self.config.trust_list
        if self.trust is None or settings is None:
            return _json({"enforced": False})
        out: dict[str, Any] = {"enforced": True, "enforce": settings.enforce, **self.trust.status()}
        out["clients"] = [
            {"client_id": c.client_id, "checked": settings.applies_to(c.trust_list_required)}
            for c in self.provider.clients.values()
        ]
        x5t = request.query_params.get("x5t")
        if x5t is not None:
            admission = self.trust.admit(x5t.strip())
            out["certificate"] = {"x5t#S256": x5t.strip(), "admitted": admission.admitted, "reason": admission.reason}
        return _json(out)

    async def admin_ciba(self, request: Request) -> Response:
        self._admin(request)
        now = self.clock()
        return _json(
            [_ciba_view(r, self.provider.identities.get(r.national_id)) for r in self.provider.pending_ciba(now)]
        )

    async def admin_ciba_decide(self, request: Request) -> Response:
        self._admin(request)
        if request.path_params["action"] not in ("approve", "deny"):
            raise OAuthError("invalid_request", "action inconnue (approve ou deny)", 404)
        approve = request.path_params["action"] == "approve"
        req = self.provider.ciba_decide(request.path_params["rid"], approve, self.clock())
        return _json({"auth_req_id": req.id, "decision": req.decision})

    async def admin_lifetimes(self, request: Request) -> Response:
        self._admin(request)
        if request.method == "GET":
            return _json(self.provider.lifetimes.model_dump())
        data = await self._json_body(request)
        if not isinstance(data, dict):
            raise OAuthError("invalid_request", "objet JSON attendu")
        try:
            return _json(self.set_lifetimes(**data).model_dump())
        except ValidationError as exc:
            raise OAuthError("invalid_request", format_validation_error(exc, "durées")) from None

    async def admin_rotate(self, request: Request) -> Response:
        self._admin(request)
        self.rotate_keys()
        return _json({"keys": [k["kid"] for k in self.keys.jwks()["keys"]]})

    async def admin_end_session(self, request: Request) -> Response:
        self._admin(request)
        ended = self.provider.end_session(request.path_params["sid"])
        return _json({"ended": ended}, 200 if ended else 404)

    async def health(self, _request: Request) -> Response:
        return _json({"status": "ok", "issuer": self.issuer})

    # ------------------------------------------------------------------ wiring
    def _build_app(self) -> Starlette:
        def wrap(fn: Handler) -> Handler:
            async def handler(request: Request) -> Response:
                try:
                    return await fn(request)
                except OAuthError as exc:
                    headers: dict[str, str] = {}
                    if exc.status == 401:
                        path = request.url.path
                        scheme = (
                            "Bearer" if path.endswith("/userinfo") or path.startswith("/sandbox/admin") else "Basic"
                        )
                        headers["WWW-Authenticate"] = f'{scheme} realm="{REALM}", error="{exc.error}"'
                    return oauth_error(exc.error, exc.description, exc.status, **headers)
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
            r("/sandbox/admin/identities", self.admin_identities, ["GET", "POST"]),
            r("/sandbox/admin/identities/{national_id}", self.admin_identity, ["GET"]),
            r("/sandbox/admin/identities/{national_id}/ecps", self.admin_ecps, ["PUT"]),
            r("/sandbox/admin/ecps", self.admin_ecps, ["PUT"]),
            r("/sandbox/admin/clients", self.admin_clients, ["GET", "POST"]),
            r("/sandbox/admin/trust-list", self.admin_trust_list, ["GET"]),
            r("/sandbox/admin/ciba", self.admin_ciba, ["GET"]),
            r("/sandbox/admin/ciba/{rid}/{action:str}", self.admin_ciba_decide, ["POST"]),
            r("/sandbox/admin/lifetimes", self.admin_lifetimes, ["GET", "PUT"]),
            r("/sandbox/admin/keys/rotate", self.admin_rotate, ["POST"]),
            r("/sandbox/admin/sessions/{sid}/end", self.admin_end_session, ["POST"]),
            r("/health", self.health, ["GET"]),
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


_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "tls_client_auth"]
_CLAIMS = [
    "sub",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "acr",
    "nonce",
    "sid",
    "session_state",
    "SubjectNameID",
    "preferred_username",
    "given_name",
    "family_name",
    "email_verified",
    "SubjectOrganization",
    "SubjectOrganizationID",
    "SubjectRole",
    "Secteur_Activite",
    "Mode_Acces_Raison",
    "Acces_Regulation_Medicale",
    "UITVersion",
    "Palier_Authentification",
    "PSI_Locale",
    "otherIds",
    "SubjectRefPro",
]


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def _query(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in request.query_params.multi_items():
        if k in out:
            raise OAuthError("invalid_request", f"paramètre répété : {k[:40]}")
        out[k] = v
    return out


def _with_query(uri: str, params: dict[str, str]) -> str:
    parts = urlsplit(uri)
    query = parts.query + ("&" if parts.query and params else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _redirect_error(exc: RedirectError, issuer: str) -> Response:
    params = {"error": exc.error, "error_description": exc.description, "iss": issuer}
    if exc.state is not None:
        params["state"] = exc.state
    return RedirectResponse(_with_query(exc.redirect_uri, params), status_code=302)


def _ciba_view(r: Any, ident: Identity | None) -> dict[str, Any]:
    return {
        "auth_req_id": r.id,
        "client_id": r.client_id,
        "national_id": r.national_id,
        "name": f"{ident.given_name} {ident.family_name}" if ident else None,
        "binding_message": r.binding_message,
        "channel": r.channel,
        "scope": r.scope,
        "expires_at": r.expires_at,
        "mode": r.mode,
    }


def create_app(config: PscConfig, clock: Callable[[], float] = time.time) -> Starlette:
    """The ASGI app; ``app.state.sandbox`` is the ``PscSandbox`` (runtime knobs for tests)."""
    return PscSandbox(config, clock).app


__all__ = ["CIBA_GRANT", "OIDC", "REALM_PATH", "PscSandbox", "create_app"]
