"""Reading OAuth token-endpoint requests: the grant and token-type names, strict form parsing."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote_plus

from confiance.core.oauth_errors import (
    InvalidRequestError,
    InvalidScopeError,
)

GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
GRANT_REFRESH = "refresh_token"
TT_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
TT_JWT = "urn:ietf:params:oauth:token-type:jwt"
TT_REFRESH = "urn:ietf:params:oauth:token-type:refresh_token"
SUBJECT_TOKEN_TYPES = (TT_ACCESS_TOKEN, TT_JWT)
# ANS's example request names PSC as the subject token's issuer this way.
SUBJECT_ISSUERS = ("psc",)
# Parameters RFC 8693 lets a client repeat; every other one must appear at most once (RFC 6749 §3.2).
REPEATABLE = frozenset({"audience", "resource"})


def parse_form(body: bytes, content_type: str | None, max_bytes: int) -> dict[str, list[str]]:
    """Strict ``application/x-www-form-urlencoded`` parsing.

    Duplicated parameters are refused (RFC 6749 §3.2) except those RFC 8693 allows to repeat;
    a body we cannot read is an ``invalid_request``, never an exception escaping as a 500.
    """
    if len(body) > max_bytes:
        raise InvalidRequestError(f"requête trop volumineuse (> {max_bytes} octets)", 413)
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequestError("Content-Type attendu : application/x-www-form-urlencoded")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError("corps de requête illisible (UTF-8 attendu)") from exc
    form: dict[str, list[str]] = {}
    pairs = text.split("&") if text else []
    if len(pairs) > 64:
        raise InvalidRequestError("trop de paramètres")
    for pair in pairs:
        if not pair:
            continue
        name, _, value = pair.partition("=")
        # JWTs and most values contain no escapes: unquote only when needed (a 1 kB
        # subject_token through unquote_plus costs more than the rest of the parsing).
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        if name in form and name not in REPEATABLE:
            raise InvalidRequestError(f"paramètre répété : {name[:40]}")
        form.setdefault(name, []).append(value)
    return form


def one(form: Mapping[str, list[str]], name: str, *, required: bool = False, max_len: int = 8192) -> str | None:
    values = form.get(name)
    if not values or values[0] == "":
        if required:
            raise InvalidRequestError(f"paramètre manquant : {name}")
        return None
    value = values[0]
    if len(value) > max_len:
        raise InvalidRequestError(f"paramètre trop long : {name}")
    return value


def split_scope(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    scopes = tuple(dict.fromkeys(value.split()))
    for s in scopes:
        if len(s) > 128 or not all(c.isalnum() or c in "._:/-" for c in s):
            raise InvalidScopeError(f"scope mal formé : {s[:40]!r}")
    return scopes
