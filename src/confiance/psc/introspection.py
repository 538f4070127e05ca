"""What the sandbox tells about a token it issued: introspection (RFC 7662) and userinfo.

Anything not live (bad signature, expired, revoked, session over) is only
``{"active": false}`` at introspection and ``invalid_token`` at userinfo: a caller learns
nothing about why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .clients import Client
from .errors import InvalidRequestError, InvalidTokenError
from .store import Grant, Session
from .tokens import TokenError

if TYPE_CHECKING:
    from .domain import Provider

MAX_PARAM = 4096


def active_access(p: Provider, token: str, now: float) -> tuple[dict[str, Any], Grant, Session] | None:
    """Claims of a live access token, or None (bad signature, expired, revoked, session over)."""
    try:
        claims = p.signer.verify(token, p.issuer, now=now)
    except TokenError:
        return None
    if claims.get("typ") != "Bearer" or not isinstance(claims.get("jti"), str):
        return None
    jti: str = claims["jti"]
    if p.store.jti_revoked(jti):
        return None
    grant = p.store.grant(jti.partition(".")[0])
    if grant is None or grant.revoked:
        return None
    session = p.store.session(grant.session_id)
    if not p.session_active(session, now):
        return None
    assert session is not None
    return claims, grant, session


def introspect(p: Provider, client: Client, token: str | None, hint: str | None, now: float) -> dict[str, Any]:
    """RFC 7662 with PSC's fields; anything not live is just ``{"active": false}``."""
    if not token:
        raise InvalidRequestError("paramètre token obligatoire")
    if len(token) > MAX_PARAM:
        return {"active": False}
    order = ("refresh", "access") if hint == "refresh_token" else ("access", "refresh")
    for kind in order:
        result = _access(p, token, now) if kind == "access" else _refresh(p, token, now)
        if result is not None:
            return result
    return {"active": False}


def _access(p: Provider, token: str, now: float) -> dict[str, Any] | None:
    if token.count(".") != 2:
        return None
    live = active_access(p, token, now)
    if live is None:
        return None
    claims, grant, _session = live
    keys = ("exp", "iat", "auth_time", "jti", "iss", "aud", "sub", "typ", "azp", "scope", "authMode", "auth_level")
    out: dict[str, Any] = {k: claims[k] for k in keys if k in claims}
    out.update(
        {
            "active": True,
            "session_state": claims["session_state"],
            "sid": claims["sid"],
            "acr": claims["acr"],
            "client_id": grant.client_id,
            "username": grant.national_id,
            "preferred_username": grant.national_id,
            "token_type": "Bearer",
            "SubjectNameID": grant.national_id,
        }
    )
    return out


def _refresh(p: Provider, token: str, now: float) -> dict[str, Any] | None:
    grant = p.live_refresh(token, now)
    if grant is None:
        return None
    return {
        "active": True,
        "exp": int(grant.refresh_expires_at),
        "iat": int(grant.refresh_issued_at),
        "iss": p.issuer,
        "sub": p.claims_of(grant.national_id)["sub"],
        "typ": "Refresh",
        "azp": grant.client_id,
        "client_id": grant.client_id,
        "scope": grant.scope,
        "session_state": grant.session_id,
        "sid": grant.session_id,
    }


def userinfo(p: Provider, token: str | None, now: float) -> tuple[dict[str, Any], Client | None]:
    if not token:
        raise InvalidRequestError("jeton d'accès absent", 401)
    live = active_access(p, token, now)
    if live is None:
        raise InvalidTokenError("jeton d'accès invalide, expiré ou révoqué")
    _claims, grant, _session = live
    return dict(p.claims_of(grant.national_id)), p.clients.get(grant.client_id)
