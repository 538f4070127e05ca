"""Outbound OAuth/OIDC calls: PSC (discovery, CIBA, code, refresh, end-session) and the API
authorization servers (RFC 8693 token exchange, RFC 7009 revocation).

Every call is made with the TLS identity of the LPS the session belongs to (its ORG AUTH_CLI
certificate): PSC and the AS authenticate the LPS by that certificate (RFC 8705
``tls_client_auth``), or by its client secret for "secret" clients of the sandbox level.
Transport failures and 5xx answers become :class:`Unavailable` (→ 503); OAuth error answers
become :class:`OAuthFailure` carrying the error code.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from confiance.core.errors import ConfianceError
from confiance.core.http import ClientFactory
from confiance.core.jose import TokenError, verify_jwt
from confiance.core.tls import ClientIdentity

from .config import LpsClient, PscSection, ServiceSection
from .domain import ApiToken

GRANT_CIBA = "urn:openid:params:grant-type:ciba"
GRANT_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


class Unavailable(ConfianceError, RuntimeError):
    """The remote party is down, unreachable, too slow or answered 5xx."""

    code = "UNAVAILABLE"

    def __init__(self, what: str, timeout: bool = False) -> None:
        super().__init__(what)
        self.timeout = timeout


class OAuthFailure(ConfianceError, RuntimeError):
    """An OAuth error answer received from PSC or an AS (``error`` code per RFC 6749 / CIBA)."""

    def __init__(self, error: str, description: str = "", status: int = 400) -> None:
        super().__init__(f"{error}: {description}", code=error)
        self.error = error
        self.description = description
        self.status = status


def identity_of(client: LpsClient) -> ClientIdentity | None:
    return ClientIdentity(client.cert, client.key) if client.cert is not None else None


def _auth(client: LpsClient, form: dict[str, str], client_id: str | None = None, mtls: bool = False) -> dict[str, str]:
    """Client authentication: mTLS sends only client_id (the certificate proves it);
    secret clients use HTTP Basic (client_secret_basic, what PSC's Keycloak expects).
    ``mtls`` forces certificate authentication (the API authorization servers, whenever
    the LPS has a certificate: API tokens are bound to it)."""
    cid = client_id or client.client_id
    headers = {"Accept": "application/json"}
    if client.auth == "secret" and client.secret and not (mtls and client.cert is not None):
        raw = f"{quote(cid, safe='')}:{quote(client.secret, safe='')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    else:
        form["client_id"] = cid
    return headers


async def _post_form(
    session: aiohttp.ClientSession,
    url: str,
    form: dict[str, str],
    headers: dict[str, str],
    limit_s: float,
    what: str,
) -> tuple[int, dict[str, Any]]:
    headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    try:
        async with session.post(
            url,
            data=urlencode(form),
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=limit_s),
            allow_redirects=False,
        ) as resp:
            raw = await resp.read()
            status = resp.status
    except TimeoutError as exc:
        raise Unavailable(f"{what}: délai dépassé", timeout=True) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise Unavailable(f"{what}: {type(exc).__name__}") from exc
    if status >= 500:
        raise Unavailable(f"{what}: réponse HTTP {status}")
    try:
        import json

        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return status, body


async def _get_status(session: aiohttp.ClientSession, url: str, limit_s: float, what: str) -> int:
    """GET ``url`` (redirects not followed: a logout page may redirect the browser); its status."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=limit_s), allow_redirects=False) as resp:
            await resp.read()
            status = resp.status
    except TimeoutError as exc:
        raise Unavailable(f"{what}: délai dépassé", timeout=True) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise Unavailable(f"{what}: {type(exc).__name__}") from exc
    if status >= 500:
        raise Unavailable(f"{what}: réponse HTTP {status}")
    return status


@dataclass
class Discovery:
    issuer: str
    token_endpoint: str
    backchannel_endpoint: str | None
    authorization_endpoint: str | None
    end_session_endpoint: str | None
    revocation_endpoint: str | None
    jwks_uri: str | None
    userinfo_endpoint: str | None


class PscClient:
    """PSC as the proxy uses it. The discovery document and JWKS are fetched lazily and cached,
    so a proxy started while PSC is down starts anyway and answers 503 until PSC is back."""

    def __init__(self, cfg: PscSection, factory: ClientFactory, timeout: float) -> None:
        self.cfg = cfg
        self.factory = factory
        self.timeout = timeout
        self._disc: Discovery | None = None
        self._jwks: dict[str, Any] | None = None
        self._jwks_at = 0.0
        self._lock = asyncio.Lock()

    def _http(self, client: LpsClient | None = None) -> aiohttp.ClientSession:
        return self.factory.aiohttp(identity_of(client) if client else None)

    def _cached(self) -> Discovery | None:
        return self._disc

    async def discovery(self) -> Discovery:
        if self._disc is not None:
            return self._disc
        async with self._lock:
            cached = self._cached()
            if cached is not None:  # fetched by another task while we waited
                return cached
            try:
                async with self._http().get(
                    self.cfg.discovery_url, timeout=aiohttp.ClientTimeout(total=self.timeout)
                ) as resp:
                    if resp.status != 200:
                        raise Unavailable(f"découverte PSC: HTTP {resp.status}")
                    doc = await resp.json(content_type=None)
            except TimeoutError as exc:
                raise Unavailable("découverte PSC: délai dépassé", timeout=True) from exc
            except (aiohttp.ClientError, OSError, ValueError) as exc:
                raise Unavailable(f"découverte PSC: {type(exc).__name__}") from exc
            self._disc = Discovery(
                issuer=doc["issuer"],
                token_endpoint=doc["token_endpoint"],
                backchannel_endpoint=doc.get("backchannel_authentication_endpoint"),
                authorization_endpoint=doc.get("authorization_endpoint"),
                end_session_endpoint=doc.get("end_session_endpoint"),
                revocation_endpoint=doc.get("revocation_endpoint"),
                jwks_uri=doc.get("jwks_uri"),
                userinfo_endpoint=doc.get("userinfo_endpoint"),
            )
            return self._disc

    async def jwks(self, force: bool = False) -> dict[str, Any]:
        if self._jwks is not None and not force and time.time() - self._jwks_at < 3600:
            return self._jwks
        d = await self.discovery()
        if not d.jwks_uri:
            raise Unavailable("PSC ne publie pas de jwks_uri")
        try:
            async with self._http().get(d.jwks_uri, timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                if resp.status != 200:
                    raise Unavailable(f"JWKS PSC: HTTP {resp.status}")
                data: dict[str, Any] = await resp.json(content_type=None)
        except TimeoutError as exc:
            raise Unavailable("JWKS PSC: délai dépassé", timeout=True) from exc
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise Unavailable(f"JWKS PSC: {type(exc).__name__}") from exc
        self._jwks, self._jwks_at = data, time.time()
        return data

    async def verify_id_token(self, token: str, client_id: str, nonce: str | None = None) -> dict[str, Any]:
        """Signature (PSC JWKS, refetched once on an unknown kid), iss, aud, exp, nonce."""
        d = await self.discovery()
        for attempt in (0, 1):
            try:
                claims = verify_jwt(
                    token, await self.jwks(force=attempt == 1), issuer=d.issuer, audience=client_id, leeway=30
                )
                break
            except TokenError as exc:
                if attempt == 1 or "kid" not in str(exc):
                    raise OAuthFailure("invalid_id_token", str(exc)) from exc
        if nonce is not None and claims.get("nonce") != nonce:
            raise OAuthFailure("invalid_id_token", "nonce différent")
        return claims

    async def ciba(self, client: LpsClient, national_id: str, binding: str, channel: str) -> dict[str, Any]:
        """Backchannel request then poll until tokens, denial or expiry (bounded by ciba_max_wait)."""
        d = await self.discovery()
        if not d.backchannel_endpoint:
            raise Unavailable("PSC ne publie pas de point CIBA")
        form = {
            "scope": self.cfg.scope,
            "acr_values": self.cfg.acr_values,
            "login_hint": national_id,
            "binding_message": binding,
            "channel": channel,
        }
        headers = _auth(client, form)
        status, body = await _post_form(
            self._http(client), d.backchannel_endpoint, form, headers, self.timeout, "CIBA PSC"
        )
        if status != 200 or "auth_req_id" not in body:
            raise OAuthFailure(
                str(body.get("error") or "server_error"), str(body.get("error_description") or ""), status
            )
        rid = str(body["auth_req_id"])
        interval = max(0.05, float(body.get("interval", 5) or 0))
        deadline = time.monotonic() + min(float(body.get("expires_in") or 120), self.cfg.ciba_max_wait)
        while True:
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            poll = {"grant_type": GRANT_CIBA, "auth_req_id": rid}
            h = _auth(client, poll)
            status, tok = await _post_form(self._http(client), d.token_endpoint, poll, h, self.timeout, "jeton PSC")
            if status == 200 and "access_token" in tok:
                return tok
            err = str(tok.get("error") or "server_error")
            if err == "authorization_pending":
                pass
            elif err == "slow_down":
                interval += 5
            else:
                raise OAuthFailure(err, str(tok.get("error_description") or ""), status)
            if time.monotonic() >= deadline:
                raise OAuthFailure("expired_token", "pas de réponse de l'utilisateur dans le délai")

    async def refresh(self, client: LpsClient, refresh_token: str) -> dict[str, Any]:
        d = await self.discovery()
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        headers = _auth(client, form)
        status, tok = await _post_form(
            self._http(client), d.token_endpoint, form, headers, self.timeout, "rafraîchissement PSC"
        )
        if status != 200 or "access_token" not in tok:
            raise OAuthFailure(
                str(tok.get("error") or "invalid_grant"), str(tok.get("error_description") or ""), status
            )
        return tok

    async def code(self, client: LpsClient, code: str, redirect_uri: str, verifier: str) -> dict[str, Any]:
        d = await self.discovery()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        headers = _auth(client, form)
        status, tok = await _post_form(self._http(client), d.token_endpoint, form, headers, self.timeout, "code PSC")
        if status != 200 or "access_token" not in tok:
            raise OAuthFailure(
                str(tok.get("error") or "invalid_grant"), str(tok.get("error_description") or ""), status
            )
        return tok

    async def end_session(self, client: LpsClient, id_token: str | None, refresh_token: str | None) -> None:
        """RP-initiated logout with ``id_token_hint`` (what the contract asks): a POST, then
        a GET if the POST is refused; OAuthFailure (with the HTTP status) when both are."""
        d = await self.discovery()
        if d.end_session_endpoint and id_token:
            form: dict[str, str] = {"id_token_hint": id_token}
            if refresh_token:
                form["refresh_token"] = refresh_token  # Keycloak's backchannel logout form
            headers = _auth(client, form)
            status, body = await _post_form(
                self._http(client), d.end_session_endpoint, form, headers, self.timeout, "fin de session PSC"
            )
            if status < 400:
                return
            # Refused as a POST: OpenID RP-Initiated Logout is a GET first (ANS's example
            # uses GET, and some providers accept only that), id_token_hint in the query.
            sep = "&" if "?" in d.end_session_endpoint else "?"
            query = urlencode({"id_token_hint": id_token, "client_id": client.client_id})
            got = await _get_status(
                self._http(client), d.end_session_endpoint + sep + query, self.timeout, "fin de session PSC"
            )
            if got >= 400:
                error = str(body.get("error") or "logout_failed")
                raise OAuthFailure(error, f"POST refusé (HTTP {status}), GET refusé (HTTP {got})", got)


class TokenExchanger:
    """RFC 8693 at a service's AS, and RFC 7009 revocation of what it issued."""

    def __init__(self, factory: ClientFactory, timeout: float) -> None:
        self.factory = factory
        self.timeout = timeout

    async def exchange(
        self, client: LpsClient, service_name: str, svc: ServiceSection, subject_token: str, now: float
    ) -> ApiToken:
        form = {
            "grant_type": GRANT_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": svc.subject_token_type,
        }
        if svc.scope:
            form["scope"] = svc.scope
        if svc.audience:
            form["audience"] = svc.audience
        if svc.send_subject_issuer:
            form["subject_issuer"] = "psc"
        headers = _auth(client, form, client.as_client_id or client.client_id, mtls=True)
        http = self.factory.aiohttp(identity_of(client))
        status, body = await _post_form(
            http, svc.token_endpoint, form, headers, self.timeout, f"échange de jeton {service_name}"
        )
        if status != 200 or "access_token" not in body:
            raise OAuthFailure(
                str(body.get("error") or "server_error"), str(body.get("error_description") or ""), status
            )
        return ApiToken(
            access_token=str(body["access_token"]),
            expires_at=now + float(body["expires_in"])
            if isinstance(body.get("expires_in"), int | float)
            else now + 3600,
            refresh_token=body.get("refresh_token"),
        )

    async def revoke(self, client: LpsClient, svc: ServiceSection, token: ApiToken) -> None:
        if not svc.revocation_endpoint:
            return
        http = self.factory.aiohttp(identity_of(client))
        for value, hint in ((token.refresh_token, "refresh_token"), (token.access_token, "access_token")):
            if not value:
                continue
            form = {"token": value, "token_type_hint": hint}
            headers = _auth(client, form, client.as_client_id or client.client_id, mtls=True)
            status, body = await _post_form(http, svc.revocation_endpoint, form, headers, self.timeout, "révocation")
            if status >= 400:
                raise OAuthFailure(
                    str(body.get("error") or "revocation_failed"), str(body.get("error_description") or ""), status
                )
