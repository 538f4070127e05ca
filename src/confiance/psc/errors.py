"""The errors the sandbox answers with: OAuth/OIDC error codes, and redirected ones.

Why one module: the domain raises them, the HTTP edge renders them, and the browser flow
sends some back to the client's redirect URI instead of showing them.
"""

from __future__ import annotations


class OAuthError(Exception):
    """An OAuth/OIDC error answer: ``{"error", "error_description"}`` with ``status``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class RedirectError(OAuthError):
    """An authorization error sent back to the (already validated) redirect URI."""

    def __init__(self, redirect_uri: str, state: str | None, error: str, description: str) -> None:
        super().__init__(error, description, 302)
        self.redirect_uri = redirect_uri
        self.state = state
