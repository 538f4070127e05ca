"""Settings of the web UI (a section of the guichet configuration, or built by tests)."""

from __future__ import annotations

import secrets
from typing import Annotated

from pydantic import Field

from confiance.core.config import StrictModel


class WebSettings(StrictModel):
    # HMAC key for CSRF tokens and flash cookies. Empty: a random key per process, which is
    # right for one process (sessions themselves are server-side and survive restarts,
    # forms opened before a restart must be re-submitted). Set it when running several.
    secret_key: str = ""
    # Secure cookies (sent over HTTPS only). Browsers accept them on http://127.0.0.1 and
    # http://localhost too, so the loopback default stays on; turn off only for another
    # plain-HTTP host in development.
    cookie_secure: bool = True
    session_idle_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 30
    session_absolute_hours: Annotated[int, Field(ge=1, le=72)] = 10
    lockout_max_failures: Annotated[int, Field(ge=1, le=100)] = 5
    lockout_window_minutes: Annotated[int, Field(ge=1)] = 15
    lockout_minutes: Annotated[int, Field(ge=1)] = 15
    page_size: Annotated[int, Field(ge=5, le=500)] = 50
    expiring_days: Annotated[int, Field(ge=1)] = 90

    def key(self) -> bytes:
        if not self.secret_key:
            object.__setattr__(self, "secret_key", secrets.token_urlsafe(32))
        return self.secret_key.encode()
