"""Pure security rules of the web UI: session tokens, CSRF tokens, passwords, lockout.

Why these choices:
- The session cookie holds a random 256-bit token; the database stores only its SHA-256,
  so a leaked database row cannot be replayed as a cookie, and logout/deactivation revokes
  the session server-side immediately (a signed stateless cookie could not be revoked).
- CSRF uses a token bound to the cookie it protects: ``HMAC(secret, cookie value)``. The
  form token is useless without the victim's cookie and the cookie cannot be read by
  another origin; this works before sign-in too (the sign-in form is protected by a
  short-lived anonymous cookie), so every form carries a token.
- Passwords: Argon2id (argon2-cffi defaults: RFC 9106 low-memory profile).
- Lockout counts failed sign-ins per e-mail address in a sliding window; the same answer is
  given whether or not the address exists, so the lockout does not reveal accounts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()

MIN_PASSWORD_LENGTH = 12


def new_token() -> str:
    """A fresh random token for a cookie (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What the database stores for a cookie token."""
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(secret: bytes, cookie_value: str) -> str:
    """The anti-CSRF token of the forms served with this cookie."""
    return hmac.new(secret, b"csrf:" + cookie_value.encode(), hashlib.sha256).hexdigest()


def csrf_valid(secret: bytes, cookie_value: str | None, submitted: str | None) -> bool:
    if not cookie_value or not submitted:
        return False
    return hmac.compare_digest(csrf_token(secret, cookie_value), submitted)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant work whether or not the account exists (a dummy hash is verified otherwise)."""
    target = stored_hash or _DUMMY_HASH
    try:
        ok = _hasher.verify(target, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    return ok and stored_hash is not None


def password_problems(password: str, email: str = "") -> list[str]:
    """French reasons a new password is refused (empty list: acceptable)."""
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"le mot de passe doit compter au moins {MIN_PASSWORD_LENGTH} caractères")
    if len(password) > 256:
        problems.append("le mot de passe ne peut dépasser 256 caractères")
    if email and email.split("@")[0].casefold() in password.casefold() and len(email.split("@")[0]) >= 3:
        problems.append("le mot de passe ne doit pas contenir votre identifiant")
    if len(set(password)) < 5:
        problems.append("le mot de passe est trop répétitif")
    return problems


_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class LockoutPolicy:
    max_failures: int = 5
    window: timedelta = timedelta(minutes=15)
    lock_for: timedelta = timedelta(minutes=15)


def locked_until(attempts: Iterable[tuple[datetime, bool]], now: datetime, policy: LockoutPolicy) -> datetime | None:
    """When the account unlocks, or None if sign-in is allowed now.

    ``attempts`` are (when, succeeded) pairs for one e-mail address. Only failures after the
    last success and inside the window count; ``max_failures`` of them lock the address until
    ``lock_for`` after the last one.
    """
    ordered = sorted(attempts)
    last_success = max((at for at, ok in ordered if ok), default=None)
    failures = [at for at, ok in ordered if not ok and (last_success is None or at > last_success)]
    recent = [at for at in failures if now - at <= policy.window]
    if len(recent) < policy.max_failures:
        return None
    until = recent[-1] + policy.lock_for
    return until if until > now else None
