"""What every use case of the guichet shares: the refusal error, the acting principal, and
the service core (one transaction per call, audit entry, notification).

Use-case modules are plain functions taking the ``ServiceCore`` as first argument, so each
family reads on its own and ``GuichetService`` only names them (``facade.py``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from argon2 import PasswordHasher
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from confiance.core.errors import ApiError
from confiance.core.jose import KeyStore

from .. import audit
from ..db import Database, Notification
from ..domain import conformity
from ..domain import parcours as pc
from ..domain.errors import DomainError, IllegalTransition
from ..domain.model import AnsRole, OrgRole
from ..domain.referentiel import Catalogue
from ..files import FileStore

log = logging.getLogger("confiance.guichet")
TOKEN_PREFIX = "cgt_"
SYSTEM = "plateforme"
T = TypeVar("T")


class ServiceError(ApiError):
    """A refused request: HTTP status, stable code, French message (and optional details).

    One of the project's error family (``ConfianceError`` via ``ApiError``, same
    ``{code, message, ...}`` rendering as every other component's API errors)."""


def not_found(what: str) -> ServiceError:
    return ServiceError(404, "introuvable", f"{what} introuvable")


def forbidden(msg: str = "action non autorisée pour ce compte") -> ServiceError:
    return ServiceError(403, "interdit", msg)


def conflict(msg: str, code: str = "conflit_version", **extra: Any) -> ServiceError:
    return ServiceError(409, code, msg, **extra)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, as the service sees it."""

    account_id: int
    email: str
    organisation_id: int | None
    org_role: OrgRole | None
    ans_roles: frozenset[AnsRole]
    validated: bool

    @property
    def label(self) -> str:
        return f"{self.account_id}:{self.email}"

    @property
    def is_ans(self) -> bool:
        return bool(self.ans_roles)

    def has(self, *roles: AnsRole) -> bool:
        return bool(self.ans_roles & set(roles)) or AnsRole.ADMIN in self.ans_roles


def check_version(current: int, expected: int | None, what: str) -> None:
    """Optimistic concurrency: a stale ``version`` from the caller is a 409 with the current one."""
    if expected is not None and expected != current:
        raise conflict(
            f"{what} a été modifié(e) entre-temps (version {current}, vous aviez la version {expected}) : rechargez",
            current_version=current,
        )


def require_ans(actor: Principal, *roles: AnsRole) -> None:
    if not actor.has(*roles):
        raise forbidden(f"action réservée à : {', '.join(r.value for r in roles)}")


def require_validated(actor: Principal) -> None:
    if not actor.validated:
        raise forbidden("compte non encore validé")


def load_text(name: str) -> str:
    """A file of the package's ``data/`` (référentiel, parcours, PASSI list)."""
    return resources.files("confiance.guichet").joinpath("data", name).read_text(encoding="utf-8")


def add_years(when: dt.datetime, years: int) -> dt.datetime:
    try:
        return when.replace(year=when.year + years)
    except ValueError:  # 29 February
        return when.replace(year=when.year + years, day=28)


