"""The errors the sandbox answers with: core's OAuth errors (one class per RFC code), the
one OpenID Connect code core does not register, and errors sent back to a redirect URI.

Why here: the domain raises them, the HTTP edge renders them, and the browser flow sends
some back to the client's redirect URI instead of showing them.
"""

from __future__ import annotations

from confiance.core.oauth_errors import (
    AccessDeniedError,
    AuthorizationPendingError,
    ExpiredTokenError,
    InvalidBindingMessageError,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    InvalidTokenError,
    OAuthError,
    SlowDownError,
    UnauthorizedClientError,
    UnknownUserIdError,
    UnsupportedGrantTypeError,
    UnsupportedTokenTypeError,
)

__all__ = [
    "AccessDeniedError",
    "AuthorizationPendingError",
    "ExpiredTokenError",
    "InvalidBindingMessageError",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidRequestError",
    "InvalidScopeError",
    "InvalidTokenError",
    "OAuthError",
    "RedirectError",
    "SlowDownError",
    "UnauthorizedClientError",
    "UnknownUserIdError",
    "UnmetAuthenticationRequirementsError",
    "UnsupportedGrantTypeError",
    "UnsupportedTokenTypeError",
]


class UnmetAuthenticationRequirementsError(OAuthError):
    """OpenID Connect Core (errata set 2) §3.1.2.6: the requested ``acr`` cannot be met."""

    error = "unmet_authentication_requirements"


class RedirectError(OAuthError):
    """An authorization error sent back to the (already validated) redirect URI."""

    default_status = 302

    def __init__(self, redirect_uri: str, state: str | None, error: str, description: str) -> None:
        super().__init__(description)
        self.error = self.code = error
        self.redirect_uri = redirect_uri
        self.state = state
