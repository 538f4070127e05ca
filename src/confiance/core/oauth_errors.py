"""OAuth 2.0 / OpenID Connect errors: one class per registered error code.

The PSC sandbox and the API authorization server answer the same RFC codes; a class per
code gives each its default HTTP status once (RFC 6749 §5.2, RFC 6750 §3.1, RFC 8628
§3.5, CIBA §11-13, RFC 8693 §2.2.2, RFC 8707 §2, RFC 7009 §2.2.1) instead of a string and
a number repeated at every ``raise``. Every class takes the same arguments — a
description, an optional status override, optional extra headers — and renders the RFC
6749 body with ``Cache-Control: no-store``.

``OAuthError.of(code, ...)`` builds the class registered for a code (or a generic one for
an extension code), for places that relay a code received from elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from starlette.responses import JSONResponse

from .errors import ConfianceError, oauth_error

REGISTRY: dict[str, type[OAuthError]] = {}


class OAuthError(ConfianceError):
    """An OAuth error answer: ``{"error", "error_description"}`` with ``status`` and ``headers``."""

    error: str = "server_error"
    default_status: ClassVar[int] = 400

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "error" in cls.__dict__:
            REGISTRY.setdefault(cls.error, cls)

    def __init__(self, description: str, status: int | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(description, code=self.error)
        self.description = description
        self.status = self.default_status if status is None else status
        self.headers: dict[str, str] = dict(headers or {})

    @classmethod
    def of(
        cls, error: str, description: str, status: int | None = None, headers: Mapping[str, str] | None = None
    ) -> OAuthError:
        """The error for ``error``: its registered class, or a generic one carrying the code."""
        registered = REGISTRY.get(error)
        if registered is not None:
            return registered(description, status, headers)
        exc = OAuthError(description, status, headers)
        exc.error = exc.code = error
        return exc

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}

    def response(self, **headers: str) -> JSONResponse:
        """The JSON answer, never cached; ``headers`` add to those given at construction."""
        return oauth_error(self.error, self.description, self.status, **{**self.headers, **headers})


# ----------------------------------------------------------------- RFC 6749 §5.2 (token endpoint)
class InvalidRequestError(OAuthError):
    error = "invalid_request"


class InvalidClientError(OAuthError):
    """Client authentication failed; 401 (the caller adds ``WWW-Authenticate`` for its scheme)."""

    error = "invalid_client"
    default_status = 401


class InvalidGrantError(OAuthError):
    error = "invalid_grant"


class UnauthorizedClientError(OAuthError):
    error = "unauthorized_client"


class UnsupportedGrantTypeError(OAuthError):
    error = "unsupported_grant_type"


class InvalidScopeError(OAuthError):
    error = "invalid_scope"


# ----------------------------------------------------------------- RFC 6749 §4.1.2.1 (authorization endpoint)
class AccessDeniedError(OAuthError):
    """Also the CIBA / device-flow answer when the user refused (RFC 8628 §3.5, CIBA §11)."""

    error = "access_denied"


class UnsupportedResponseTypeError(OAuthError):
    error = "unsupported_response_type"


class ServerError(OAuthError):
    error = "server_error"
    default_status = 500


class TemporarilyUnavailableError(OAuthError):
    error = "temporarily_unavailable"
    default_status = 503


# ----------------------------------------------------------------- polling grants (RFC 8628 §3.5, CIBA §11)
class AuthorizationPendingError(OAuthError):
    error = "authorization_pending"


class SlowDownError(OAuthError):
    error = "slow_down"


class ExpiredTokenError(OAuthError):
    error = "expired_token"


# ----------------------------------------------------------------- CIBA §13 (authentication request)
class UnknownUserIdError(OAuthError):
    error = "unknown_user_id"


class InvalidBindingMessageError(OAuthError):
    error = "invalid_binding_message"


class ExpiredLoginHintTokenError(OAuthError):
    error = "expired_login_hint_token"


class MissingUserCodeError(OAuthError):
    error = "missing_user_code"


class InvalidUserCodeError(OAuthError):
    error = "invalid_user_code"


class TransactionFailedError(OAuthError):
    error = "transaction_failed"


# ----------------------------------------------------------------- RFC 6750 §3.1 (protected resources)
class InvalidTokenError(OAuthError):
    error = "invalid_token"
    default_status = 401


class InsufficientScopeError(OAuthError):
    error = "insufficient_scope"
    default_status = 403


# ----------------------------------------------------------------- RFC 8693 / RFC 8707 / RFC 7009
class InvalidTargetError(OAuthError):
    error = "invalid_target"


class UnsupportedTokenTypeError(OAuthError):
    error = "unsupported_token_type"


# ----------------------------------------------------------------- OpenID Connect Core §3.1.2.6
class LoginRequiredError(OAuthError):
    error = "login_required"


class ConsentRequiredError(OAuthError):
    error = "consent_required"


class InteractionRequiredError(OAuthError):
    error = "interaction_required"


__all__ = [
    "REGISTRY",
    "AccessDeniedError",
    "AuthorizationPendingError",
    "ConsentRequiredError",
    "ExpiredLoginHintTokenError",
    "ExpiredTokenError",
    "InsufficientScopeError",
    "InteractionRequiredError",
    "InvalidBindingMessageError",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidRequestError",
    "InvalidScopeError",
    "InvalidTargetError",
    "InvalidTokenError",
    "InvalidUserCodeError",
    "LoginRequiredError",
    "MissingUserCodeError",
    "OAuthError",
    "ServerError",
    "SlowDownError",
    "TemporarilyUnavailableError",
    "TransactionFailedError",
    "UnauthorizedClientError",
    "UnknownUserIdError",
    "UnsupportedGrantTypeError",
    "UnsupportedResponseTypeError",
    "UnsupportedTokenTypeError",
]
