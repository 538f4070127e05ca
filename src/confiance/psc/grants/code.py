"""Authorization code grant with PKCE S256 (RFC 6749 §4.1.3, RFC 7636 §4.6).

Codes are single-use: a replay revokes the tokens the first use produced (RFC 6749
§4.1.2), since the replay means the code leaked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..clients import Client
from ..errors import OAuthError

if TYPE_CHECKING:
    from ..domain import Provider

PKCE_VERIFIER_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def pkce_s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def exchange(p: Provider, client: Client, params: Mapping[str, str], now: float) -> dict[str, Any]:
    code_value = params.get("code")
    if not code_value:
        raise OAuthError("invalid_request", "code obligatoire")
    code = p.store.code(code_value)
    if code is None or code.client_id != client.client_id:
        raise OAuthError("invalid_grant", "code d'autorisation inconnu")
    if code.used:
        if code.grant_id:
            p.revoke_grant(code.grant_id)
        raise OAuthError("invalid_grant", "code d'autorisation déjà utilisé")
    if now >= code.expires_at:
        raise OAuthError("invalid_grant", "code d'autorisation expiré")
    if params.get("redirect_uri") != code.redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri différente de celle de la demande")
    verifier = params.get("code_verifier")
    if not verifier or not PKCE_VERIFIER_RE.fullmatch(verifier):
        raise OAuthError("invalid_grant", "code_verifier absent ou mal formé (PKCE)")
    if not hmac.compare_digest(pkce_s256(verifier), code.code_challenge):
        raise OAuthError("invalid_grant", "code_verifier incorrect (PKCE)")
    if not p.store.use_code(code.code, code.expires_at):
        raise OAuthError("invalid_grant", "code d'autorisation déjà utilisé")  # another request won the race
    session = p.store.session(code.session_id)
    if not p.session_active(session, now):
        raise OAuthError("invalid_grant", "session PSC terminée")
    assert session is not None
    grant = p.new_grant(client, session, code.scope, code.nonce, now)
    code.grant_id = grant.id
    p.store.put_code(code)
    return p.issue(client, grant, session, now, fresh=True)
