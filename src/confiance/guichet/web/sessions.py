"""Server-side web sessions and sign-in attempts (the web UI's own two tables).

They belong to the web edge, not to the registry: the domain never needs them. They live
in the guichet's database (so several guichet processes behind a load balancer share
them) under their own metadata; their schema is the guichet's Alembic revision 0004,
applied with the others by ``Database.migrate`` (tests/guichet/test_storage.py checks that
these models and the migrations agree).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Boolean, DateTime, Engine, Index, Integer, String, delete, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from .security import LockoutPolicy, locked_until, new_token, token_digest


class WebBase(DeclarativeBase):
    pass


class WebSession(WebBase):
    __tablename__ = "web_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(Integer, index=True)
    name: Mapped[str] = mapped_column(String(200))  # shown in the header without another query
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class LoginAttempt(WebBase):
    __tablename__ = "web_login_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    success: Mapped[bool] = mapped_column(Boolean)
    __table_args__ = (Index("ix_web_login_attempts_email_at", "email", "at"),)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class ActiveSession:
    token: str
    account_id: int
    name: str
    expires_at: dt.datetime


class SessionStore:
    """Create, look up, revoke sessions; record sign-in attempts and compute lockout."""

    def __init__(
        self,
        engine: Engine,
        *,
        idle_timeout: dt.timedelta = dt.timedelta(minutes=30),
        absolute_timeout: dt.timedelta = dt.timedelta(hours=10),
        lockout: LockoutPolicy | None = None,
    ) -> None:
        self.engine = engine
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self.lockout = lockout or LockoutPolicy()
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def _tx(self) -> Session:
        return self._sessions()

    def create(self, account_id: int, name: str, now: dt.datetime, token: str | None = None) -> ActiveSession:
        """A new session (always a new token: no session fixation)."""
        token = token or new_token()
        expires = now + self.absolute_timeout
        with self._tx() as s, s.begin():
            s.add(
                WebSession(
                    token_hash=token_digest(token),
                    account_id=account_id,
                    name=name[:200],
                    created_at=now,
                    expires_at=expires,
                    last_seen=now,
                )
            )
        return ActiveSession(token, account_id, name, expires)

    def lookup(self, token: str, now: dt.datetime) -> ActiveSession | None:
        """The live session of a cookie, sliding its idle timer; expired ones are deleted."""
        digest = token_digest(token)
        with self._tx() as s, s.begin():
            row = s.get(WebSession, digest)
            if row is None:
                return None
            if _aware(row.expires_at) <= now or now - _aware(row.last_seen) > self.idle_timeout:
                s.delete(row)
                return None
            if now - _aware(row.last_seen) > dt.timedelta(seconds=30):
                # Write at most every 30 s: list pages stay read-only in the common case.
                s.execute(update(WebSession).where(WebSession.token_hash == digest).values(last_seen=now))
            return ActiveSession(token, row.account_id, row.name, _aware(row.expires_at))

    def revoke(self, token: str) -> None:
        with self._tx() as s, s.begin():
            s.execute(delete(WebSession).where(WebSession.token_hash == token_digest(token)))

    def revoke_account(self, account_id: int, keep_token: str | None = None) -> int:
        """Sign an account out everywhere (password change, deactivation)."""
        with self._tx() as s, s.begin():
            q = delete(WebSession).where(WebSession.account_id == account_id)
            if keep_token:
                q = q.where(WebSession.token_hash != token_digest(keep_token))
            return int(s.execute(q).rowcount)  # type: ignore[attr-defined]

    def locked_until(self, email: str, now: dt.datetime) -> dt.datetime | None:
        since = now - max(self.lockout.window, self.lockout.lock_for) - self.lockout.window
        with self._tx() as s:
            rows = s.execute(
                select(LoginAttempt.at, LoginAttempt.success)
                .where(LoginAttempt.email == email.casefold(), LoginAttempt.at >= since)
                .order_by(LoginAttempt.at.desc())
                .limit(200)
            ).all()
        return locked_until(((_aware(at), ok) for at, ok in rows), now, self.lockout)

    def record_attempt(self, email: str, success: bool, now: dt.datetime) -> None:
        with self._tx() as s, s.begin():
            s.add(LoginAttempt(email=email.casefold()[:254], at=now, success=success))
            if success:
                self._purge(s, now)

    def _purge(self, s: Session, now: dt.datetime) -> None:
        """Housekeeping at each successful sign-in: both tables stay bounded without a cron."""
        keep = max(self.lockout.window, self.lockout.lock_for) * 2
        s.execute(delete(LoginAttempt).where(LoginAttempt.at < now - keep))
        s.execute(
            delete(WebSession).where((WebSession.expires_at <= now) | (WebSession.last_seen < now - self.idle_timeout))
        )
