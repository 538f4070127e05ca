"""The resource side: checking an API token on each request and the ANS ``SessionData`` body."""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Any

from confiance.core.errors import ConfianceError

from .grants import RevocationList


class AccessDenied(ConfianceError):
    """A resource request refused (RFC 6750): 401 invalid_token or 403 insufficient_scope."""

    def __init__(self, message: str, *, status: int = 401, error: str = "invalid_token", reason: str = "") -> None:
        super().__init__(message, code=error)
        self.status = status
        self.error = error
        self.reason = reason or error
        self.claims: Mapping[str, Any] | None = None  # the verified token's claims, when known


def check_access(
    claims: Mapping[str, Any],
    *,
    audience: str,
    scopes: tuple[str, ...],
    cert_x5t: str | None,
    revocations: RevocationList,
    now: float,
) -> None:
    """Every check a resource service makes on an already signature-verified API token."""
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp <= now:
        raise AccessDenied("jeton expiré", reason="expired")
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if audience not in auds:
        raise AccessDenied("jeton émis pour une autre audience", reason="audience")
    jti = claims.get("jti")
    if not isinstance(jti, str) or revocations.is_revoked(jti):
        raise AccessDenied("jeton révoqué", reason="revoked")
    cnf = claims.get("cnf")
    bound = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    if not bound:
        raise AccessDenied("jeton non lié à un certificat (cnf absent)", reason="cnf_missing")
    if cert_x5t is None:
        raise AccessDenied("certificat client TLS requis", reason="no_certificate")
    if not hmac.compare_digest(str(bound), cert_x5t):
        raise AccessDenied(
            "le certificat client TLS ne correspond pas à celui auquel le jeton est lié (cnf x5t#S256)",
            reason="cnf_mismatch",
        )
    granted = str(claims.get("scope", "")).split()
    if not any(s in granted for s in scopes):
        raise AccessDenied(
            f"scope requis : {' ou '.join(scopes)}", status=403, error="insufficient_scope", reason="scope"
        )


SESSION_FIELDS = ("nationalId", "clientID", "proxy_session_id", "session_state")


def parse_session_data(body: bytes) -> dict[str, str]:
    """ANS ``SessionData``: four required strings; anything else is a 400 naming the field."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("corps JSON invalide") from exc
    if not isinstance(data, dict):
        raise ValueError("objet JSON attendu")
    out: dict[str, str] = {}
    for name in SESSION_FIELDS:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"champ manquant ou invalide : {name}")
        if len(value) > 512:
            raise ValueError(f"champ trop long : {name}")
        out[name] = value
    return out


def check_session_data(data: Mapping[str, str], claims: Mapping[str, Any]) -> str | None:
    """Why the session data does not match the API token, or None.

    Only a proxy that maps user + LPS → proxy session → PSC session correctly sends the
    nationalId, session_state (and LPS clientID) of the professional its token names.
    """
    if data["nationalId"] != claims.get("SubjectNameID"):
        return "nationalId ne correspond pas au professionnel du jeton"
    if data["session_state"] != claims.get("session_state"):
        return "session_state ne correspond pas à la session PSC du jeton"
    psc_client = claims.get("psc_client_id")
    if psc_client is not None and data["clientID"] != psc_client:
        return "clientID ne correspond pas au client PSC (LPS) de la session"
    return None


def canonical_json(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
