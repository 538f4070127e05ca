"""Storage of the guichet: SQLAlchemy 2 models, engine/session handling, Alembic migrations.

Rows that several people edit (candidatures, chapters, solutions, habilitations) carry a
``row_version`` column used by SQLAlchemy's optimistic concurrency: an UPDATE that did not
see the latest version matches no row and fails, so no edit is silently lost. The API also
lets clients send the version they read and refuses a stale one with 409 before doing
anything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from confiance.core.storage import make_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: pass UTC-aware datetimes")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UtcDateTime, dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012


class Organisation(Base):
    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2))
    siren: Mapped[str | None] = mapped_column(String(9), unique=True)
    siret: Mapped[str | None] = mapped_column(String(14))
    registration_number: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    org_role: Mapped[str | None] = mapped_column(String(20))
    ans_roles: Mapped[list[Any]] = mapped_column(default=list)
    validated: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime]


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class LoginFailure(Base):
    """A failed password check for an address, kept for the throttling window: in the
    database so that every guichet process behind a load balancer counts the same ones."""

    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    at: Mapped[dt.datetime]
    __table_args__ = (Index("ix_login_failures_email_at", "email", "at"),)


class Solution(Base):
    __tablename__ = "solutions"
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(30))
    created_at: Mapped[dt.datetime]
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012


class Component(Base):
    __tablename__ = "components"
    id: Mapped[int] = mapped_column(primary_key=True)
    solution_id: Mapped[int] = mapped_column(ForeignKey("solutions.id"))
    kind: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(64))


class Candidature(Base):
    __tablename__ = "candidatures"
    id: Mapped[int] = mapped_column(primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    created_by: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    role: Mapped[str] = mapped_column(String(3))
    level: Mapped[str] = mapped_column(String(20))
    path: Mapped[str] = mapped_column(String(30))
    solution_id: Mapped[int] = mapped_column(ForeignKey("solutions.id"))
    proxy_solution_id: Mapped[int | None] = mapped_column(ForeignKey("solutions.id"))
    osp_habilitation_id: Mapped[int | None] = mapped_column(Integer)
    software_name: Mapped[str] = mapped_column(String(200))
    software_version: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    nru_numbers: Mapped[list[Any]] = mapped_column(default=list)
    maturity: Mapped[dict[str, Any]] = mapped_column(default=dict)
    commitments: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(30))
    status_reason: Mapped[str | None] = mapped_column(Text)
    referentiel_version: Mapped[str] = mapped_column(String(40))
    parcours_done: Mapped[list[Any]] = mapped_column(default=list)
    collaborators: Mapped[list[Any]] = mapped_column(default=list)
    renews_habilitation_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012


class ChapterRow(Base):
    __tablename__ = "chapters"
    __table_args__ = (UniqueConstraint("candidature_id", "chapter_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    candidature_id: Mapped[int] = mapped_column(ForeignKey("candidatures.id"))
    chapter_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    requirement_ids: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(30))
    reason: Mapped[str | None] = mapped_column(Text)
    # Last submission for review and last verifier decision: the review queue is served
    # oldest submission first (not by the candidature's last change).
    submitted_at: Mapped[dt.datetime | None]
    decided_at: Mapped[dt.datetime | None]
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012


class StoredFile(Base):
    __tablename__ = "files"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(100))
    organisation_id: Mapped[int | None] = mapped_column(Integer)
    uploaded_by: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    uploaded_at: Mapped[dt.datetime]


class FileGrant(Base):
    """Which companies uploaded a file: identical bytes are stored once, but each company that
    uploaded them may use them (and only those companies)."""

    __tablename__ = "file_grants"
    __table_args__ = (UniqueConstraint("sha256", "organisation_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(ForeignKey("files.sha256"))
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    granted_at: Mapped[dt.datetime]


class Evidence(Base):
    __tablename__ = "evidence"
    id: Mapped[int] = mapped_column(primary_key=True)
    candidature_id: Mapped[int] = mapped_column(ForeignKey("candidatures.id"))
    requirement_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))
    file_sha256: Mapped[str | None] = mapped_column(ForeignKey("files.sha256"))
    file_name: Mapped[str | None] = mapped_column(String(200))  # as deposited, for downloads
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checks: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20))  # valide | a_revoir | remplacee
    review_reason: Mapped[str | None] = mapped_column(Text)
    deposited_by: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    deposited_at: Mapped[dt.datetime]


class CertificateRow(Base):
    __tablename__ = "certificates"
    id: Mapped[int] = mapped_column(primary_key=True)
    candidature_id: Mapped[int] = mapped_column(ForeignKey("candidatures.id"))
    component_id: Mapped[int] = mapped_column(ForeignKey("components.id"))
    environment: Mapped[str] = mapped_column(String(20))
    pki_name: Mapped[str] = mapped_column(String(64))
    serial: Mapped[str] = mapped_column(String(64))
    subject_dn: Mapped[str] = mapped_column(String(400))
    x5t_s256: Mapped[str] = mapped_column(String(64))
    not_after: Mapped[str] = mapped_column(String(40))
    cert_pem: Mapped[str] = mapped_column(Text)
    issued_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]


class Habilitation(Base):
    __tablename__ = "habilitations"
    id: Mapped[int] = mapped_column(primary_key=True)
    candidature_id: Mapped[int] = mapped_column(ForeignKey("candidatures.id"), unique=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    role: Mapped[str] = mapped_column(String(3))
    environment: Mapped[str] = mapped_column(String(20))
    solution_id: Mapped[int] = mapped_column(ForeignKey("solutions.id"))
    granted_at: Mapped[dt.datetime]
    valid_until: Mapped[dt.datetime]
    status: Mapped[str] = mapped_column(String(20))
    status_reason: Mapped[str | None] = mapped_column(Text)
    at_risk: Mapped[bool] = mapped_column(Boolean, default=False)
    at_risk_reason: Mapped[str | None] = mapped_column(Text)
    relies_on: Mapped[list[Any]] = mapped_column(default=list)
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012


class PassiProvider(Base):
    __tablename__ = "passi_providers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    reference: Mapped[str] = mapped_column(String(64), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class ReferentielVersion(Base):
    __tablename__ = "referentiel_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[str] = mapped_column(String(40), unique=True)
    content: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime]
    created_by: Mapped[int | None] = mapped_column(Integer)


class AuditRow(Base):
    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row locked (SELECT … FOR UPDATE) by each append: concurrent writers cannot fork the chain."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(primary_key=True)
    last_seq: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))


class Notification(Base):
    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[dt.datetime]
    kind: Mapped[str] = mapped_column(String(40))
    organisation_id: Mapped[int | None] = mapped_column(Integer)
    account_id: Mapped[int | None] = mapped_column(Integer)
    candidature_id: Mapped[int | None] = mapped_column(Integer, index=True)  # the dossier it is about
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    dedup_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    sent_at: Mapped[dt.datetime | None]


def _immediate_transactions(engine: Engine) -> None:
    """SQLite: take the write lock at BEGIN. A deferred transaction that read the audit head and
    then tries to write would fail with "database is locked" under concurrency instead of
    waiting its turn (the busy timeout only helps a transaction that has not read yet)."""

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """Engine + session factory; ``transaction()`` is the unit of work of every service call."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        self._read_engine: Engine = self.engine
        if self.is_sqlite:
            _immediate_transactions(self.engine)
            self._read_engine = make_engine(url)  # plain deferred transactions: WAL readers run in parallel
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only unit of work (never takes SQLite's write lock); changes are rolled back."""
        with self._read_sessions() as session:
            try:
                yield session
            finally:
                session.rollback()

    def migrate(self) -> None:
        """Bring the schema to the latest Alembic revision (idempotent)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.engine.dispose()
        if self._read_engine is not self.engine:
            self._read_engine.dispose()
