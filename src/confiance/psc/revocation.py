"""Ending tokens and sessions: revocation (RFC 7009) and logout (RP-initiated, Keycloak's POST)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .clients import Client
from .errors import InvalidGrantError, InvalidRequestError, UnauthorizedClientError
from .introspection import MAX_PARAM
from .store import Session
from .tokens import TokenError

if TYPE_CHECKING:
    from .domain import Provider


def revoke(p: Provider, client: Client, token: str | None, now: float) -> None:
    """RFC 7009: unknown/invalid tokens succeed silently. Revoking a refresh token ends
    its whole grant (§2.1 allows it: a leaked refresh token is a leaked grant); revoking
    an access token ends that token only."""
    if not token:
        raise InvalidRequestError("paramètre token obligatoire")
    if len(token) > MAX_PARAM:
        return
    parsed = p.parse_refresh(token)
    if parsed is not None:
        if parsed[0].client_id != client.client_id:
            raise UnauthorizedClientError("jeton émis pour un autre client")
        p.revoke_grant(parsed[0].id)
        return
    if token.count(".") == 2:
        try:
            claims = p.signer.verify_ignoring_expiry(token, p.issuer)
        except TokenError:
            return
        jti = claims.get("jti")
        if claims.get("typ") != "Bearer" or not isinstance(jti, str):
            return
        grant = p.store.grant(jti.partition(".")[0])
        if grant is None:
            return
        if grant.client_id != client.client_id:
            raise UnauthorizedClientError("jeton émis pour un autre client")
        p.store.revoke_jti(jti, float(claims.get("exp", now + p.lifetimes.access_token)))


def logout(p: Provider, id_token_hint: str | None, redirect_uri: str | None, now: float) -> Session | None:
    """RP-initiated logout: an ID token we signed (expiry tolerated, OIDC RP-Initiated
    Logout §2) names the session to end. The redirect URI is checked first so that a
    refused request ends nothing."""
    if not id_token_hint:
        if redirect_uri:
            raise InvalidRequestError("id_token_hint obligatoire avec post_logout_redirect_uri")
        return None
    try:
        claims = p.signer.verify_ignoring_expiry(id_token_hint, p.issuer)
    except TokenError:
        raise InvalidRequestError("id_token_hint invalide") from None
    if claims.get("typ") != "ID":
        raise InvalidRequestError("id_token_hint n'est pas un jeton d'identité")
    rp = p.clients.get(str(claims.get("azp")))
    if redirect_uri and (rp is None or redirect_uri not in rp.post_logout_redirect_uris):
        raise InvalidRequestError("post_logout_redirect_uri non enregistrée pour ce client")
    sid = claims.get("sid")
    session = p.store.session(sid) if isinstance(sid, str) else None
    if session is not None:
        p.end_session(session.id)
    return session


def logout_by_refresh(p: Provider, client: Client, refresh_token: str | None) -> None:
    """Keycloak's back-channel logout (POST with client auth + refresh_token), used by adapters."""
    parsed = p.parse_refresh(refresh_token or "")
    grant = parsed[0] if parsed else None
    if grant is None or grant.client_id != client.client_id:
        raise InvalidGrantError("jeton de rafraîchissement invalide")
    p.end_session(grant.session_id)