@dataclass
class ServiceSettings:
    validity_years: int | None = None
    max_upload_bytes: int = 10 * 1024 * 1024
    conformity_max_age_days: int = 90
    trust_list_ttl_seconds: int = 3600
    token_ttl_days: int = 90
    login_max_failures: int = 10
    login_window_seconds: float = 900.0
    issuer: str = "http://127.0.0.1:8000"
    # PEM bundle of the roots a pentest report's signer must chain to (default: the PKI's root)
    pentest_trust_bundle: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ServiceCore:
    """The state every use case needs (database, files, keys, PKI, clock, rules) and the
    three things each of them does: run in ONE transaction, append to the audit trail,
    queue notifications. Thread-safe: state lives in the database and files."""

    def __init__(
        self,
        db: Database,
        files: FileStore,
        keys: KeyStore,
        *,
        settings: ServiceSettings | None = None,
        pki: Any = None,
        conformity_verifier: conformity.ReportVerifier | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        parcours_yaml: str | None = None,
        password_hasher: PasswordHasher | None = None,
    ) -> None:
        self.db = db
        self.files = files
        self.keys = keys
        self.settings = settings or ServiceSettings()
        self.pki = pki
        self.conformity_verifier = conformity_verifier
        self.clock: Callable[[], dt.datetime] = clock or (lambda: dt.datetime.now(dt.UTC))
        self.parcours = pc.Parcours.from_yaml(parcours_yaml or load_text("parcours.yaml"))
        self.catalogues: dict[str, Catalogue] = {}
        # argon2id with the library's defaults (RFC 9106 low-memory profile); tests pass a cheaper one
        self.hasher = password_hasher or PasswordHasher()
        self.trust_list_cache: tuple[int, dt.datetime, str] | None = None

    def pentest_roots(self) -> list[bytes]:
        """PEM roots a pentest report's signer must chain to: the configured bundle, else
        the root of the PKI the guichet holds, else none (signatures then reported unverified)."""
        bundle = self.settings.pentest_trust_bundle
        if bundle is not None:
            return [bundle.read_bytes()]
        if self.pki is not None:
            return [self.pki.root_cert.public_bytes(serialization.Encoding.PEM)]
        return []

    def pentest_crls(self) -> list[bytes]:
        """The CRLs of the PKI whose root is trusted (none with a configured bundle: the
        auditors' CAs publish nothing this offline guichet can read)."""
        if self.settings.pentest_trust_bundle is None and self.pki is not None and self.pki.crl_path.exists():
            return [self.pki.crl_path.read_bytes()]
        return []

    @property
    def validity_years(self) -> int:
        return self.settings.validity_years or self.parcours.validity_years

    def run(self, fn: Callable[[Session], T]) -> T:
        """One transaction; domain refusals and lost updates become ServiceErrors (nothing committed)."""
        try:
            with self.db.transaction() as s:
                return fn(s)
        except IllegalTransition as exc:
            raise ServiceError(409, exc.code, exc.message) from exc
        except DomainError as exc:
            raise ServiceError(422, exc.code, exc.message) from exc
        except StaleDataError as exc:
            raise conflict("modification concurrente : rechargez et recommencez") from exc
        except IntegrityError as exc:  # a unique constraint lost a race (two identical creations at once)
            raise conflict("enregistrement concurrent en double : rechargez", code="conflit") from exc

    def read(self, fn: Callable[[Session], T]) -> T:
        """Like ``run`` for read-only calls: no write lock, nothing committed."""
        try:
            with self.db.read() as s:
                return fn(s)
        except DomainError as exc:
            raise ServiceError(422, exc.code, exc.message) from exc

    def audit(
        self, s: Session, actor: Principal | None, action: str, target: str, before: Any = None, after: Any = None
    ) -> None:
        audit.append(
            s,
            at=self.clock(),
            actor=actor.label if actor else SYSTEM,
            action=action,
            target=target,
            before=before,
            after=after,
        )

    def notify(
        self,
        s: Session,
        kind: str,
        subject: str,
        body: str,
        *,
        org_id: int | None = None,
        account_id: int | None = None,
        candidature_id: int | None = None,
        dedup: str | None = None,
    ) -> bool:
        """Queue a notification in the outbox (deduplicated by ``dedup`` when given)."""
        if dedup is not None and s.scalar(select(Notification.id).where(Notification.dedup_key == dedup)) is not None:
            return False
        s.add(
            Notification(
                created_at=self.clock(),
                kind=kind,
                organisation_id=org_id,
                account_id=account_id,
                candidature_id=candidature_id,
                subject=subject,
                body=body,
                dedup_key=dedup,
            )
        )
        log.info("notification %s (organisation %s): %s", kind, org_id, subject)
        return True
