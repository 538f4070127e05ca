"""The browser flow's front half: the authorization request and the login page's answer.

Errors found before the redirect URI is trusted are shown as a page (status 400, plain
``OAuthError``); later ones go back to the client (``RedirectError``), as OAuth 2.0 §4.1.2.1
requires, so an attacker cannot use the sandbox as an open redirector.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from . import acr
from .clients import Client
from .errors import InvalidClientError, InvalidRequestError, OAuthError, RedirectError
from .scopes import parse_scopes
from .store import AuthCode, LoginTransaction

if TYPE_CHECKING:
    from .domain import Provider

PKCE_CHALLENGE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def authorize_request(p: Provider, params: Mapping[str, str], now: float) -> tuple[Client, LoginTransaction]:
    """Validate an authorization request and open a login transaction."""
    p.housekeeping(now)
    cid = params.get("client_id", "")
    client = p.clients.get(cid)
    if client is None:
        raise InvalidClientError("client inconnu")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:
        raise InvalidRequestError("redirect_uri non enregistrée pour ce client")
    state = params.get("state")
    if params.get("response_type") != "code":
        raise RedirectError(redirect_uri, state, "unsupported_response_type", "seul response_type=code est supporté")
    if "authorization_code" not in client.grant_types:
        raise RedirectError(redirect_uri, state, "unauthorized_client", "client non autorisé pour ce flux")
    try:
        scopes = parse_scopes(params.get("scope"))
    except OAuthError as exc:
        raise RedirectError(redirect_uri, state, exc.error, exc.description) from None
    if "openid" not in scopes:
        raise RedirectError(redirect_uri, state, "invalid_scope", "le scope doit contenir openid")
    challenge = params.get("code_challenge")
    if not challenge or params.get("code_challenge_method") != "S256":
        raise RedirectError(redirect_uri, state, "invalid_request", "PKCE S256 obligatoire (code_challenge)")
    if not PKCE_CHALLENGE_RE.fullmatch(challenge):
        raise RedirectError(redirect_uri, state, "invalid_request", "code_challenge mal formé")
    try:
        acr.requested(params.get("acr_values"))
    except OAuthError as exc:
        raise RedirectError(redirect_uri, state, exc.error, exc.description) from None
    tx = LoginTransaction(
        id=p.new_id(),
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        state=state,
        nonce=params.get("nonce"),
        code_challenge=challenge,
        scope=" ".join(sorted(scopes)),
        expires_at=now + p.lifetimes.login_transaction,
        acr_values=params.get("acr_values"),
    )
    p.store.put_login(tx)
    return client, tx


def login_answer(
    p: Provider, tx_id: str, national_id: str | None, approve: bool, now: float, channel: str = "CARD"
) -> tuple[str, dict[str, str]]:
    """The login page's answer: redirect URI and its query parameters.

    ``channel``: the means chosen on the page (CPS card or e-CPS); with the identity it
    decides the ``acr``, checked against the request's ``acr_values``."""
    tx = p.store.login(tx_id)
    if tx is None or tx.used or now >= tx.expires_at:
        raise InvalidRequestError("demande de connexion inconnue, expirée ou déjà traitée")
    if not p.store.use_login(tx.id, tx.expires_at):
        raise InvalidRequestError("demande de connexion inconnue, expirée ou déjà traitée")
    base: dict[str, str] = {"iss": p.issuer}
    if tx.state is not None:
        base["state"] = tx.state
    if not approve:
        return tx.redirect_uri, {"error": "access_denied", "error_description": "connexion refusée", **base}
    if not national_id or national_id not in p.identities:
        return tx.redirect_uri, {"error": "access_denied", "error_description": "identité inconnue", **base}
    try:
        level = acr.satisfy(acr.requested(tx.acr_values), acr.reached(p.identities[national_id].auth_means, channel))
    except OAuthError as exc:
        return tx.redirect_uri, {"error": exc.error, "error_description": exc.description, **base}
    session = p.new_session(national_id, channel, now, level)
    code = AuthCode(
        code=p.new_id() + "." + session.id,
        client_id=tx.client_id,
        redirect_uri=tx.redirect_uri,
        code_challenge=tx.code_challenge,
        session_id=session.id,
        national_id=national_id,
        scope=tx.scope,
        nonce=tx.nonce,
        expires_at=now + p.lifetimes.authorization_code,
    )
    p.store.put_code(code)
    return tx.redirect_uri, {"code": code.code, "session_state": session.id, **base}
