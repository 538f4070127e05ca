"""The rules of the API Pro Santé Connectée, free of I/O.

Everything a decision depends on (request fields, the caller's certificate, the registry,
the clock) is passed in, so each rule is unit-tested directly and the HTTP edges only
translate between the wire and these functions. One module per concern:

- ``form``: grant and token-type names, strict ``x-www-form-urlencoded`` parsing;
- ``clients``: the client registry and client authentication (mTLS, sandbox secret);
- ``exchange``: RFC 8693 token exchange, from the request to the API access token;
- ``grants``: revocations and rotating refresh tokens;
- ``access``: what a resource service checks on each request, ``SessionData``.
"""

from __future__ import annotations

from .access import (
    SESSION_FIELDS,
    AccessDenied,
    canonical_json,
    check_access,
    check_session_data,
    parse_session_data,
)
from .clients import (
    Caller,
    ClientRegistry,
    authenticate_client,
    generate_secret,
    secret_hash,
)
from .exchange import (
    Catalog,
    ExchangeRequest,
    Service,
    Subject,
    access_token_claims,
    exchange_response,
    parse_exchange,
    resolve_targets,
    subject_from_claims,
)
from .form import (
    GRANT_REFRESH,
    GRANT_TOKEN_EXCHANGE,
    REPEATABLE,
    SUBJECT_ISSUERS,
    SUBJECT_TOKEN_TYPES,
    TT_ACCESS_TOKEN,
    TT_JWT,
    TT_REFRESH,
    one,
    parse_form,
    split_scope,
)
from .grants import (
    RefreshGrant,
    RefreshStore,
    RevocationList,
)

__all__ = [
    "GRANT_REFRESH",
    "GRANT_TOKEN_EXCHANGE",
    "REPEATABLE",
    "SESSION_FIELDS",
    "SUBJECT_ISSUERS",
    "SUBJECT_TOKEN_TYPES",
    "TT_ACCESS_TOKEN",
    "TT_JWT",
    "TT_REFRESH",
    "AccessDenied",
    "Caller",
    "Catalog",
    "ClientRegistry",
    "ExchangeRequest",
    "RefreshGrant",
    "RefreshStore",
    "RevocationList",
    "Service",
    "Subject",
    "access_token_claims",
    "authenticate_client",
    "canonical_json",
    "check_access",
    "check_session_data",
    "exchange_response",
    "generate_secret",
    "one",
    "parse_exchange",
    "parse_form",
    "parse_session_data",
    "resolve_targets",
    "secret_hash",
    "split_scope",
    "subject_from_claims",
]
