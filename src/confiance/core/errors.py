"""One error family for every component, and the JSON shapes errors are rendered in.

Every error a component raises on purpose derives from ``ConfianceError``: a machine
``code`` (stable, for logs, tests and clients) and a human ``message`` (French when a user
reads it). Edges can then catch "one of ours" in one place and render it, while anything
else is a bug and becomes a 500. Component errors subclass it (``ConfigError``,
``TokenError``, ``PkiError``, the OAuth errors of ``oauth_errors``, ...); those that were
``ValueError`` before stay ``ValueError`` too, so existing ``except ValueError`` keep working.

Two wire shapes: ``{code, message, ...}`` (our own APIs, ``ApiError``) and RFC 6749 §5.2
``{error, error_description}`` (OAuth endpoints, ``oauth_error`` / ``OAuthError``).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class ConfianceError(Exception):
    """Base of every deliberate error: ``code`` for machines, ``message`` for people."""

    code: str = "error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return str(self.message)  # str(): a caller passing an exception as the message still prints


class ApiError(ConfianceError):
    """Raised by domain edges; rendered as ``{code, message, **extra}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.extra = extra

    def response(self) -> JSONResponse:
        return JSONResponse({"code": self.code, "message": self.message, **self.extra}, status_code=self.status)


def oauth_error(error: str, description: str, status: int = 400, **headers: str) -> JSONResponse:
    """RFC 6749 §5.2 error body; never cached."""
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={**NO_STORE, **headers},
    )
