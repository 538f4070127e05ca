"""Clear JSON errors, the same shape everywhere: ``{code, message, ...}``."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


class ApiError(Exception):
    """Raised by domain edges; rendered as ``{code, message, **extra}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def response(self) -> JSONResponse:
        return JSONResponse({"code": self.code, "message": self.message, **self.extra}, status_code=self.status)


def oauth_error(error: str, description: str, status: int = 400, **headers: str) -> JSONResponse:
    """RFC 6749 §5.2 error body; never cached."""
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache", **headers},
    )
