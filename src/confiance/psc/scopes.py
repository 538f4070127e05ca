"""The scopes the sandbox knows; parsing is shared by CIBA, the code flow and refresh."""

from __future__ import annotations

from .errors import InvalidScopeError

SUPPORTED_SCOPES = frozenset({"openid", "scope_all", "profile", "email", "offline_access"})


def parse_scopes(raw: str | None) -> set[str]:
    if not raw:
        raise InvalidScopeError("scope obligatoire")
    scopes = set(raw.split())
    unknown = scopes - SUPPORTED_SCOPES
    if unknown:
        raise InvalidScopeError(f"scope inconnu : {' '.join(sorted(unknown))[:100]}")
    return scopes
