"""Refresh grant with rotation (RFC 6749 §6, OAuth 2.0 Security BCP §4.14).

Only the family's current generation is valid; presenting an older one means the token
leaked, so the whole family (grant) is revoked with its live access tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..clients import Client
from ..errors import InvalidGrantError, InvalidRequestError, InvalidScopeError
from ..scopes import parse_scopes

if TYPE_CHECKING:
    from ..domain import Provider


def exchange(p: Provider, client: Client, params: Mapping[str, str], now: float) -> dict[str, Any]:
    value = params.get("refresh_token")
    if not value:
        raise InvalidRequestError("refresh_token obligatoire")
    parsed = p.parse_refresh(value)
    if parsed is None or parsed[0].client_id != client.client_id:
        raise InvalidGrantError("jeton de rafraîchissement invalide")
    grant, gen = parsed
    if gen < grant.refresh_gen:
        p.revoke_grant(grant.id)
        raise InvalidGrantError("jeton de rafraîchissement déjà utilisé : famille révoquée")
    if grant.revoked:
        raise InvalidGrantError("jeton de rafraîchissement révoqué")
    if gen != grant.refresh_gen:
        raise InvalidGrantError("jeton de rafraîchissement invalide")
    if now >= grant.refresh_expires_at:
        raise InvalidGrantError("jeton de rafraîchissement expiré")
    session = p.store.session(grant.session_id)
    if not p.session_active(session, now):
        raise InvalidGrantError("session PSC inactive")
    assert session is not None
    if "scope" in params:
        asked = parse_scopes(params["scope"])
        if not asked <= set(grant.scope.split()):
            raise InvalidScopeError("scope plus large que celui accordé")
    return p.issue(client, grant, session, now, fresh=False)
