"""Authorization code grant with PKCE S256 (RFC 6749 §4.1.3, RFC 7636 §4.6).

Codes are single-use: a replay revokes the tokens the first use produced (RFC 6749
§4.1.2), since the replay means the code leaked.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from confiance.core.encoding import b64url

from ..clients import Client
from ..errors import InvalidGrantError, InvalidRequestError

if TYPE_CHECKING:
    from ..domain import Provider

PKCE_VERIFIER_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def pkce_s256(verifier: str) -> str:
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def exchange(p: Provider, client: Client, params: Mapping[str, str], now: float) -> dict[str, Any]:
    code_value = params.get("code")
    if not code_value:
        raise InvalidRequestError("code obligatoire")
    code = p.store.code(code_value)
    if code is None or code.client_id != client.client_id:
        raise InvalidGrantError("code d'autorisation inconnu")
    if code.used:
        if code.grant_id:
            p.revoke_grant(code.grant_id)
        raise InvalidGrantError("code d'autorisation déjà utilisé")
    if now >= code.expires_at:
        raise InvalidGrantError("code d'autorisation expiré")
    if params.get("redirect_uri") != code.redirect_uri:
        raise InvalidGrantError("redirect_uri différente de celle de la demande")
    verifier = params.get("code_verifier")
    if not verifier or not PKCE_VERIFIER_RE.fullmatch(verifier):
        raise InvalidGrantError("code_verifier absent ou mal formé (PKCE)")
    if not hmac.compare_digest(pkce_s256(verifier), code.code_challenge):
        raise InvalidGrantError("code_verifier incorrect (PKCE)")
    if not p.store.use_code(code.code, code.expires_at):
        raise InvalidGrantError("code d'autorisation déjà utilisé")  # another request won the race
    session = p.store.session(code.session_id)
    if not p.session_active(session, now):
        raise InvalidGrantError("session PSC terminée")
    assert session is not None
    grant = p.new_grant(client, session, code.scope, code.nonce, now)
    code.grant_id = grant.id
    p.store.put_code(code)
    return p.issue(client, grant, session, now, fresh=True)
