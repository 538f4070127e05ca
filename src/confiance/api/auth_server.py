"""The authorization server's HTTP edge: token exchange, refresh, introspection, revocation.

Every route reads the caller's certificate through ``core.clientcert`` and renders every
refusal as RFC 6749 error JSON; the decisions themselves are in ``domain``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from confiance.core.health import Health
from confiance.core.jose import TokenError, verify_jwt
from confiance.core.oauth_errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuthError,
    ServerError,
    UnauthorizedClientError,
    UnsupportedGrantTypeError,
    UnsupportedTokenTypeError,
)

from .config import ApiClient
from .domain import (
    GRANT_REFRESH,
    GRANT_TOKEN_EXCHANGE,
    TT_REFRESH,
    Caller,
    RefreshGrant,
    access_token_claims,
    authenticate_client,
    exchange_response,
    one,
    parse_exchange,
    parse_form,
    resolve_targets,
    split_scope,
)
from .runtime import ApiRuntime

log = logging.getLogger("confiance.api.as")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _basic(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization")
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidClientError("en-tête Authorization Basic illisible") from exc
    cid, sep, secret = raw.partition(":")
    if not sep:
        raise InvalidClientError("en-tête Authorization Basic illisible")
    return unquote(cid), unquote(secret)


class AuthorizationServerApp:
    def __init__(self, rt: ApiRuntime) -> None:
        self.rt = rt
        self.max_body = rt.cfg.authorization_server.max_body_bytes
        self.health = Health("api-as", rt.readiness_checks("as"))
        self.app = Starlette(
            routes=[
                *self.health.routes(aliases=("/health",)),
                Route("/hello", self.hello),
                Route("/.well-known/oauth-authorization-server", self.metadata),
                Route("/jwks", self.jwks),
                Route("/.well-known/jwks.json", self.jwks),
                Route("/token", self.token, methods=["POST"]),
                Route("/introspect", self.introspect, methods=["POST"]),
                Route("/revoke", self.revoke, methods=["POST"]),
            ],
            exception_handlers={404: self._not_found, 405: self._not_allowed},
        )

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    async def _not_found(_request: Request, _exc: Exception) -> Response:
        return InvalidRequestError("ressource inconnue", 404).response()

    @staticmethod
    async def _not_allowed(_request: Request, exc: Exception) -> Response:
        return InvalidRequestError("méthode non autorisée", 405, getattr(exc, "headers", None)).response()

    async def _read(self, request: Request) -> tuple[dict[str, list[str]], Caller]:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            raise InvalidRequestError(f"requête trop volumineuse (> {self.max_body} octets)", 413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                raise InvalidRequestError(f"requête trop volumineuse (> {self.max_body} octets)", 413)
        form = parse_form(body, request.headers.get("content-type"), self.max_body)
        cc = self.rt.caller_cert(request.scope)
        basic = _basic(request)
        secret = basic[1] if basic else one(form, "client_secret", max_len=512)
        caller = Caller(
            cert_dn=cc.subject_dn if cc else None,
            cert_x5t=cc.x5t_s256 if cc else None,
            client_id=one(form, "client_id", max_len=200),
            secret=secret,
            basic_client_id=basic[0] if basic else None,
        )
        return form, caller

    def _client(self, caller: Caller) -> ApiClient:
        self.rt.reload_clients_if_changed()
        client = authenticate_client(self.rt.registry, caller)
        trust, settings = self.rt.trust, self.rt.cfg.trust_list
        if trust is not None and settings is not None and settings.applies_to(client.trust_list_required):
            assert caller.cert_x5t is not None  # authenticate_client requires the certificate
            admission = trust.admit(caller.cert_x5t)
            if not admission.admitted:
                raise UnauthorizedClientError(f"Espace de Confiance : {admission.reason}")
        return client

    async def _guard(self, request: Request, handler: Any) -> Response:
        try:
            result: Response = await handler(request)
            return result
        except OAuthError as exc:
            headers = {"WWW-Authenticate": 'Basic realm="api-psc"'} if exc.status == 401 else {}
            return exc.response(**headers)
        except Exception:
            log.exception("unexpected error on %s", request.url.path)
            return ServerError("erreur interne du serveur d'autorisation").response()

    # ------------------------------------------------------------------ routes
    async def hello(self, request: Request) -> Response:
        """Bare endpoint (certificate required, nothing else): the benchmark's ceiling."""
        if self.rt.caller_cert(request.scope) is None:
            return InvalidClientError("certificat client TLS requis").response()
        return PlainTextResponse("hello")

    async def metadata(self, _request: Request) -> Response:
        """RFC 8414 metadata so clients can discover the endpoints."""
        rt = self.rt
        return JSONResponse(
            {
                "issuer": rt.issuer,
                "token_endpoint": f"{rt.as_url}/token",
                "introspection_endpoint": f"{rt.as_url}/introspect",
                "revocation_endpoint": f"{rt.as_url}/revoke",
                "jwks_uri": f"{rt.as_url}/jwks",
                "grant_types_supported": [GRANT_TOKEN_EXCHANGE, *([GRANT_REFRESH] if rt.refresh_enabled else [])],
                "token_endpoint_auth_methods_supported": [
                    "tls_client_auth",
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "tls_client_certificate_bound_access_tokens": True,
                "scopes_supported": sorted({s for svc in rt.catalog.services for s in svc.scopes}),
                "token_endpoint_auth_signing_alg_values_supported": [rt.cfg.authorization_server.token_alg],
            }
        )

    async def jwks(self, _request: Request) -> Response:
        return JSONResponse(self.rt.as_keys.jwks(), headers={"Cache-Control": "public, max-age=300"})

    async def token(self, request: Request) -> Response:
        return await self._guard(request, self._token)

    async def _token(self, request: Request) -> Response:
        form, caller = await self._read(request)
        grant_type = one(form, "grant_type", required=True)
        client = self._client(caller)
        assert caller.cert_x5t is not None
        if grant_type == GRANT_TOKEN_EXCHANGE:
            body = await self._exchange(form, client, caller.cert_x5t)
        elif grant_type == GRANT_REFRESH and self.rt.refresh_enabled:
            body = self._refresh(form, client, caller.cert_x5t)
        else:
            raise UnsupportedGrantTypeError(f"grant_type non pris en charge : {str(grant_type)[:100]}")
        return JSONResponse(body, headers=NO_STORE)

    async def _exchange(self, form: dict[str, list[str]], client: ApiClient, x5t: str) -> dict[str, Any]:
        rt = self.rt
        req = parse_exchange(form)
        scopes, audiences = resolve_targets(client, rt.catalog, req.scopes, req.targets)
        subject = await rt.psc.check(req.subject_token)
        now = time.time()
        claims = access_token_claims(
            issuer=rt.issuer,
            subject=subject,
            client=client,
            cert_x5t=x5t,
            scopes=scopes,
            audiences=audiences,
            now=now,
            lifetime=rt.cfg.authorization_server.token_lifetime,
        )
        token = rt.signer.sign_claims(claims)
        refresh = None
        if rt.refresh_enabled:
            grant = RefreshGrant(
                client_id=client.client_id,
                cert_x5t=x5t,
                subject=subject,
                scopes=scopes,
                audiences=audiences,
                expires_at=now + rt.cfg.authorization_server.refresh_token_lifetime,
                access_jtis=[(claims["jti"], claims["exp"])],
            )
            refresh = rt.refresh.issue(grant)
        log.info(
            "exchange client=%s professional=%s scope=%s jti=%s",
            client.client_id,
            subject.national_id,
            claims["scope"],
            claims["jti"],
        )
        return exchange_response(token, claims, refresh)

    def _refresh(self, form: dict[str, list[str]], client: ApiClient, x5t: str) -> dict[str, Any]:
        rt = self.rt
        token = one(form, "refresh_token", required=True, max_len=512)
        assert token is not None
        now = time.time()
        grant = rt.refresh.peek(token)
        if grant is None or grant.expires_at <= now:
            raise InvalidGrantError("refresh_token invalide, expiré ou déjà utilisé")
        if grant.client_id != client.client_id or grant.cert_x5t != x5t:
            raise InvalidGrantError("refresh_token émis pour un autre client ou un autre certificat")
        scopes = split_scope(one(form, "scope", max_len=2048)) or grant.scopes
        if not set(scopes) <= set(grant.scopes):
            raise InvalidScopeError("le renouvellement ne peut pas élargir les scopes")
        taken = rt.refresh.take(token)
        if taken is None:  # lost a race with a concurrent use of the same token
            raise InvalidGrantError("refresh_token déjà utilisé")
        lifetime = min(rt.cfg.authorization_server.token_lifetime, max(1, int(grant.expires_at - now)))
        claims = access_token_claims(
            issuer=rt.issuer,
            subject=grant.subject,
            client=client,
            cert_x5t=x5t,
            scopes=scopes,
            audiences=grant.audiences,
            now=now,
            lifetime=lifetime,
        )
        grant.access_jtis.append((claims["jti"], claims["exp"]))
        new_refresh = rt.refresh.issue(grant)
        return exchange_response(rt.signer.sign_claims(claims), claims, new_refresh)

    def _own_claims(self, token: str) -> dict[str, Any] | None:
        """Claims of an API token this AS signed (signature and issuer checked), else None."""
        try:
            return verify_jwt(token, self.rt.as_keys.keyset, issuer=self.rt.issuer)
        except TokenError:
            return None

    async def introspect(self, request: Request) -> Response:
        return await self._guard(request, self._introspect)

    async def _introspect(self, request: Request) -> Response:
        """RFC 7662: a client sees its own tokens, or tokens for audiences it serves."""
        form, caller = await self._read(request)
        client = self._client(caller)
        token = one(form, "token", required=True, max_len=16384)
        assert token is not None
        rt = self.rt
        inactive = JSONResponse({"active": False}, headers=NO_STORE)
        if token.count(".") == 2:
            claims = self._own_claims(token)
            if claims is None or rt.revocations.is_revoked(str(claims.get("jti"))):
                return inactive
            auds = claims["aud"] if isinstance(claims.get("aud"), list) else [claims.get("aud")]
            if claims.get("client_id") != client.client_id and not set(auds) & set(client.introspect_audiences):
                return inactive
            return JSONResponse({"active": True, "token_type": "Bearer", **claims}, headers=NO_STORE)
        grant = rt.refresh.peek(token)
        if grant is None or grant.client_id != client.client_id or grant.expires_at <= time.time():
            return inactive
        return JSONResponse(
            {
                "active": True,
                "token_type": TT_REFRESH,
                "client_id": grant.client_id,
                "scope": " ".join(grant.scopes),
                "exp": int(grant.expires_at),
                "sub": grant.subject.sub,
                "cnf": {"x5t#S256": grant.cert_x5t},
            },
            headers=NO_STORE,
        )

    async def revoke(self, request: Request) -> Response:
        return await self._guard(request, self._revoke)

    async def _revoke(self, request: Request) -> Response:
        """RFC 7009: 200 whether or not the token was known; only the owner's tokens are revoked."""
        form, caller = await self._read(request)
        client = self._client(caller)
        token = one(form, "token", required=True, max_len=16384)
        assert token is not None
        hint = one(form, "token_type_hint")
        if hint is not None and hint not in ("access_token", "refresh_token"):
            raise UnsupportedTokenTypeError(f"token_type_hint non pris en charge : {hint[:50]}")
        rt = self.rt
        if token.count(".") == 2:
            claims = self._own_claims(token)
            if claims is not None and claims.get("client_id") == client.client_id:
                rt.revocations.revoke(str(claims["jti"]), float(claims["exp"]))
                log.info("revoked access token client=%s jti=%s", client.client_id, claims["jti"])
        else:
            grant = rt.refresh.peek(token)
            if grant is not None and grant.client_id == client.client_id:
                rt.refresh.take(token)
                # RFC 7009 §2.1: revoking a refresh token also revokes the access tokens of its grant.
                for jti, exp in grant.access_jtis:
                    rt.revocations.revoke(jti, exp)
                log.info("revoked refresh token client=%s", client.client_id)
        return Response(status_code=200, headers=NO_STORE)
