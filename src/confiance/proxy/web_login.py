"""Web LPS login (authorization code + PKCE at PSC): ``/authorize`` then ``/callback``.

A browser-based LPS sends its user to ``/authorize?clientId=…``; PSC sends them back to
``/callback`` with a code, which becomes a session exactly like a CIBA ``/connect`` (same
store, same CONNECT_* traces), and the browser lands on the LPS with the session cookie.
The ``state`` is bound to the browser by a cookie (login CSRF).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .core import ProxyCore
from .domain import ProxyError, TraceType, new_session, trace
from .edge import STATE_COOKIE, cookie_from_headers, page, scope_address, session_cookie
from .oauth import OAuthFailure, Unavailable
from .sessions import StoreUnavailable


class WebLogin:
    """The two routes of the web login, over the proxy's core."""

    def __init__(self, core: ProxyCore) -> None:
        self.core = core

    def routes(self) -> list[Route]:
        return [
            Route("/authorize", self.authorize, methods=["GET"]),
            Route("/callback", self.callback, methods=["GET"]),
        ]

    def _redirect_uri(self, request: Request) -> str:
        base = self.core.cfg.server.public_url or f"https://{request.url.netloc}"
        return base.rstrip("/") + "/callback"

    async def authorize(self, request: Request) -> Response:
        client_id = request.query_params.get("clientId", "")
        self.core.refresh_clients()
        client = self.core.clients.get(client_id)
        if client is None or not client.web_redirect_url:
            return page(404, "Logiciel inconnu", "Ce clientId n'est pas configuré pour la connexion web.")
        try:
            disc = await self.core.psc.discovery()
        except Unavailable:
            return page(503, "Pro Santé Connect indisponible", "Réessayez dans quelques instants.")
        if not disc.authorization_endpoint:
            return page(503, "Pro Santé Connect indisponible", "Point d'autorisation non publié.")
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        try:
            await self.core.store.put_pending(
                "auth:" + state, {"client_id": client_id, "nonce": nonce, "verifier": verifier}, 600
            )
        except StoreUnavailable:
            return page(503, "Service indisponible", "Stockage des sessions indisponible.")
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": self._redirect_uri(request),
            "scope": self.core.cfg.psc.scope,
            "acr_values": self.core.cfg.psc.acr_values,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        resp = RedirectResponse(disc.authorization_endpoint + "?" + urlencode(params), status_code=302)
        # Binds the login to this browser (login CSRF): /callback requires the same state here.
        resp.headers["set-cookie"] = (
            f"{STATE_COOKIE}={state}; Path=/callback; Max-Age=600; Secure; HttpOnly; SameSite=Lax"
        )
        return resp

    async def callback(self, request: Request) -> Response:
        q = request.query_params
        state = q.get("state", "")
        ip, port = scope_address(request.scope, self.core.trusted)
        if not state or cookie_from_headers(request.scope["headers"], STATE_COOKIE.encode()) != state:
            return page(400, "Connexion refusée", "Paramètre state absent ou différent de celui de ce navigateur.")
        try:
            pending = await self.core.store.pop_pending("auth:" + state)
        except StoreUnavailable:
            return page(503, "Service indisponible", "Stockage des sessions indisponible.")
        if pending is None:
            return page(400, "Connexion expirée", "Cette tentative de connexion est inconnue ou expirée.")
        client = self.core.clients[pending["client_id"]]
        now = self.core.clock()
        failure = None
        tokens: dict[str, Any] = {}
        national_id = None
        if q.get("error"):
            failure = (q.get("error") or "")[:100]
        else:
            try:
                tokens = await self.core.psc.code(
                    client, q.get("code", ""), self._redirect_uri(request), pending["verifier"]
                )
                claims = await self.core.psc.verify_id_token(
                    str(tokens.get("id_token", "")), client.client_id, pending["nonce"]
                )
                national_id = str(claims.get("preferred_username") or claims.get("SubjectNameID") or "") or None
                if national_id is None:
                    failure = "no_national_id"
            except Unavailable:
                return page(503, "Pro Santé Connect indisponible", "Réessayez dans quelques instants.")
            except OAuthFailure as exc:
                failure = exc.error
        if failure is not None:
            await self.core.trace_now(
                trace(
                    TraceType.CONNECT_FAILURE,
                    now=now,
                    national_id=national_id,
                    ip=ip,
                    port=port,
                    client_id=client.client_id,
                    dn=self.core.dns.get(client.client_id),
                    reason=failure,
                ),
                now,
            )
            return page(400, "Connexion refusée", f"Pro Santé Connect a refusé la connexion ({failure}).")
        assert national_id is not None
        # A professional may hold several sessions: another browser's is left alone.
        session = new_session(
            client_id=client.client_id,
            national_id=national_id,
            tokens=tokens,
            now=self.core.clock(),
            absolute_ttl=self.core.cfg.sessions.absolute_ttl,
            idle_ttl=self.core.cfg.sessions.idle_ttl,
            dn=self.core.dns.get(client.client_id),
            flow="code",
        )
        try:
            _status, created = await self.core.store_new(session, ip, port)
        except ProxyError as exc:
            return page(exc.status, "Connexion impossible", exc.message)
        assert client.web_redirect_url is not None
        resp = RedirectResponse(client.web_redirect_url, status_code=302)
        resp.headers.append("set-cookie", session_cookie(created.id, self.core.cfg.sessions.cookie_samesite))
        resp.headers.append("set-cookie", f"{STATE_COOKIE}=; Path=/callback; Max-Age=0; Secure; HttpOnly; SameSite=Lax")
        return resp
