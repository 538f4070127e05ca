"""Application services of the guichet: the one API the JSON routes and the web UI call.

Each public method takes the acting ``Principal`` (or none for public operations) and plain
inputs (``schemas``), runs in ONE database transaction, checks the actor's rights, applies
the pure domain rules, records the action in the hash-chained audit trail (who, when, what,
before/after) and returns output schemas. Any refusal raises ``ServiceError`` before the
transaction commits, so a refused action changes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified
from sqlalchemy.orm.exc import StaleDataError

from confiance.core.jose import KeyStore, TokenError, verify_jws
from confiance.pki import PkiError

from . import audit
from . import schemas as sc
from .db import (
    Account,
    ApiToken,
    AuditHead,
    AuditRow,
    Candidature,
    CertificateRow,
    ChapterRow,
    Component,
    Database,
    Evidence,
    FileGrant,
    Habilitation,
    LoginFailure,
    Notification,
    Organisation,
    PassiProvider,
    ReferentielVersion,
    Solution,
    StoredFile,
)
from .domain import conformity, dependencies, pentest
from .domain import parcours as pc
from .domain import workflow as wf
from .domain.errors import DomainError, IllegalTransition
from .domain.identifiers import validate_registration, validate_siren, validate_siret
from .domain.model import (
    ROLE_LABELS,
    AnsRole,
    ComponentKind,
    EvidenceKind,
    HabilitationStatus,
    Level,
    OrgRole,
    Role,
    SolutionKind,
    environment_for,
    needs_cnda,
    solution_kind_for,
)
from .domain.referentiel import Catalogue, Requirement, diff_for
from .files import FileStore, check_content

log = logging.getLogger("confiance.guichet")
TOKEN_PREFIX = "cgt_"
T = TypeVar("T")


class ServiceError(Exception):
    """A refused request: HTTP status, stable code, French message (and optional details)."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def _not_found(what: str) -> ServiceError:
    return ServiceError(404, "introuvable", f"{what} introuvable")


def _forbidden(msg: str = "action non autorisée pour ce compte") -> ServiceError:
    return ServiceError(403, "interdit", msg)


def _conflict(msg: str, code: str = "conflit_version", **extra: Any) -> ServiceError:
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


SYSTEM = "plateforme"


def _load_text(name: str) -> str:
    return resources.files("confiance.guichet").joinpath("data", name).read_text(encoding="utf-8")


def add_years(when: dt.datetime, years: int) -> dt.datetime:
    try:
        return when.replace(year=when.year + years)
    except ValueError:  # 29 February
        return when.replace(year=when.year + years, day=28)


class JwksReportVerifier:
    """Conformity reports verified against the tool's published JWKS (RS/PS/ES256 only)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
            raise ValueError("JWKS de l'outil de conformité vide ou invalide")
        self.jwks = jwks

    def verify(self, token: str) -> bytes:
        token = token.strip()
        if token.count(".") != 2:
            raise DomainError(
                "rapport_non_signe", "le rapport de conformité doit être un JWS compact signé par l'outil"
            )
        try:
            return verify_jws(token, self.jwks)
        except (TokenError, ValueError) as exc:
            raise DomainError(
                "signature_invalide", "la signature du rapport de conformité ne correspond à aucune clé de l'outil"
            ) from exc


class JwksFileReportVerifier:
    """The conformity tool's JWKS read from its published file, re-read when the file changes
    (the tool may rotate its keys while the guichet runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._inner: JwksReportVerifier | None = None
        self._lock = threading.Lock()

    def verify(self, token: str) -> bytes:
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime
            except OSError as exc:
                raise DomainError("verification_indisponible", "clés de l'outil de conformité introuvables") from exc
            if self._inner is None or mtime != self._mtime:
                try:
                    self._inner = JwksReportVerifier(json.loads(self.path.read_text()))
                except (OSError, ValueError) as exc:
                    raise DomainError("verification_indisponible", "clés de l'outil de conformité illisibles") from exc
                self._mtime = mtime
            inner = self._inner
        return inner.verify(token)


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
    extra: dict[str, Any] = field(default_factory=dict)


class GuichetService:
    """All use cases of the guichet. Thread-safe: state lives in the database and files."""

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
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.parcours = pc.Parcours.from_yaml(parcours_yaml or _load_text("parcours.yaml"))
        self._catalogues: dict[str, Catalogue] = {}
        # argon2id with the library's defaults (RFC 9106 low-memory profile); tests pass a cheaper one
        self.hasher = password_hasher or PasswordHasher()
        self._trust_list_cache: tuple[int, dt.datetime, str] | None = None

    @property
    def validity_years(self) -> int:
        return self.settings.validity_years or self.parcours.validity_years

    # ================================================================ setup
    def initialize(self) -> None:
        """Migrate the schema and seed the référentiel and PASSI registry on first start."""
        self.db.migrate()
        with self.db.transaction() as s:
            if s.scalar(select(func.count()).select_from(ReferentielVersion)) == 0:
                cat = Catalogue.from_yaml(_load_text("referentiel.yaml"))
                s.add(ReferentielVersion(version=cat.version, content=cat.as_dict(), created_at=self.clock()))
                audit.append(
                    s,
                    at=self.clock(),
                    actor=SYSTEM,
                    action="referentiel.initialiser",
                    target=f"referentiel:{cat.version}",
                )
            if s.scalar(select(func.count()).select_from(PassiProvider)) == 0:
                import yaml

                for p in yaml.safe_load(_load_text("passi.yaml"))["providers"]:
                    s.add(PassiProvider(name=p["name"], reference=p.get("reference", ""), active=True))
                audit.append(s, at=self.clock(), actor=SYSTEM, action="passi.initialiser", target="passi")

    # ================================================================ helpers
    def _run(self, fn: Callable[[Session], T]) -> T:
        """One transaction; domain refusals and lost updates become ServiceErrors (nothing committed)."""
        try:
            with self.db.transaction() as s:
                return fn(s)
        except IllegalTransition as exc:
            raise ServiceError(409, exc.code, exc.message) from exc
        except DomainError as exc:
            raise ServiceError(422, exc.code, exc.message) from exc
        except StaleDataError as exc:
            raise _conflict("modification concurrente : rechargez et recommencez") from exc
        except IntegrityError as exc:  # a unique constraint lost a race (two identical creations at once)
            raise _conflict("enregistrement concurrent en double : rechargez", code="conflit") from exc

    def _read(self, fn: Callable[[Session], T]) -> T:
        """Like ``_run`` for read-only calls: no write lock, nothing committed."""
        try:
            with self.db.read() as s:
                return fn(s)
        except DomainError as exc:
            raise ServiceError(422, exc.code, exc.message) from exc

    def _audit(
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

    def _notify(
        self,
        s: Session,
        kind: str,
        subject: str,
        body: str,
        *,
        org_id: int | None = None,
        account_id: int | None = None,
        dedup: str | None = None,
    ) -> bool:
        if dedup is not None and s.scalar(select(Notification.id).where(Notification.dedup_key == dedup)) is not None:
            return False
        s.add(
            Notification(
                created_at=self.clock(),
                kind=kind,
                organisation_id=org_id,
                account_id=account_id,
                subject=subject,
                body=body,
                dedup_key=dedup,
            )
        )
        log.info("notification %s (organisation %s): %s", kind, org_id, subject)
        return True

    @staticmethod
    def _check_version(current: int, expected: int | None, what: str) -> None:
        if expected is not None and expected != current:
            raise _conflict(
                f"{what} a été modifié(e) entre-temps (version {current}, vous aviez la version {expected}) : rechargez",
                current_version=current,
            )

    @staticmethod
    def _require_ans(actor: Principal, *roles: AnsRole) -> None:
        if not actor.has(*roles):
            raise _forbidden(f"action réservée à : {', '.join(r.value for r in roles)}")

    @staticmethod
    def _require_validated(actor: Principal) -> None:
        if not actor.validated:
            raise _forbidden("compte non encore validé")

    def _catalogue(self, s: Session, version: str | None = None) -> Catalogue:
        if version is None:
            row = s.execute(select(ReferentielVersion).order_by(ReferentielVersion.id.desc()).limit(1)).scalar_one()
        else:
            if version in self._catalogues:
                return self._catalogues[version]
            row = s.execute(select(ReferentielVersion).where(ReferentielVersion.version == version)).scalar_one()
        cat = self._catalogues.get(row.version)
        if cat is None:
            cat = Catalogue.parse(row.content)
            self._catalogues[row.version] = cat
        return cat

    def _get(self, s: Session, model: type[T], ident: int, what: str) -> T:
        obj = s.get(model, ident)
        if obj is None:
            raise _not_found(what)
        return obj

    def _cand_for_read(self, s: Session, actor: Principal, cid: int) -> Candidature:
        c = self._get(s, Candidature, cid, "candidature")
        if actor.is_ans:
            return c
        self._check_member(actor, c)
        return c

    def _check_member(self, actor: Principal, c: Candidature) -> None:
        if not actor.validated or actor.organisation_id != c.organisation_id:
            raise _not_found("candidature")  # do not reveal other companies' dossiers
        if actor.org_role in (OrgRole.MANDATAIRE, OrgRole.REPRESENTANT):
            return
        if actor.account_id == c.created_by or actor.account_id in (c.collaborators or []):
            return
        raise _forbidden("vous n'êtes ni l'auteur ni un collaborateur de cette candidature")

    def _cand_for_candidate(self, s: Session, actor: Principal, cid: int) -> Candidature:
        c = self._get(s, Candidature, cid, "candidature")
        self._check_member(actor, c)
        return c

    def _hab_views(self, s: Session) -> list[dependencies.HabView]:
        return [self._hab_view(h) for h in s.execute(select(Habilitation)).scalars()]

    @staticmethod
    def _hab_view(h: Habilitation) -> dependencies.HabView:
        return dependencies.HabView(
            h.id,
            Role(h.role),
            h.solution_id,
            h.organisation_id,
            HabilitationStatus(h.status),
            h.valid_until,
            tuple(h.relies_on or ()),
        )

    # ================================================================ accounts
    def _principal(self, a: Account) -> Principal:
        return Principal(
            a.id,
            a.email,
            a.organisation_id,
            OrgRole(a.org_role) if a.org_role else None,
            frozenset(AnsRole(r) for r in (a.ans_roles or [])),
            a.validated and a.active,
        )

    @staticmethod
    def _account_out(a: Account) -> sc.AccountOut:
        return sc.AccountOut(
            id=a.id,
            email=a.email,
            name=a.name,
            organisation_id=a.organisation_id,
            org_role=OrgRole(a.org_role) if a.org_role else None,
            ans_roles=[AnsRole(r) for r in a.ans_roles or []],
            validated=a.validated,
            active=a.active,
        )

    def _new_org(self, s: Session, data: sc.OrganisationIn) -> Organisation:
        validate_registration(data.country, data.siren, data.siret, data.registration_number)
        siren = validate_siren(data.siren) if data.siren else None
        siret = validate_siret(data.siret) if data.siret else None
        if siren and s.scalar(select(Organisation.id).where(Organisation.siren == siren)) is not None:
            raise _conflict(f"une structure de SIREN {siren} est déjà inscrite", code="structure_existante")
        org = Organisation(
            name=data.name.strip(),
            country=data.country,
            siren=siren,
            siret=siret,
            registration_number=(data.registration_number or None) if data.country != "FR" else None,
            created_at=self.clock(),
        )
        s.add(org)
        s.flush()
        return org

    def _new_account(
        self,
        s: Session,
        email: str,
        name: str,
        password: str | None,
        org_id: int | None,
        org_role: OrgRole | None,
        ans_roles: Iterable[AnsRole],
        validated: bool,
    ) -> Account:
        email = email.strip().lower()
        if s.scalar(select(Account.id).where(Account.email == email)) is not None:
            raise _conflict(f"un compte existe déjà pour {email}", code="compte_existant")
        acc = Account(
            email=email,
            name=name.strip(),
            password_hash=self.hasher.hash(password) if password else None,
            organisation_id=org_id,
            org_role=org_role.value if org_role else None,
            ans_roles=sorted(r.value for r in ans_roles),
            validated=validated,
            active=True,
            created_at=self.clock(),
        )
        s.add(acc)
        s.flush()
        return acc

    def register(self, data: sc.RegisterIn) -> sc.AccountOut:
        """A mandataire registers the company; the account waits for ANS identity validation."""

        def op(s: Session) -> sc.AccountOut:
            org = self._new_org(s, data.organisation)
            acc = self._new_account(
                s, data.email, data.name, data.password, org.id, OrgRole.MANDATAIRE, (), validated=False
            )
            self._audit(
                s,
                None,
                "compte.inscrire",
                f"organisation:{org.id}",
                after={"organisation": sc.OrganisationOut.model_validate(org).model_dump(), "compte": acc.email},
            )
            return self._account_out(acc)

        return self._run(op)

    def create_account(self, actor: Principal, data: sc.AccountIn) -> sc.AccountOut:
        """Mandataire: représentants and salariés; représentant: salariés; administrator: anyone."""

        def op(s: Session) -> sc.AccountOut:
            self._require_validated(actor)
            is_admin = actor.has(AnsRole.ADMIN)
            if data.ans_roles:
                if not is_admin:
                    raise _forbidden("seul un administrateur crée des comptes ANS")
                if data.org_role or data.organisation_id:
                    raise DomainError("compte_incoherent", "un compte ANS n'appartient à aucune structure")
                acc = self._new_account(
                    s, data.email, data.name, data.password, None, None, data.ans_roles, validated=True
                )
            else:
                if data.org_role is None:
                    raise DomainError("role_requis", "indiquez le rôle du compte (mandataire, representant ou salarie)")
                if is_admin and data.organisation_id:
                    org_id = self._get(s, Organisation, data.organisation_id, "structure").id
                    allowed = True
                else:
                    org_id = actor.organisation_id or 0
                    if data.organisation_id not in (None, org_id):
                        raise _forbidden("vous ne pouvez créer des comptes que dans votre structure")
                    allowed = (actor.org_role is OrgRole.MANDATAIRE and data.org_role is not OrgRole.MANDATAIRE) or (
                        actor.org_role is OrgRole.REPRESENTANT and data.org_role is OrgRole.SALARIE
                    )
                if not allowed or not org_id:
                    raise _forbidden(
                        "le mandataire nomme les représentants ; mandataire et représentants créent les comptes salariés"
                    )
                # a salarié needs validation; représentants are appointed directly by the mandataire
                validated = data.org_role is OrgRole.REPRESENTANT or is_admin
                acc = self._new_account(
                    s, data.email, data.name, data.password, org_id, data.org_role, (), validated=validated
                )
            self._audit(s, actor, "compte.creer", f"compte:{acc.id}", after=self._account_out(acc).model_dump())
            return self._account_out(acc)

        return self._run(op)

    def validate_account(self, actor: Principal, account_id: int) -> sc.AccountOut:
        """ANS validates a mandataire's identity; mandataire/représentant validate their salariés."""

        def op(s: Session) -> sc.AccountOut:
            self._require_validated(actor)
            acc = self._get(s, Account, account_id, "compte")
            if acc.org_role == OrgRole.MANDATAIRE.value or acc.organisation_id is None:
                self._require_ans(actor, AnsRole.VERIFIER, AnsRole.ADMIN)
            elif not actor.has(AnsRole.ADMIN) and not (
                actor.organisation_id == acc.organisation_id
                and actor.org_role in (OrgRole.MANDATAIRE, OrgRole.REPRESENTANT)
            ):
                raise _forbidden("seuls le mandataire et les représentants de la structure valident ses comptes")
            if acc.validated:
                raise _conflict("ce compte est déjà validé", code="deja_valide")
            acc.validated = True
            self._audit(
                s, actor, "compte.valider", f"compte:{acc.id}", before={"validated": False}, after={"validated": True}
            )
            return self._account_out(acc)

        return self._run(op)

    def list_accounts(self, actor: Principal) -> list[sc.AccountOut]:
        def op(s: Session) -> list[sc.AccountOut]:
            q = select(Account).order_by(Account.id)
            if not actor.is_ans:
                self._require_validated(actor)
                q = q.where(Account.organisation_id == actor.organisation_id)
            return [self._account_out(a) for a in s.execute(q).scalars()]

        return self._read(op)

    def me(self, actor: Principal) -> sc.AccountOut:
        return self._read(lambda s: self._account_out(self._get(s, Account, actor.account_id, "compte")))

    def get_organisation(self, actor: Principal, org_id: int) -> sc.OrganisationOut:
        def op(s: Session) -> sc.OrganisationOut:
            if not actor.is_ans and actor.organisation_id != org_id:
                raise _not_found("structure")
            return sc.OrganisationOut.model_validate(self._get(s, Organisation, org_id, "structure"))

        return self._read(op)

    def list_organisations(self, actor: Principal) -> list[sc.OrganisationOut]:
        def op(s: Session) -> list[sc.OrganisationOut]:
            q = select(Organisation).order_by(Organisation.id)
            if not actor.is_ans:
                q = q.where(Organisation.id == (actor.organisation_id or 0))
            return [sc.OrganisationOut.model_validate(o) for o in s.execute(q).scalars()]

        return self._read(op)

    def bootstrap_account(
        self,
        email: str,
        name: str,
        password: str | None,
        ans_roles: Iterable[AnsRole] = (),
        org: sc.OrganisationIn | None = None,
        org_role: OrgRole | None = None,
    ) -> sc.AccountOut:
        """CLI/demo: create a validated account without an acting principal (operator on the host)."""

        def op(s: Session) -> sc.AccountOut:
            org_id = None
            if org is not None:
                existing = (
                    s.execute(select(Organisation).where(Organisation.siren == org.siren)).scalar_one_or_none()
                    if org.siren
                    else None
                )
                org_id = existing.id if existing else self._new_org(s, org).id
            acc = self._new_account(s, email, name, password, org_id, org_role, ans_roles, validated=True)
            self._audit(s, None, "compte.creer_admin", f"compte:{acc.id}", after=self._account_out(acc).model_dump())
            return self._account_out(acc)

        return self._run(op)

    # ----- tokens -----
    def login(self, data: sc.LoginIn) -> sc.TokenOut:
        """Exchange email + password for a bearer API token (argon2id password hashes).

        The slow hash check runs outside any transaction (it must not hold SQLite's write
        lock), and repeated failures for one address are throttled (429) for a window. The
        failures are rows of the database (``LoginFailure``), so every guichet process
        sharing it counts the same ones.
        """
        email = data.email.strip().lower()
        now = self.clock()
        window = dt.timedelta(seconds=self.settings.login_window_seconds)
        with self.db.read() as s:
            recent = s.execute(
                select(func.count(), func.min(LoginFailure.at)).where(
                    LoginFailure.email == email, LoginFailure.at > now - window
                )
            ).one()
            acc = s.execute(select(Account).where(Account.email == email)).scalar_one_or_none()
            account_id, pw_hash, active = (acc.id, acc.password_hash, acc.active) if acc else (None, None, False)
        failures, oldest = recent
        if failures >= self.settings.login_max_failures:
            raise ServiceError(
                429,
                "trop_de_tentatives",
                "trop de tentatives de connexion pour ce compte : réessayez plus tard",
                retry_after=max(1, int((oldest + window - now).total_seconds()) + 1),
            )
        ok = False
        if pw_hash and active:
            try:
                ok = self.hasher.verify(pw_hash, data.password)
            except (VerificationError, InvalidHashError):
                ok = False
        else:
            self.hasher.hash(data.password)  # same work whether or not the account exists
        if not ok or account_id is None:
            with self.db.transaction() as s:
                # Rows past the window count for nothing: this address's are dropped here.
                s.execute(delete(LoginFailure).where(LoginFailure.email == email, LoginFailure.at <= now - window))
                s.add(LoginFailure(email=email, at=now))
            raise ServiceError(401, "identifiants_invalides", "adresse ou mot de passe incorrect")

        def op(s: Session) -> sc.TokenOut:
            s.execute(delete(LoginFailure).where(LoginFailure.email == email))
            return self._issue_token(s, self._get(s, Account, account_id, "compte"), data.label)

        return self._run(op)

    def _issue_token(self, s: Session, acc: Account, label: str) -> sc.TokenOut:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = self.clock() + dt.timedelta(days=self.settings.token_ttl_days)
        s.add(
            ApiToken(
                account_id=acc.id,
                token_hash=hashlib.sha256(token.encode()).hexdigest(),
                label=label[:100],
                created_at=self.clock(),
                expires_at=expires,
            )
        )
        self._audit(s, self._principal(acc), "jeton.emettre", f"compte:{acc.id}", after={"label": label})
        return sc.TokenOut(access_token=token, expires_at=expires, account=self._account_out(acc))

    def issue_token_for(self, email: str, label: str = "cli") -> sc.TokenOut:
        """CLI: a token for an existing account (the host operator is trusted)."""

        def op(s: Session) -> sc.TokenOut:
            acc = s.execute(select(Account).where(Account.email == email.strip().lower())).scalar_one_or_none()
            if acc is None:
                raise _not_found("compte")
            return self._issue_token(s, acc, label)

        return self._run(op)

    def authenticate(self, token: str) -> Principal | None:
        """The principal behind a bearer token, or None (unknown, expired, revoked, inactive)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self.db.read() as s:
            row = s.execute(select(ApiToken).where(ApiToken.token_hash == digest)).scalar_one_or_none()
            if (
                row is None
                or row.revoked_at is not None
                or (row.expires_at is not None and row.expires_at <= self.clock())
            ):
                return None
            acc = s.get(Account, row.account_id)
            if acc is None or not acc.active:
                return None
            return self._principal(acc)

    def principal_for(self, account_id: int) -> Principal | None:
        """The principal of an account (web sessions keep the account id, not a token)."""
        with self.db.read() as s:
            acc = s.get(Account, account_id)
            if acc is None or not acc.active:
                return None
            return self._principal(acc)

    def check_password(self, email: str, password: str) -> Principal | None:
        """Password login for the web UI (same argon2id check as ``login``, no token issued)."""
        try:
            tok = self.login(sc.LoginIn(email=email, password=password, label="web"))
        except (ServiceError, ValueError):
            return None
        self.revoke_token(tok.access_token)
        return self.principal_for(tok.account.id)

    def revoke_token(self, token: str) -> None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self.db.transaction() as s:
            row = s.execute(select(ApiToken).where(ApiToken.token_hash == digest)).scalar_one_or_none()
            if row is not None and row.revoked_at is None:
                row.revoked_at = self.clock()

    # ================================================================ solutions
    def _solution_out(self, s: Session, sol: Solution) -> sc.SolutionOut:
        comps = (
            s.execute(select(Component).where(Component.solution_id == sol.id).order_by(Component.id)).scalars().all()
        )
        kinds = {ComponentKind(c.kind) for c in comps}
        return sc.SolutionOut(
            id=sol.id,
            organisation_id=sol.organisation_id,
            name=sol.name,
            kind=SolutionKind(sol.kind),
            components=[
                sc.ComponentOut(
                    id=c.id, kind=ComponentKind(c.kind), name=c.name, needs_cnda=needs_cnda({ComponentKind(c.kind)})
                )
                for c in comps
            ],
            needs_cnda=needs_cnda(kinds),
            version=sol.row_version,
        )

    @staticmethod
    def _check_components(kind: SolutionKind, comps: list[sc.ComponentIn]) -> None:
        kinds = [c.kind for c in comps]
        if kind is SolutionKind.PROXY and ComponentKind.PROXY not in kinds:
            raise DomainError("composant_requis", "une solution proxy comporte un composant Proxy e-Santé (PROXY)")
        if kind is SolutionKind.PROXY and ComponentKind.LPS in kinds:
            raise DomainError(
                "composant_incoherent", "une solution proxy ne comporte que le proxy et ses modules métier (EAI)"
            )
        if kind is SolutionKind.USER and ComponentKind.LPS not in kinds:
            raise DomainError("composant_requis", "un logiciel utilisateur comporte un composant LPS")
        if kind is SolutionKind.USER and (ComponentKind.PROXY in kinds or ComponentKind.EAI in kinds):
            raise DomainError(
                "composant_incoherent", "un logiciel utilisateur ne comporte pas de proxy ni de module EAI"
            )
        names = [c.name for c in comps]
        if len(set(names)) != len(names):
            raise DomainError("composant_double", "deux composants portent le même nom")

    def create_solution(self, actor: Principal, data: sc.SolutionIn) -> sc.SolutionOut:
        def op(s: Session) -> sc.SolutionOut:
            self._require_validated(actor)
            if actor.organisation_id is None:
                raise _forbidden("seul un compte de structure déclare une solution")
            self._check_components(data.kind, data.components)
            sol = Solution(
                organisation_id=actor.organisation_id,
                name=data.name.strip(),
                kind=data.kind.value,
                created_at=self.clock(),
            )
            s.add(sol)
            s.flush()
            for c in data.components:
                s.add(Component(solution_id=sol.id, kind=c.kind.value, name=c.name))
            s.flush()
            out = self._solution_out(s, sol)
            self._audit(s, actor, "solution.creer", f"solution:{sol.id}", after=out.model_dump())
            return out

        return self._run(op)

    def get_solution(self, actor: Principal, sid: int) -> sc.SolutionOut:
        def op(s: Session) -> sc.SolutionOut:
            self._require_validated(actor)
            return self._solution_out(s, self._get(s, Solution, sid, "solution"))

        return self._read(op)

    def list_solutions(
        self, actor: Principal, kind: SolutionKind | None = None, mine: bool = False
    ) -> list[sc.SolutionOut]:
        """Solution names are public within the platform (an ELU names another company's proxy)."""

        def op(s: Session) -> list[sc.SolutionOut]:
            self._require_validated(actor)
            q = select(Solution).order_by(Solution.id)
            if kind is not None:
                q = q.where(Solution.kind == kind.value)
            if mine:
                q = q.where(Solution.organisation_id == (actor.organisation_id or 0))
            return [self._solution_out(s, x) for x in s.execute(q.limit(1000)).scalars()]

        return self._read(op)

    def update_components(self, actor: Principal, sid: int, data: sc.ComponentsUpdateIn) -> sc.SolutionOut:
        """Declaration edit: components changed after deposit flag CNDA and certificate evidence for re-review."""

        def op(s: Session) -> sc.SolutionOut:
            self._require_validated(actor)
            sol = self._get(s, Solution, sid, "solution")
            if sol.organisation_id != actor.organisation_id:
                raise _not_found("solution")
            self._check_version(sol.row_version, data.version, "la solution")
            self._check_components(SolutionKind(sol.kind), data.components)
            before = self._solution_out(s, sol)
            existing = {
                (c.kind, c.name): c for c in s.execute(select(Component).where(Component.solution_id == sid)).scalars()
            }
            wanted = {(c.kind.value, c.name) for c in data.components}
            for key, comp in existing.items():
                if key not in wanted:
                    if s.scalar(select(CertificateRow.id).where(CertificateRow.component_id == comp.id)) is not None:
                        raise DomainError(
                            "composant_certifie", f"le composant {comp.name} a des certificats : il ne peut être retiré"
                        )
                    s.delete(comp)
            for kind, name in wanted - set(existing):
                s.add(Component(solution_id=sid, kind=kind, name=name))
            flag_modified(sol, "name")  # force the UPDATE that bumps row_version (components live elsewhere)
            s.flush()
            after = self._solution_out(s, sol)
            if before.components != after.components:
                for c in s.execute(select(Candidature).where(Candidature.solution_id == sid)).scalars():
                    self._flag_evidence(
                        s,
                        c,
                        {EvidenceKind.CNDA, EvidenceKind.TEST_CERTIFICATE, EvidenceKind.PRODUCTION_CERTIFICATE},
                        "composants de la solution modifiés",
                    )
            self._audit(
                s,
                actor,
                "solution.modifier_composants",
                f"solution:{sid}",
                before=before.model_dump(),
                after=after.model_dump(),
            )
            return after

        return self._run(op)

    # ================================================================ candidatures
    def _cand_out(
        self, s: Session, c: Candidature, cls: type[sc.CandidatureOut] = sc.CandidatureOut, **extra: Any
    ) -> Any:
        hab_id = s.scalar(select(Habilitation.id).where(Habilitation.candidature_id == c.id))
        return cls(
            id=c.id,
            organisation_id=c.organisation_id,
            role=Role(c.role),
            level=Level(c.level),
            path=c.path,
            environment=environment_for(Role(c.role)).value,
            solution_id=c.solution_id,
            proxy_solution_id=c.proxy_solution_id,
            osp_habilitation_id=c.osp_habilitation_id,
            software_name=c.software_name,
            software_version=c.software_version,
            description=c.description,
            nru_numbers=list(c.nru_numbers or []),
            maturity=dict(c.maturity or {}),
            commitments=dict(c.commitments or {}),
            status=c.status,
            status_label=wf.STATUS_LABELS[wf.CandidatureStatus(c.status)],
            status_reason=c.status_reason,
            referentiel_version=c.referentiel_version,
            collaborators=list(c.collaborators or []),
            created_by=c.created_by,
            created_at=c.created_at,
            updated_at=c.updated_at,
            version=c.row_version,
            habilitation_id=hab_id,
            **extra,
        )

    def _snapshot(self, c: Candidature) -> dict[str, Any]:
        return {
            "status": c.status,
            "software_name": c.software_name,
            "software_version": c.software_version,
            "description": c.description,
            "nru_numbers": c.nru_numbers,
            "maturity": c.maturity,
            "version": c.row_version,
        }

    def _solution_needs_cnda(self, s: Session, solution_id: int) -> bool:
        kinds = {
            ComponentKind(k)
            for k in s.execute(select(Component.kind).where(Component.solution_id == solution_id)).scalars()
        }
        return needs_cnda(kinds)

    def create_candidature(self, actor: Principal, data: sc.CandidatureIn) -> sc.CandidatureOut:
        """Stage 1 opens. Operator candidatures need the editor habilitations they rely on to exist."""

        def op(s: Session) -> sc.CandidatureOut:
            self._require_validated(actor)
            if actor.organisation_id is None:
                raise _forbidden("seul un compte de structure dépose une candidature")
            role = data.role
            sol = self._get(s, Solution, data.solution_id, "solution")
            if SolutionKind(sol.kind) is not solution_kind_for(role):
                raise DomainError(
                    "solution_incoherente",
                    f"une candidature {role.value} porte sur une solution de type {solution_kind_for(role).value}",
                )
            if role.is_editor and sol.organisation_id != actor.organisation_id:
                raise _forbidden("un éditeur candidate pour une solution de sa structure")
            if role is not Role.ELU and data.proxy_solution_id is not None:
                raise DomainError("champ_inattendu", "seule une candidature ELU nomme un proxy")
            if role is not Role.OSU and data.osp_habilitation_id is not None:
                raise DomainError("champ_inattendu", "seule une candidature OSU nomme une habilitation OSP")
            if data.proxy_solution_id is not None:
                proxy = self._get(s, Solution, data.proxy_solution_id, "solution proxy")
                if SolutionKind(proxy.kind) is not SolutionKind.PROXY:
                    raise DomainError("proxy_invalide", "la solution nommée comme proxy n'est pas un Proxy e-Santé")
            needs = dependencies.needs_for(
                role, sol.id, data.proxy_solution_id, data.osp_habilitation_id, self.parcours.dependencies
            )
            if role.is_operator:
                found, problems = dependencies.resolve(needs, self._hab_views(s), self.clock())
                if problems:
                    raise ServiceError(
                        409,
                        "dependances_absentes",
                        "le guichet opérateur n'ouvre qu'une fois les habilitations éditeur existantes : "
                        + " ; ".join(problems),
                        problems=problems,
                    )
                if role is Role.OSU:
                    self._check_osu_proxy(s, found)
            active = sorted(st.value for st in wf.IN_PROGRESS)
            dup = s.scalar(
                select(Candidature.id).where(
                    Candidature.organisation_id == actor.organisation_id,
                    Candidature.role == role.value,
                    Candidature.solution_id == sol.id,
                    Candidature.proxy_solution_id == data.proxy_solution_id
                    if data.proxy_solution_id
                    else Candidature.proxy_solution_id.is_(None),
                    Candidature.status.in_(active),
                )
            )
            if dup is not None:
                raise _conflict(
                    f"une candidature {role.value} est déjà en cours pour cette solution (n° {dup}) : un dossier par proxy",
                    code="candidature_existante",
                )
            if data.renews_habilitation_id is not None:
                old = self._get(s, Habilitation, data.renews_habilitation_id, "habilitation à renouveler")
                if old.organisation_id != actor.organisation_id or old.role != role.value or old.solution_id != sol.id:
                    raise DomainError(
                        "renouvellement_incoherent",
                        "l'habilitation à renouveler doit être la vôtre, pour le même profil et la même solution",
                    )
            cat = self._catalogue(s)
            now = self.clock()
            c = Candidature(
                organisation_id=actor.organisation_id,
                created_by=actor.account_id,
                role=role.value,
                level=data.level.value,
                path=data.path,
                solution_id=sol.id,
                proxy_solution_id=data.proxy_solution_id,
                osp_habilitation_id=data.osp_habilitation_id,
                software_name=data.software_name.strip(),
                software_version=data.software_version.strip(),
                description=data.description,
                nru_numbers=list(data.nru_numbers),
                maturity=dict(data.maturity),
                commitments={},
                status=wf.CandidatureStatus.DRAFT.value,
                referentiel_version=cat.version,
                parcours_done=["guichet_registration"] if data.path == "trust_space" else [],
                collaborators=[],
                renews_habilitation_id=data.renews_habilitation_id,
                created_at=now,
                updated_at=now,
            )
            s.add(c)
            s.flush()
            self._sync_chapters(s, c, cat)
            self._audit(
                s,
                actor,
                "candidature.creer",
                f"candidature:{c.id}",
                after={**self._snapshot(c), "role": role.value, "solution_id": sol.id},
            )
            out: sc.CandidatureOut = self._cand_out(s, c)
            return out

        return self._run(op)

    def _check_osu_proxy(self, s: Session, found: list[int]) -> None:
        """The proxy operator an OSU names must operate the proxy its user software was habilitated with."""
        habs = [self._get(s, Habilitation, i, "habilitation") for i in found]
        elu = next(h for h in habs if h.role == Role.ELU.value)
        osp = next(h for h in habs if h.role == Role.OSP.value)
        elu_cand = self._get(s, Candidature, elu.candidature_id, "candidature")
        if elu_cand.proxy_solution_id != osp.solution_id:
            proxies = {x.id: x.name for x in s.execute(select(Solution)).scalars()}
            raise DomainError(
                "osp_incoherent",
                f"l'opérateur de proxy nommé opère « {proxies.get(osp.solution_id, '?')} », "
                f"alors que le logiciel est habilité avec le proxy « {proxies.get(elu_cand.proxy_solution_id or 0, '?')} »",
            )

    def _sync_chapters(self, s: Session, c: Candidature, cat: Catalogue) -> None:
        """Create/refresh the evidence chapters of a candidature from a catalogue version."""
        wanted = cat.chapters_for(Role(c.role), Level(c.level), self._solution_needs_cnda(s, c.solution_id))
        existing = {
            ch.chapter_id: ch for ch in s.execute(select(ChapterRow).where(ChapterRow.candidature_id == c.id)).scalars()
        }
        for chap, reqs in wanted:
            ids = [r.id for r in reqs]
            row = existing.pop(chap.id, None)
            if row is None:
                s.add(
                    ChapterRow(
                        candidature_id=c.id,
                        chapter_id=chap.id,
                        title=chap.title,
                        requirement_ids=ids,
                        status=wf.ChapterStatus.OPEN.value,
                    )
                )
            elif row.requirement_ids != ids or row.title != chap.title:
                changed = row.requirement_ids != ids
                row.requirement_ids = ids
                row.title = chap.title
                if changed and row.status in (wf.ChapterStatus.SUBMITTED.value, wf.ChapterStatus.ACCEPTED.value):
                    row.status = wf.fire(
                        wf.CHAPTER_TRANSITIONS,
                        "signaler_modification",
                        wf.ChapterStatus(row.status),
                        wf.Actor.SYSTEM,
                        "référentiel modifié",
                    ).value
                    row.reason = f"exigences modifiées par le référentiel {cat.version}"
        for row in existing.values():
            s.delete(row)
        s.flush()

    def list_candidatures(
        self, actor: Principal, status: wf.CandidatureStatus | None = None
    ) -> list[sc.CandidatureOut]:
        def op(s: Session) -> list[sc.CandidatureOut]:
            q = select(Candidature).order_by(Candidature.id)
            if not actor.is_ans:
                self._require_validated(actor)
                q = q.where(Candidature.organisation_id == (actor.organisation_id or 0))
            if status is not None:
                q = q.where(Candidature.status == status.value)
            rows = list(s.execute(q.limit(1000)).scalars())
            if not actor.is_ans and actor.org_role is OrgRole.SALARIE:
                rows = [
                    c for c in rows if c.created_by == actor.account_id or actor.account_id in (c.collaborators or [])
                ]
            return [self._cand_out(s, c) for c in rows]

        return self._read(op)

    def get_candidature(self, actor: Principal, cid: int) -> sc.CandidatureDetail:
        def op(s: Session) -> sc.CandidatureDetail:
            c = self._cand_for_read(s, actor, cid)
            return self._detail(s, c)

        return self._read(op)

    def _detail(self, s: Session, c: Candidature) -> sc.CandidatureDetail:
        cat = self._catalogue(s, c.referentiel_version)
        evid = list(s.execute(select(Evidence).where(Evidence.candidature_id == c.id).order_by(Evidence.id)).scalars())
        chapters = []
        for ch in s.execute(
            select(ChapterRow).where(ChapterRow.candidature_id == c.id).order_by(ChapterRow.id)
        ).scalars():
            chapters.append(self._chapter_out(s, c, ch, cat, evid))
        certs = [
            self._cert_out(x)
            for x in s.execute(
                select(CertificateRow).where(CertificateRow.candidature_id == c.id).order_by(CertificateRow.id)
            ).scalars()
        ]
        detail: sc.CandidatureDetail = self._cand_out(
            s,
            c,
            sc.CandidatureDetail,
            chapters=chapters,
            evidence=[self._evidence_out(e) for e in evid],
            parcours=self._checklist(c),
            certificates=certs,
        )
        return detail

    @staticmethod
    def _missing(cat: Catalogue, ch: ChapterRow, evid: list[Evidence]) -> list[str]:
        """Human-readable list of what a chapter still lacks (empty = complete)."""
        missing = []
        for rid in ch.requirement_ids:
            req = cat.by_id.get(rid)
            if req is None:
                continue
            for kind in req.evidence:
                if not any(e.requirement_id == rid and e.kind == kind.value and e.status == "valide" for e in evid):
                    missing.append(f"{rid} : {kind.value}")
        return missing

    def update_form(self, actor: Principal, cid: int, data: sc.FormUpdateIn) -> sc.CandidatureOut:
        """Edit the declaration. After deposit, affected evidence is flagged for re-review."""

        def op(s: Session) -> sc.CandidatureOut:
            c = self._cand_for_candidate(s, actor, cid)
            self._check_version(c.row_version, data.version, "la candidature")
            st = wf.CandidatureStatus(c.status)
            if not wf.can_edit_form(st):
                raise IllegalTransition(
                    "formulaire_verrouille", f"le formulaire n'est pas modifiable à l'état « {st.value} »"
                )
            before = self._snapshot(c)
            changes = data.model_dump(exclude_unset=True, exclude={"version"})
            for key, value in changes.items():
                if value is not None:
                    setattr(c, key, value.strip() if isinstance(value, str) and key != "description" else value)
            changed = {k for k in changes if before.get(k) != getattr(c, k)}
            if not changed:
                out0: sc.CandidatureOut = self._cand_out(s, c)
                return out0
            c.updated_at = self.clock()
            if st in (wf.CandidatureStatus.EVIDENCE, wf.CandidatureStatus.COLLEGE) and changed & {
                "software_name",
                "software_version",
            }:
                self._flag_evidence(
                    s,
                    c,
                    {EvidenceKind.PENTEST, EvidenceKind.CONFORMITY},
                    "nom ou version du logiciel modifiés après le dépôt",
                )
            s.flush()
            self._audit(
                s,
                actor,
                "candidature.modifier_formulaire",
                f"candidature:{c.id}",
                before=before,
                after=self._snapshot(c),
            )
            out: sc.CandidatureOut = self._cand_out(s, c)
            return out

        return self._run(op)

    def _flag_evidence(self, s: Session, c: Candidature, kinds: set[EvidenceKind], why: str) -> None:
        """Declaration changed after deposit: flag evidence of these kinds and re-open their chapters."""
        if c.status not in (wf.CandidatureStatus.EVIDENCE.value, wf.CandidatureStatus.COLLEGE.value):
            return
        hit = list(
            s.execute(
                select(Evidence).where(
                    Evidence.candidature_id == c.id,
                    Evidence.status == "valide",
                    Evidence.kind.in_([k.value for k in kinds]),
                )
            ).scalars()
        )
        if not hit:
            return
        reqs = {e.requirement_id for e in hit}
        for e in hit:
            e.status = "a_revoir"
            e.review_reason = why
        for ch in s.execute(select(ChapterRow).where(ChapterRow.candidature_id == c.id)).scalars():
            if reqs & set(ch.requirement_ids) and ch.status in (
                wf.ChapterStatus.SUBMITTED.value,
                wf.ChapterStatus.ACCEPTED.value,
            ):
                ch.status = wf.fire(
                    wf.CHAPTER_TRANSITIONS, "signaler_modification", wf.ChapterStatus(ch.status), wf.Actor.SYSTEM, why
                ).value
                ch.reason = why
        if c.status == wf.CandidatureStatus.COLLEGE.value:
            self._transition(s, None, c, "rouvrir_preuves", wf.Actor.SYSTEM, why)
        self._audit(
            s, None, "preuves.signaler", f"candidature:{c.id}", after={"evidence": [e.id for e in hit], "motif": why}
        )

    def _transition(
        self, s: Session, actor: Principal | None, c: Candidature, name: str, as_: wf.Actor, reason: str | None = None
    ) -> None:
        before = c.status
        c.status = wf.fire(wf.CANDIDATURE_TRANSITIONS, name, wf.CandidatureStatus(c.status), as_, reason).value
        c.status_reason = reason
        c.updated_at = self.clock()
        s.flush()
        self._audit(
            s,
            actor,
            f"candidature.{name}",
            f"candidature:{c.id}",
            before={"status": before},
            after={"status": c.status, "motif": reason},
        )

    def submit_form(self, actor: Principal, cid: int, data: sc.CommitmentsIn) -> sc.CandidatureOut:
        def op(s: Session) -> sc.CandidatureOut:
            c = self._cand_for_candidate(s, actor, cid)
            self._check_version(c.row_version, data.version, "la candidature")
            if not (data.respect_referentiels_cgu and data.exactitude_informations and data.acceptation_audits):
                raise DomainError(
                    "engagements_requis",
                    "les trois engagements sont obligatoires : respect des référentiels PSC et des CGU, exactitude des informations, preuves et contrôles, respect du processus d'audit",
                )
            self._transition(s, actor, c, "soumettre_formulaire", wf.Actor.CANDIDATE)
            c.commitments = {
                "respect_referentiels_cgu": True,
                "exactitude_informations": True,
                "acceptation_audits": True,
                "accepted_by": actor.account_id,
                "accepted_at": self.clock().isoformat(),
            }
            self._audit(s, actor, "candidature.accepter_engagements", f"candidature:{c.id}", after=c.commitments)
            out: sc.CandidatureOut = self._cand_out(s, c)
            return out

        return self._run(op)

    def validate_form(self, actor: Principal, cid: int, data: sc.ActionIn) -> sc.CandidatureOut:
        return self._verifier_action(actor, cid, data.version, "valider_formulaire", data.reason)

    def return_form(self, actor: Principal, cid: int, data: sc.ReasonIn) -> sc.CandidatureOut:
        return self._verifier_action(actor, cid, data.version, "renvoyer_formulaire", data.reason)

    def _verifier_action(
        self, actor: Principal, cid: int, version: int | None, name: str, reason: str | None
    ) -> sc.CandidatureOut:
        def op(s: Session) -> sc.CandidatureOut:
            self._require_ans(actor, AnsRole.VERIFIER)
            c = self._get(s, Candidature, cid, "candidature")
            self._check_version(c.row_version, version, "la candidature")
            self._transition(s, actor, c, name, wf.Actor.VERIFIER, reason)
            if name == "renvoyer_formulaire":
                self._notify(
                    s,
                    "complement_demande",
                    f"Candidature n° {c.id} : formulaire à compléter",
                    reason or "",
                    org_id=c.organisation_id,
                )
            out: sc.CandidatureOut = self._cand_out(s, c)
            return out

        return self._run(op)

    def abandon(self, actor: Principal, cid: int, data: sc.ActionIn) -> sc.CandidatureOut:
        def op(s: Session) -> sc.CandidatureOut:
            c = self._cand_for_candidate(s, actor, cid)
            self._check_version(c.row_version, data.version, "la candidature")
            self._transition(s, actor, c, "abandonner", wf.Actor.CANDIDATE, data.reason)
            out: sc.CandidatureOut = self._cand_out(s, c)
            return out

        return self._run(op)

    def add_collaborator(self, actor: Principal, cid: int, data: sc.CollaboratorIn) -> sc.CandidatureOut:
        def op(s: Session) -> sc.CandidatureOut:
            c = self._cand_for_candidate(s, actor, cid)
            acc = self._get(s, Account, data.account_id, "compte")
            if acc.organisation_id != c.organisation_id or not acc.validated:
                raise DomainError(
                    "collaborateur_invalide", "un collaborateur est un compte validé de la même structure"
                )
            if acc.id in (c.collaborators or []):
                raise _conflict("ce compte collabore déjà à la candidature", code="deja_collaborateur")
            c.collaborators = [*(c.collaborators or []), acc.id]
            c.updated_at = self.clock()
            s.flush()
            self._audit(
                s, actor, "candidature.ajouter_collaborateur", f"candidature:{c.id}", after={"account_id": acc.id}
            )
            out: sc.CandidatureOut = self._cand_out(s, c)
            return out

        return self._run(op)

    # ================================================================ files & evidence
    def upload_file(self, actor: Principal, data: bytes, content_type: str) -> sc.FileOut:
        def op(s: Session) -> sc.FileOut:
            self._require_validated(actor)
            ctype = check_content(data, content_type, self.settings.max_upload_bytes)
            digest = self.files.put(data)
            row = s.get(StoredFile, digest)
            if row is None:
                row = StoredFile(
                    sha256=digest,
                    size=len(data),
                    content_type=ctype,
                    organisation_id=actor.organisation_id,
                    uploaded_by=actor.account_id,
                    uploaded_at=self.clock(),
                )
                s.add(row)
                s.flush()
                self._audit(
                    s, actor, "fichier.deposer", f"fichier:{digest}", after={"size": len(data), "content_type": ctype}
                )
            if actor.organisation_id is not None and not self._file_granted(s, digest, actor.organisation_id):
                s.add(FileGrant(sha256=digest, organisation_id=actor.organisation_id, granted_at=self.clock()))
            return sc.FileOut(sha256=digest, size=row.size, content_type=row.content_type)

        return self._run(op)

    @staticmethod
    def _file_granted(s: Session, sha256: str, org_id: int | None) -> bool:
        if org_id is None:
            return False
        q = select(FileGrant.id).where(FileGrant.sha256 == sha256, FileGrant.organisation_id == org_id)
        return s.scalar(q) is not None

    def read_file(self, actor: Principal, sha256: str) -> tuple[bytes, str]:
        def op(s: Session) -> tuple[bytes, str]:
            self._require_validated(actor)
            row = s.get(StoredFile, sha256)
            if row is None or (not actor.is_ans and not self._file_granted(s, sha256, actor.organisation_id)):
                raise _not_found("fichier")
            return self.files.get(sha256), row.content_type

        return self._read(op)

    @staticmethod
    def _evidence_out(e: Evidence) -> sc.EvidenceOut:
        return sc.EvidenceOut(
            id=e.id,
            requirement_id=e.requirement_id,
            kind=EvidenceKind(e.kind),
            file_sha256=e.file_sha256,
            status=e.status,
            review_reason=e.review_reason,
            checks=e.checks or {},
            deposited_at=e.deposited_at,
        )

    def deposit_evidence(self, actor: Principal, cid: int, data: sc.EvidenceIn) -> sc.EvidenceOut:
        """Deposit one piece of evidence; executable checks run now and refuse ineligible evidence."""

        def op(s: Session) -> sc.EvidenceOut:
            c = self._cand_for_candidate(s, actor, cid)
            if c.status != wf.CandidatureStatus.EVIDENCE.value:
                raise IllegalTransition(
                    "depot_ferme",
                    f"le dépôt de preuves n'est pas ouvert (état « {c.status} ») : il s'ouvre quand un vérificateur a validé le formulaire administratif",
                )
            cat = self._catalogue(s, c.referentiel_version)
            req = cat.by_id.get(data.requirement_id)
            chapter = next(
                (
                    ch
                    for ch in s.execute(select(ChapterRow).where(ChapterRow.candidature_id == c.id)).scalars()
                    if data.requirement_id in ch.requirement_ids
                ),
                None,
            )
            if req is None or chapter is None:
                raise DomainError(
                    "exigence_inconnue", f"l'exigence {data.requirement_id} ne s'applique pas à cette candidature"
                )
            if data.kind not in req.evidence:
                raise DomainError(
                    "preuve_inattendue", f"l'exigence {req.id} attend : {', '.join(k.value for k in req.evidence)}"
                )
            if data.kind in (EvidenceKind.TEST_CERTIFICATE, EvidenceKind.PRODUCTION_CERTIFICATE):
                raise DomainError(
                    "preuve_plateforme",
                    "les certificats sont commandés via le guichet (POST …/certificats), pas déposés",
                )
            if wf.ChapterStatus(chapter.status) not in wf.EDITABLE_CHAPTER:
                raise IllegalTransition(
                    "chapitre_verrouille",
                    f"le chapitre « {chapter.title} » est à l'état « {chapter.status} » : dépôt impossible",
                )
            if data.file_sha256 is not None:
                f = s.get(StoredFile, data.file_sha256)
                if f is None or not self._file_granted(s, f.sha256, c.organisation_id):
                    raise DomainError("fichier_inconnu", "fichier inconnu : déposez-le d'abord (POST /files)")
            checks, payload = self._check_evidence(s, c, req, data)
            # a new deposit supersedes the previous ones for the same requirement and kind
            for old in s.execute(
                select(Evidence).where(
                    Evidence.candidature_id == c.id,
                    Evidence.requirement_id == req.id,
                    Evidence.kind == data.kind.value,
                    Evidence.status != "remplacee",
                )
            ).scalars():
                old.status = "remplacee"
            e = Evidence(
                candidature_id=c.id,
                requirement_id=req.id,
                kind=data.kind.value,
                file_sha256=data.file_sha256,
                data=payload,
                checks=checks,
                status="valide",
                deposited_by=actor.account_id,
                deposited_at=self.clock(),
            )
            s.add(e)
            s.flush()
            self._audit(
                s,
                actor,
                "preuve.deposer",
                f"candidature:{c.id}",
                after={
                    "evidence": e.id,
                    "requirement": req.id,
                    "kind": e.kind,
                    "file": e.file_sha256,
                    "checks": checks,
                },
            )
            return self._evidence_out(e)

        return self._run(op)

    def _check_evidence(
        self, s: Session, c: Candidature, req: Requirement, data: sc.EvidenceIn
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        today = self.clock().date()
        if data.kind is EvidenceKind.PENTEST:
            if data.pentest is None:
                raise DomainError(
                    "donnees_requises", "un test d'intrusion se dépose avec ses données structurées (champ « pentest »)"
                )
            self._require_file(s, data.file_sha256, "application/pdf", "le rapport de test d'intrusion signé (PDF)")
            p = data.pentest
            report = p.to_report()
            passi = set(s.execute(select(PassiProvider.name).where(PassiProvider.active.is_(True))).scalars())
            verdict = pentest.check_report(
                report,
                role=Role(c.role),
                software_name=c.software_name,
                software_version=c.software_version,
                passi_providers=passi,
                rules=self.parcours.pentest,
                today=today,
            )
            if not verdict.accepted:
                raise ServiceError(
                    422,
                    "test_intrusion_refuse",
                    "test d'intrusion refusé : " + " ; ".join(verdict.problems),
                    problems=list(verdict.problems),
                    ko=verdict.ko_counts,
                )
            return {"eligible": True, "ko": verdict.ko_counts, "checked_on": today.isoformat()}, p.model_dump(
                mode="json"
            )
        if data.kind is EvidenceKind.CONFORMITY:
            if data.conformity_report is None:
                raise DomainError(
                    "donnees_requises",
                    "déposez le rapport signé de l'outil de conformité (champ « conformity_report »)",
                )
            if self.conformity_verifier is None:
                raise ServiceError(
                    503,
                    "verification_indisponible",
                    "aucune clé de l'outil de conformité n'est configurée sur ce guichet",
                )
            payload = self.conformity_verifier.verify(data.conformity_report)
            report_data = conformity.parse_payload(payload)
            cv = conformity.check_report(
                report_data,
                proxy_version=c.software_version,
                today=today,
                max_age_days=self.settings.conformity_max_age_days,
            )
            if not cv.accepted:
                raise ServiceError(
                    422,
                    "rapport_conformite_refuse",
                    "rapport de conformité refusé : " + " ; ".join(cv.problems),
                    problems=list(cv.problems),
                )
            return {"signature": "valide", "all_passed": True, "checked_on": today.isoformat()}, {
                "report": cv.report,
                "jws": data.conformity_report,
            }
        if data.kind is EvidenceKind.CNDA:
            if data.cnda is None:
                raise DomainError(
                    "donnees_requises", "indiquez le numéro et la date de l'attestation CNDA (champ « cnda »)"
                )
            self._require_file(s, data.file_sha256, "application/pdf", "l'attestation CNDA (PDF)")
            if data.cnda.issued_on > today:
                raise DomainError("cnda_future", "l'attestation CNDA est datée dans le futur")
            return {"cnda": "attestation fournie"}, data.cnda.model_dump(mode="json")
        if data.file_sha256 is None and not data.description.strip():
            raise DomainError("preuve_vide", "une preuve libre comporte un fichier ou une description")
        return {}, {"description": data.description}

    def _require_file(self, s: Session, sha: str | None, ctype: str, what: str) -> None:
        if sha is None:
            raise DomainError("fichier_requis", f"joignez {what}")
        f = s.get(StoredFile, sha)
        if f is None or f.content_type != ctype:
            raise DomainError(
                "fichier_requis", f"joignez {what} : fichier absent ou de type {f.content_type if f else '?'}"
            )

    def submit_chapter(self, actor: Principal, cid: int, chapter_id: str, data: sc.ActionIn) -> sc.ChapterOut:
        """A chapter goes to review only once complete (every requirement has its evidence)."""

        def op(s: Session) -> sc.ChapterOut:
            c = self._cand_for_candidate(s, actor, cid)
            if c.status != wf.CandidatureStatus.EVIDENCE.value:
                raise IllegalTransition("depot_ferme", f"le dépôt de preuves n'est pas ouvert (état « {c.status} »)")
            ch = self._chapter(s, c.id, chapter_id)
            self._check_version(ch.row_version, data.version, "le chapitre")
            evid = list(s.execute(select(Evidence).where(Evidence.candidature_id == c.id)).scalars())
            missing = self._missing(self._catalogue(s, c.referentiel_version), ch, evid)
            if missing:
                raise DomainError(
                    "chapitre_incomplet", f"chapitre « {ch.title} » incomplet ; manque : {', '.join(missing)}"
                )
            self._chapter_transition(s, actor, c, ch, "soumettre_chapitre", wf.Actor.CANDIDATE, None)
            return self._chapter_out(s, c, ch)

        return self._run(op)

    def review_chapter(self, actor: Principal, cid: int, chapter_id: str, data: sc.ChapterReviewIn) -> sc.ChapterOut:
        """Verifier: accept, reject (reasons) or request a complement (reasons) on a submitted chapter."""

        def op(s: Session) -> sc.ChapterOut:
            self._require_ans(actor, AnsRole.VERIFIER)
            c = self._get(s, Candidature, cid, "candidature")
            if c.status != wf.CandidatureStatus.EVIDENCE.value:
                raise IllegalTransition(
                    "instruction_fermee", f"la candidature n'est pas en dépôt de preuves (état « {c.status} »)"
                )
            ch = self._chapter(s, c.id, chapter_id)
            self._check_version(ch.row_version, data.version, "le chapitre")
            name = {
                "accepter": "accepter_chapitre",
                "rejeter": "rejeter_chapitre",
                "complement": "demander_complement",
            }[data.decision]
            self._chapter_transition(s, actor, c, ch, name, wf.Actor.VERIFIER, data.reason)
            if data.decision != "accepter":
                self._notify(
                    s,
                    "complement_demande" if data.decision == "complement" else "chapitre_rejete",
                    f"Candidature n° {c.id}, chapitre « {ch.title} » : {'complément demandé' if data.decision == 'complement' else 'rejeté'}",
                    data.reason or "",
                    org_id=c.organisation_id,
                )
            else:
                chapters = list(s.execute(select(ChapterRow).where(ChapterRow.candidature_id == c.id)).scalars())
                if all(x.status == wf.ChapterStatus.ACCEPTED.value for x in chapters):
                    self._transition(s, None, c, "transmettre_college", wf.Actor.SYSTEM)
                    self._mark_step(s, c, "evidence_deposit")
            return self._chapter_out(s, c, ch)

        return self._run(op)

    def _chapter(self, s: Session, cid: int, chapter_id: str) -> ChapterRow:
        ch = s.execute(
            select(ChapterRow).where(ChapterRow.candidature_id == cid, ChapterRow.chapter_id == chapter_id)
        ).scalar_one_or_none()
        if ch is None:
            raise _not_found("chapitre")
        return ch

    def _chapter_transition(
        self, s: Session, actor: Principal, c: Candidature, ch: ChapterRow, name: str, as_: wf.Actor, reason: str | None
    ) -> None:
        before = ch.status
        ch.status = wf.fire(wf.CHAPTER_TRANSITIONS, name, wf.ChapterStatus(ch.status), as_, reason).value
        ch.reason = reason
        if ch.status == wf.ChapterStatus.SUBMITTED.value:
            ch.submitted_at = self.clock()
        elif as_ is wf.Actor.VERIFIER:
            ch.decided_at = self.clock()
        s.flush()
        self._audit(
            s,
            actor,
            f"chapitre.{name}",
            f"candidature:{c.id}/chapitre:{ch.chapter_id}",
            before={"status": before},
            after={"status": ch.status, "motif": reason},
        )

    def _chapter_out(
        self,
        s: Session,
        c: Candidature,
        ch: ChapterRow,
        cat: Catalogue | None = None,
        evid: list[Evidence] | None = None,
    ) -> sc.ChapterOut:
        """``cat`` and ``evid`` spare the queries to a caller that already holds them (the dossier view)."""
        if cat is None:
            cat = self._catalogue(s, c.referentiel_version)
        if evid is None:
            evid = list(s.execute(select(Evidence).where(Evidence.candidature_id == c.id)).scalars())
        missing = self._missing(cat, ch, evid)
        return sc.ChapterOut(
            chapter_id=ch.chapter_id,
            title=ch.title,
            requirement_ids=list(ch.requirement_ids),
            status=ch.status,
            reason=ch.reason,
            submitted_at=ch.submitted_at,
            decided_at=ch.decided_at,
            complete=not missing,
            missing=missing,
            version=ch.row_version,
        )

    # ================================================================ parcours & certificates
    def _checklist(self, c: Candidature) -> list[sc.StepOut]:
        items = pc.checklist(self.parcours, c.path, Role(c.role), set(c.parcours_done or []))
        return [
            sc.StepOut(id=i.id, label=i.label, status=i.status.value, by_platform=i.by_platform, reachable=i.reachable)
            for i in items
        ]

    def _mark_step(self, s: Session, c: Candidature, step_id: str) -> None:
        if step_id in (c.parcours_done or []):
            return
        if not any(st.id == step_id for st in self.parcours.steps_for(c.path, Role(c.role))):
            return
        c.parcours_done = [*(c.parcours_done or []), step_id]
        s.flush()
        self._audit(s, None, "parcours.etape_faite", f"candidature:{c.id}", after={"step": step_id})

    def parcours_checklist(self, actor: Principal, cid: int) -> list[sc.StepOut]:
        return self._read(lambda s: self._checklist(self._cand_for_read(s, actor, cid)))

    def declare_step(self, actor: Principal, cid: int, step_id: str) -> list[sc.StepOut]:
        """The candidate declares a step done; steps the platform completes itself are refused."""

        def op(s: Session) -> list[sc.StepOut]:
            c = self._cand_for_candidate(s, actor, cid)
            if step_id in pc.PLATFORM_STEPS:
                raise DomainError("etape_plateforme", "cette étape est réalisée par la plateforme elle-même")
            if step_id in (c.parcours_done or []):
                raise _conflict("étape déjà déclarée faite", code="etape_faite")
            pc.require_reachable(self.parcours, c.path, Role(c.role), set(c.parcours_done or []), step_id)
            c.parcours_done = [*(c.parcours_done or []), step_id]
            c.updated_at = self.clock()
            s.flush()
            self._audit(s, actor, "parcours.declarer_etape", f"candidature:{c.id}", after={"step": step_id})
            return self._checklist(c)

        return self._run(op)

    @staticmethod
    def _cert_out(x: CertificateRow) -> sc.CertificateOut:
        return sc.CertificateOut(
            id=x.id,
            component_id=x.component_id,
            environment=x.environment,
            subject_dn=x.subject_dn,
            x5t_s256=x.x5t_s256,
            serial=x.serial,
            not_after=x.not_after,
            issued_at=x.issued_at,
            revoked=x.revoked_at is not None,
            cert_pem=x.cert_pem,
        )

    def order_certificate(self, actor: Principal, cid: int, component_id: int) -> sc.IssuedCertificateOut:
        """Test certificate (editors, BAS) or production certificate (operators), once the parcours step is reached."""

        def op(s: Session) -> sc.IssuedCertificateOut:
            c = self._cand_for_candidate(s, actor, cid)
            role = Role(c.role)
            step = "test_certificate" if role.is_editor else "production_certificate"
            if c.status in (
                wf.CandidatureStatus.DRAFT.value,
                wf.CandidatureStatus.FORM_SUBMITTED.value,
                wf.CandidatureStatus.REFUSED.value,
                wf.CandidatureStatus.ABANDONED.value,
            ):
                raise IllegalTransition(
                    "commande_impossible", "les certificats se commandent une fois le formulaire administratif validé"
                )
            pc.require_reachable(self.parcours, c.path, role, set(c.parcours_done or []), step)
            if self.pki is None:
                raise ServiceError(503, "pki_indisponible", "aucune IGC n'est configurée sur ce guichet")
            comp = self._get(s, Component, component_id, "composant")
            if comp.solution_id != c.solution_id:
                raise DomainError("composant_etranger", "ce composant n'appartient pas à la solution de la candidature")
            org = self._get(s, Organisation, c.organisation_id, "structure")
            struct_id = "3" + (
                org.siret or org.siren or re.sub(r"[^0-9A-Za-z]", "", org.registration_number or "")[:19]
            ).ljust(8, "0")
            env = environment_for(role)
            n = secrets.token_hex(4)  # unique name in a PKI possibly shared with other guichets
            try:
                issued = self.pki.issue_client(
                    struct_id,
                    comp.name.replace(" ", "-"),
                    organization=org.name[:64],
                    name=f"guichet-{c.id}-{comp.id}-{env.value.lower()}-{n}",
                )
            except PkiError as exc:
                raise DomainError("certificat_refuse", f"l'IGC refuse la demande : {exc}") from exc
            cert_pem = open(issued.cert_path).read()  # noqa: SIM115
            key_pem = open(issued.key_path).read()  # noqa: SIM115
            row = CertificateRow(
                candidature_id=c.id,
                component_id=comp.id,
                environment=env.value,
                pki_name=issued.name,
                serial=str(issued.serial),
                subject_dn=issued.subject_dn,
                x5t_s256=issued.x5t_s256,
                not_after=issued.not_after,
                cert_pem=cert_pem,
                issued_at=self.clock(),
            )
            s.add(row)
            s.flush()
            self._mark_step(s, c, step)
            kind = EvidenceKind.TEST_CERTIFICATE if role.is_editor else EvidenceKind.PRODUCTION_CERTIFICATE
            cat = self._catalogue(s, c.referentiel_version)
            for ch in s.execute(select(ChapterRow).where(ChapterRow.candidature_id == c.id)).scalars():
                for rid in ch.requirement_ids:
                    req = cat.by_id.get(rid)
                    if (
                        req is not None
                        and kind in req.evidence
                        and wf.ChapterStatus(ch.status) in wf.EDITABLE_CHAPTER
                        and c.status == wf.CandidatureStatus.EVIDENCE.value
                    ):
                        s.add(
                            Evidence(
                                candidature_id=c.id,
                                requirement_id=rid,
                                kind=kind.value,
                                data={"certificate_id": row.id, "subject_dn": row.subject_dn, "x5t#S256": row.x5t_s256},
                                checks={"emis_par": "IGC-Santé (test)"},
                                status="valide",
                                deposited_by=actor.account_id,
                                deposited_at=self.clock(),
                            )
                        )
            self._audit(
                s,
                actor,
                "certificat.commander",
                f"candidature:{c.id}",
                after={
                    "component": comp.id,
                    "environment": env.value,
                    "subject_dn": row.subject_dn,
                    "x5t#S256": row.x5t_s256,
                },
            )
            return sc.IssuedCertificateOut(**self._cert_out(row).model_dump(), key_pem=key_pem)

        return self._run(op)

    # ================================================================ college & habilitations
    def decide(self, actor: Principal, cid: int, data: sc.DecisionIn) -> sc.CandidatureOut:
        """College decision. A grant is refused while a habilitation it relies on is not valid."""

        def op(s: Session) -> sc.CandidatureOut:
            self._require_ans(actor, AnsRole.COLLEGE)
            c = self._get(s, Candidature, cid, "candidature")
            self._check_version(c.row_version, data.version, "la candidature")
            role = Role(c.role)
            if data.decision == "refuser":
                self._transition(s, actor, c, "refuser", wf.Actor.COLLEGE, data.reason)
                self._notify(
                    s,
                    "decision",
                    f"Candidature n° {c.id} ({role.value}) refusée",
                    data.reason or "",
                    org_id=c.organisation_id,
                )
                out0: sc.CandidatureOut = self._cand_out(s, c)
                return out0
            wf.fire(wf.CANDIDATURE_TRANSITIONS, "accorder", wf.CandidatureStatus(c.status), wf.Actor.COLLEGE)
            now = self.clock()
            needs = dependencies.needs_for(
                role, c.solution_id, c.proxy_solution_id, c.osp_habilitation_id, self.parcours.dependencies
            )
            found, problems = dependencies.resolve(needs, self._hab_views(s), now)
            if problems:
                raise ServiceError(
                    409, "dependances_invalides", "habilitation impossible : " + " ; ".join(problems), problems=problems
                )
            self._transition(s, actor, c, "accorder", wf.Actor.COLLEGE, data.reason)
            h = Habilitation(
                candidature_id=c.id,
                organisation_id=c.organisation_id,
                role=role.value,
                environment=environment_for(role).value,
                solution_id=c.solution_id,
                granted_at=now,
                valid_until=add_years(now, self.validity_years),
                status=HabilitationStatus.VALID.value,
                relies_on=found,
            )
            s.add(h)
            s.flush()
            if c.renews_habilitation_id:
                old = s.get(Habilitation, c.renews_habilitation_id)
                if old is not None and old.status in (HabilitationStatus.VALID.value, HabilitationStatus.EXPIRED.value):
                    old.status = HabilitationStatus.RENEWED.value
                    old.status_reason = f"renouvelée par l'habilitation n° {h.id}"
                    for dep in s.execute(select(Habilitation)).scalars():
                        if old.id in (dep.relies_on or []):
                            dep.relies_on = [h.id if x == old.id else x for x in dep.relies_on]
            self._mark_step(s, c, "homologation_declaration")
            self._audit(
                s,
                actor,
                "habilitation.accorder",
                f"habilitation:{h.id}",
                after=self._hab_out(s, h).model_dump(mode="json"),
            )
            self._notify(
                s,
                "decision",
                f"Habilitation {role.value} accordée (candidature n° {c.id})",
                f"valide jusqu'au {h.valid_until.date().isoformat()}",
                org_id=c.organisation_id,
            )
            out: sc.CandidatureOut = self._cand_out(s, c)
            return out

        return self._run(op)

    def _hab_out(self, s: Session, h: Habilitation) -> sc.HabilitationOut:
        org = s.get(Organisation, h.organisation_id)
        sol = s.get(Solution, h.solution_id)
        return sc.HabilitationOut(
            id=h.id,
            candidature_id=h.candidature_id,
            organisation_id=h.organisation_id,
            holder=org.name if org else "?",
            role=Role(h.role),
            environment=h.environment,
            solution_id=h.solution_id,
            solution_name=sol.name if sol else "?",
            granted_at=h.granted_at,
            valid_until=h.valid_until,
            status=h.status,
            status_reason=h.status_reason,
            valid=self._hab_view(h).is_valid(self.clock()),
            at_risk=h.at_risk,
            at_risk_reason=h.at_risk_reason,
            relies_on=list(h.relies_on or []),
            version=h.row_version,
        )

    def list_habilitations(self, actor: Principal, only_valid: bool = False) -> list[sc.HabilitationOut]:
        """Habilitations are public within the platform (operators name the ones they rely on)."""

        def op(s: Session) -> list[sc.HabilitationOut]:
            self._require_validated(actor)
            # strong references: the identity map is weak, so s.get() in _hab_out finds these without SQL
            keep = [*s.execute(select(Organisation)).scalars(), *s.execute(select(Solution)).scalars()]
            out = [
                self._hab_out(s, h)
                for h in s.execute(select(Habilitation).order_by(Habilitation.id).limit(5000)).scalars()
            ]
            del keep
            return [h for h in out if h.valid] if only_valid else out

        return self._read(op)

    def get_habilitation(self, actor: Principal, hid: int) -> sc.HabilitationOut:
        def op(s: Session) -> sc.HabilitationOut:
            self._require_validated(actor)
            return self._hab_out(s, self._get(s, Habilitation, hid, "habilitation"))

        return self._read(op)

    def _set_hab_status(
        self,
        actor: Principal | None,
        hid: int,
        data: sc.ReasonIn | None,
        allowed_from: set[HabilitationStatus],
        target: HabilitationStatus,
        action: str,
    ) -> sc.HabilitationOut:
        def op(s: Session) -> sc.HabilitationOut:
            if actor is not None:
                self._require_ans(actor, AnsRole.COLLEGE, AnsRole.ADMIN)
            h = self._get(s, Habilitation, hid, "habilitation")
            if data is not None:
                self._check_version(h.row_version, data.version, "l'habilitation")
            cur = HabilitationStatus(h.status)
            if cur not in allowed_from:
                raise IllegalTransition(
                    "transition_impossible", f"habilitation à l'état « {cur.value} » : action « {action} » impossible"
                )
            before = self._hab_out(s, h).model_dump(mode="json")
            h.status = target.value
            h.status_reason = data.reason if data else None
            s.flush()
            after = self._hab_out(s, h).model_dump(mode="json")
            if target is HabilitationStatus.WITHDRAWN:
                after["certificats_revoques"] = self._revoke_certificates(s, h)
            self._audit(s, actor, f"habilitation.{action}", f"habilitation:{h.id}", before=before, after=after)
            self._notify(
                s,
                "decision",
                f"Habilitation n° {h.id} ({h.role}) : {action}",
                data.reason if data else "",
                org_id=h.organisation_id,
            )
            if target is HabilitationStatus.VALID:
                self._clear_risks(s)
            else:
                self._cascade(s, [h.id], f"s'appuie sur l'habilitation n° {h.id} ({h.role}) {target.label}")
            return self._hab_out(s, h)

        return self._run(op)

    def suspend(self, actor: Principal, hid: int, data: sc.ReasonIn) -> sc.HabilitationOut:
        return self._set_hab_status(
            actor, hid, data, {HabilitationStatus.VALID}, HabilitationStatus.SUSPENDED, "suspendre"
        )

    def reinstate(self, actor: Principal, hid: int, data: sc.ReasonIn) -> sc.HabilitationOut:
        return self._set_hab_status(
            actor, hid, data, {HabilitationStatus.SUSPENDED}, HabilitationStatus.VALID, "retablir"
        )

    def withdraw(self, actor: Principal, hid: int, data: sc.ReasonIn) -> sc.HabilitationOut:
        return self._set_hab_status(
            actor,
            hid,
            data,
            {HabilitationStatus.VALID, HabilitationStatus.SUSPENDED},
            HabilitationStatus.WITHDRAWN,
            "retirer",
        )

    def _revoke_certificates(self, s: Session, h: Habilitation) -> list[str]:
        """A withdrawn habilitation's certificates are revoked at the IGC (CRL rewritten).

        Services re-read the CRL at each handshake, so the certificates stop working
        everywhere, not only where the trust list is enforced. The ones revoked are those
        the trust list published for this habilitation: the holder's certificates for the
        solution's components in the habilitation's environment.
        """
        rows = s.execute(
            select(CertificateRow)
            .join(Candidature, Candidature.id == CertificateRow.candidature_id)
            .join(Component, Component.id == CertificateRow.component_id)
            .where(
                Component.solution_id == h.solution_id,
                CertificateRow.environment == h.environment,
                CertificateRow.revoked_at.is_(None),
                Candidature.organisation_id == h.organisation_id,
            )
        ).scalars()
        revoked = []
        for row in rows:
            if self.pki is not None:
                try:
                    self.pki.revoke(row.pki_name, "cessationOfOperation")
                except PkiError as exc:  # already revoked by an operator: record it all the same
                    log.warning("révocation du certificat %s : %s", row.pki_name, exc)
            row.revoked_at = self.clock()
            revoked.append(row.subject_dn)
        s.flush()
        return revoked

    def _cascade(self, s: Session, roots: list[int], why: str) -> list[int]:
        """Flag every habilitation relying (transitively) on ``roots`` at risk, and tell their holders."""
        views = self._hab_views(s)
        hit = dependencies.dependents_closure(roots, views)
        flagged = []
        for hid in sorted(hit):
            h = s.get(Habilitation, hid)
            if (
                h is None
                or h.at_risk
                or h.status not in (HabilitationStatus.VALID.value, HabilitationStatus.SUSPENDED.value)
            ):
                continue
            h.at_risk = True
            h.at_risk_reason = why
            flagged.append(hid)
            self._audit(
                s,
                None,
                "habilitation.signaler_risque",
                f"habilitation:{hid}",
                before={"at_risk": False},
                after={"at_risk": True, "motif": why},
            )
            self._notify(
                s, "habilitation_a_risque", f"Habilitation n° {hid} ({h.role}) à risque", why, org_id=h.organisation_id
            )
        s.flush()
        return flagged

    def _clear_risks(self, s: Session) -> None:
        views = {v.id: v for v in self._hab_views(s)}
        now = self.clock()
        for h in s.execute(select(Habilitation).where(Habilitation.at_risk.is_(True))).scalars():
            if not dependencies.still_at_risk(views[h.id], views, now):
                h.at_risk = False
                h.at_risk_reason = None
                self._audit(
                    s,
                    None,
                    "habilitation.lever_risque",
                    f"habilitation:{h.id}",
                    before={"at_risk": True},
                    after={"at_risk": False},
                )
        s.flush()

    def sweep(self, actor: Principal | None = None, now: dt.datetime | None = None) -> sc.SweepOut:
        """Expire overdue habilitations (cascading at-risk flags) and queue 90/30-day expiry notices."""

        def op(s: Session) -> sc.SweepOut:
            if actor is not None:
                self._require_ans(actor, AnsRole.ADMIN)
            t = now or self.clock()
            expired, flagged, sent = [], [], 0
            for h in s.execute(
                select(Habilitation).where(Habilitation.status == HabilitationStatus.VALID.value)
            ).scalars():
                if h.valid_until <= t:
                    h.status = HabilitationStatus.EXPIRED.value
                    h.status_reason = "arrivée à échéance"
                    expired.append(h.id)
                    self._audit(
                        s,
                        actor,
                        "habilitation.expirer",
                        f"habilitation:{h.id}",
                        before={"status": "valide"},
                        after={"status": "expiree"},
                    )
                    continue
                left = (h.valid_until - t).days
                for threshold in (90, 30):
                    if left <= threshold and self._notify(
                        s,
                        f"expiration_{threshold}j",
                        f"Habilitation n° {h.id} ({h.role}) : expiration dans {left} jours",
                        f"Elle expire le {h.valid_until.date().isoformat()} : pensez à la renouveler.",
                        org_id=h.organisation_id,
                        dedup=f"exp{threshold}:{h.id}:{h.valid_until.date().isoformat()}",
                    ):
                        sent += 1
            s.flush()
            for hid in expired:
                flagged += self._cascade(s, [hid], f"s'appuie sur l'habilitation n° {hid} expirée")
            return sc.SweepOut(expired=expired, flagged_at_risk=sorted(set(flagged)), notifications=sent)

        return self._run(op)

    # ================================================================ trust list
    def trust_list_claims(self) -> dict[str, Any]:
        """The currently valid habilitations, their holders and their components' certificates."""
        now = self.clock()
        with self.db.read() as s:
            habs = [
                h
                for h in s.execute(
                    select(Habilitation)
                    .where(Habilitation.status == HabilitationStatus.VALID.value)
                    .order_by(Habilitation.id)
                ).scalars()
                if h.valid_until > now
            ]
            # a handful of set-wise queries, not a few per habilitation
            orgs = {o.id: o for o in s.execute(select(Organisation)).scalars()}
            sols = {x.id: x for x in s.execute(select(Solution)).scalars()}
            cands = {
                c.id: c
                for c in s.execute(
                    select(Candidature).where(Candidature.id.in_([h.candidature_id for h in habs]))
                ).scalars()
            }
            comps_by_sol: dict[int, list[Component]] = {}
            for comp in s.execute(select(Component).order_by(Component.id)).scalars():
                comps_by_sol.setdefault(comp.solution_id, []).append(comp)
            certs: dict[tuple[int, str, int], list[CertificateRow]] = {}
            rows = s.execute(
                select(CertificateRow, Candidature.organisation_id)
                .join(Candidature, Candidature.id == CertificateRow.candidature_id)
                .where(CertificateRow.revoked_at.is_(None))
                .order_by(CertificateRow.id)
            ).all()
            for cert, org_id in rows:
                certs.setdefault((cert.component_id, cert.environment, org_id), []).append(cert)
            items = []
            for h in habs:
                org, sol, cand = orgs[h.organisation_id], sols[h.solution_id], cands[h.candidature_id]
                comps = [
                    {
                        "kind": comp.kind,
                        "name": comp.name,
                        "certificates": [
                            {"subject_dn": x.subject_dn, "x5t#S256": x.x5t_s256, "not_after": x.not_after}
                            for x in certs.get((comp.id, h.environment, h.organisation_id), [])
                        ],
                    }
                    for comp in comps_by_sol.get(sol.id, [])
                ]
                items.append(
                    {
                        "id": h.id,
                        "holder": {
                            "name": org.name,
                            "country": org.country,
                            "siren": org.siren,
                            "siret": org.siret,
                            "registration_number": org.registration_number,
                        },
                        "role": h.role,
                        "role_label": ROLE_LABELS[Role(h.role)],
                        "environment": h.environment,
                        "valid_from": h.granted_at.isoformat(),
                        "valid_until": h.valid_until.isoformat(),
                        "at_risk": h.at_risk,
                        "at_risk_reason": h.at_risk_reason,
                        "relies_on": list(h.relies_on or []),
                        "solution": {
                            "id": sol.id,
                            "name": sol.name,
                            "software_name": cand.software_name,
                            "version": cand.software_version,
                        },
                        "components": comps,
                    }
                )
            # Editors test in the sandbox before they are habilitated (parcours: test certificate,
            # then tests, then evidence): their test certificates are admitted in BAS while the
            # candidature is being instructed, and only then.
            in_instruction = (wf.CandidatureStatus.EVIDENCE.value, wf.CandidatureStatus.COLLEGE.value)
            test_access = []
            for c in s.execute(
                select(Candidature)
                .where(Candidature.status.in_(in_instruction), Candidature.role.in_([Role.ELU.value, Role.ELP.value]))
                .order_by(Candidature.id)
            ).scalars():
                test_certs = [
                    {"subject_dn": x.subject_dn, "x5t#S256": x.x5t_s256, "not_after": x.not_after}
                    for x in s.execute(
                        select(CertificateRow)
                        .where(CertificateRow.candidature_id == c.id, CertificateRow.revoked_at.is_(None))
                        .order_by(CertificateRow.id)
                    ).scalars()
                ]
                if test_certs:
                    holder = orgs.get(c.organisation_id)
                    test_access.append(
                        {
                            "candidature_id": c.id,
                            "role": c.role,
                            "holder": holder.name if holder else "",
                            "environment": environment_for(Role(c.role)).value,
                            "certificates": test_certs,
                        }
                    )
        iat = int(now.timestamp())
        return {
            "iss": self.settings.issuer,
            "iat": iat,
            "exp": iat + self.settings.trust_list_ttl_seconds,
            "habilitations": items,
            "test_access": test_access,
        }

    def signed_trust_list(self) -> str:
        """The signed list, cached until the registry changes (every change appends to the audit
        trail, so its head sequence is the revision) or a listed habilitation expires."""
        now = self.clock()
        with self.db.read() as s:
            head = s.get(AuditHead, 1)
            revision = head.last_seq if head else 0
        cached = self._trust_list_cache
        if cached is not None and cached[0] == revision and now < cached[1]:
            return cached[2]
        claims = self.trust_list_claims()
        token = self.keys.sign(claims, alg=self.keys.algs[0], typ="trust-list+jwt")
        horizon = now + dt.timedelta(seconds=self.settings.trust_list_ttl_seconds / 2)
        for item in claims["habilitations"]:
            horizon = min(horizon, dt.datetime.fromisoformat(item["valid_until"]))
        self._trust_list_cache = (revision, horizon, token)
        return token

    def jwks(self) -> dict[str, Any]:
        return self.keys.jwks()

    # ================================================================ référentiel
    @staticmethod
    def _req_out(r: Requirement) -> sc.RequirementOut:
        return sc.RequirementOut(**r.as_dict())

    def _ref_out(self, row: ReferentielVersion) -> sc.ReferentielOut:
        cat = Catalogue.parse(row.content)
        return sc.ReferentielOut(
            version=cat.version,
            created_at=row.created_at,
            chapters=[{"id": c.id, "title": c.title} for c in cat.chapters],
            requirements=[self._req_out(r) for r in cat.requirements],
        )

    def current_referentiel(self) -> sc.ReferentielOut:
        def op(s: Session) -> sc.ReferentielOut:
            return self._ref_out(
                s.execute(select(ReferentielVersion).order_by(ReferentielVersion.id.desc()).limit(1)).scalar_one()
            )

        return self._read(op)

    def list_referentiel_versions(self) -> list[str]:
        return self._read(
            lambda s: list(s.execute(select(ReferentielVersion.version).order_by(ReferentielVersion.id)).scalars())
        )

    def publish_referentiel(self, actor: Principal, data: sc.ReferentielIn) -> sc.ReferentielOut:
        """Administrators publish a new catalogue version; existing dossiers see what changed for them."""

        def op(s: Session) -> sc.ReferentielOut:
            self._require_ans(actor, AnsRole.ADMIN)
            cat = Catalogue.parse(data.model_dump())
            if s.scalar(select(ReferentielVersion.id).where(ReferentielVersion.version == cat.version)) is not None:
                raise _conflict(f"la version {cat.version} du référentiel existe déjà", code="version_existante")
            prev = self._catalogue(s)
            row = ReferentielVersion(
                version=cat.version, content=cat.as_dict(), created_at=self.clock(), created_by=actor.account_id
            )
            s.add(row)
            s.flush()
            self._audit(
                s,
                actor,
                "referentiel.publier",
                f"referentiel:{cat.version}",
                before={"version": prev.version},
                after=cat.as_dict(),
            )
            active = sorted(st.value for st in wf.IN_PROGRESS)
            for c in s.execute(select(Candidature).where(Candidature.status.in_(active))).scalars():
                d = diff_for(
                    self._catalogue(s, c.referentiel_version),
                    cat,
                    Role(c.role),
                    Level(c.level),
                    self._solution_needs_cnda(s, c.solution_id),
                )
                if not d.empty:
                    self._notify(
                        s,
                        "referentiel_modifie",
                        f"Candidature n° {c.id} : le référentiel {cat.version} modifie vos exigences",
                        f"{len(d.added)} ajoutée(s), {len(d.removed)} retirée(s), {len(d.changed)} modifiée(s)",
                        org_id=c.organisation_id,
                    )
            return self._ref_out(row)

        return self._run(op)

    def referentiel_changes(self, actor: Principal, cid: int) -> sc.ReferentielDiffOut:
        def op(s: Session) -> sc.ReferentielDiffOut:
            c = self._cand_for_read(s, actor, cid)
            new = self._catalogue(s)
            d = diff_for(
                self._catalogue(s, c.referentiel_version),
                new,
                Role(c.role),
                Level(c.level),
                self._solution_needs_cnda(s, c.solution_id),
            )
            return sc.ReferentielDiffOut(
                candidature_id=c.id,
                from_version=d.from_version,
                to_version=d.to_version,
                added=[self._req_out(r) for r in d.added],
                removed=[self._req_out(r) for r in d.removed],
                changed=[
                    sc.RequirementChangeOut(before=self._req_out(a), after=self._req_out(b)) for a, b in d.changed
                ],
                up_to_date=c.referentiel_version == new.version,
            )

        return self._read(op)

    def adopt_referentiel(self, actor: Principal, cid: int, data: sc.ActionIn) -> sc.CandidatureDetail:
        """Move a dossier to the current catalogue: chapters are recomputed, changed ones reviewed again."""

        def op(s: Session) -> sc.CandidatureDetail:
            c = self._cand_for_candidate(s, actor, cid)
            self._check_version(c.row_version, data.version, "la candidature")
            if c.status in (
                wf.CandidatureStatus.GRANTED.value,
                wf.CandidatureStatus.REFUSED.value,
                wf.CandidatureStatus.ABANDONED.value,
            ):
                raise IllegalTransition("candidature_close", "candidature close : le référentiel n'y est plus appliqué")
            cat = self._catalogue(s)
            if cat.version == c.referentiel_version:
                raise _conflict("la candidature suit déjà la dernière version du référentiel", code="deja_a_jour")
            before = c.referentiel_version
            c.referentiel_version = cat.version
            c.updated_at = self.clock()
            self._sync_chapters(s, c, cat)
            if c.status == wf.CandidatureStatus.COLLEGE.value:
                chapters = list(s.execute(select(ChapterRow).where(ChapterRow.candidature_id == c.id)).scalars())
                if not all(x.status == wf.ChapterStatus.ACCEPTED.value for x in chapters):
                    self._transition(
                        s, None, c, "rouvrir_preuves", wf.Actor.SYSTEM, f"nouveau référentiel {cat.version}"
                    )
            self._audit(
                s,
                actor,
                "candidature.adopter_referentiel",
                f"candidature:{c.id}",
                before={"referentiel": before},
                after={"referentiel": cat.version},
            )
            return self._detail(s, c)

        return self._run(op)

    # ================================================================ PASSI registry
    def list_passi(self) -> list[sc.PassiOut]:
        return self._read(
            lambda s: [
                sc.PassiOut.model_validate(p)
                for p in s.execute(select(PassiProvider).order_by(PassiProvider.id)).scalars()
            ]
        )

    def add_passi(self, actor: Principal, data: sc.PassiIn) -> sc.PassiOut:
        def op(s: Session) -> sc.PassiOut:
            self._require_ans(actor, AnsRole.ADMIN)
            if s.scalar(select(PassiProvider.id).where(PassiProvider.name == data.name.strip())) is not None:
                raise _conflict("prestataire déjà inscrit", code="passi_existant")
            p = PassiProvider(name=data.name.strip(), reference=data.reference, active=True)
            s.add(p)
            s.flush()
            self._audit(s, actor, "passi.ajouter", f"passi:{p.id}", after={"name": p.name, "reference": p.reference})
            return sc.PassiOut.model_validate(p)

        return self._run(op)

    def set_passi_active(self, actor: Principal, pid: int, active: bool) -> sc.PassiOut:
        def op(s: Session) -> sc.PassiOut:
            self._require_ans(actor, AnsRole.ADMIN)
            p = self._get(s, PassiProvider, pid, "prestataire PASSI")
            before = p.active
            p.active = active
            self._audit(
                s,
                actor,
                "passi.activer" if active else "passi.retirer",
                f"passi:{p.id}",
                before={"active": before},
                after={"active": active},
            )
            return sc.PassiOut.model_validate(p)

        return self._run(op)

    # ================================================================ audit & notifications
    def audit_entries(self, actor: Principal, target: str | None = None, limit: int = 200) -> list[sc.AuditOut]:
        def op(s: Session) -> list[sc.AuditOut]:
            if target and target.startswith("candidature:") and not actor.is_ans:
                try:
                    cid = int(target.split(":", 1)[1].split("/", 1)[0])
                except ValueError:
                    raise _not_found("candidature") from None
                self._cand_for_read(s, actor, cid)
            elif not actor.has(AnsRole.VERIFIER, AnsRole.COLLEGE, AnsRole.ADMIN):
                raise _forbidden("la piste d'audit complète est réservée à l'ANS")
            q = select(AuditRow).order_by(AuditRow.seq.desc()).limit(limit)
            if target:
                q = q.where((AuditRow.target == target) | AuditRow.target.startswith(target + "/"))
            return [sc.AuditOut.model_validate(r) for r in s.execute(q).scalars()]

        return self._read(op)

    def verify_audit(self, actor: Principal | None = None) -> sc.AuditCheckOut:
        def op(s: Session) -> sc.AuditCheckOut:
            if actor is not None:
                self._require_ans(actor, AnsRole.ADMIN, AnsRole.VERIFIER, AnsRole.COLLEGE)
            r = audit.verify(s)
            return sc.AuditCheckOut.model_validate(r)

        return self._read(op)

    def notifications(self, actor: Principal, limit: int = 200) -> list[sc.NotificationOut]:
        def op(s: Session) -> list[sc.NotificationOut]:
            q = select(Notification).order_by(Notification.id.desc()).limit(limit)
            if not actor.is_ans:
                self._require_validated(actor)
                q = q.where(
                    (Notification.organisation_id == actor.organisation_id)
                    | (Notification.account_id == actor.account_id)
                )
            return [sc.NotificationOut.model_validate(n) for n in s.execute(q).scalars()]

        return self._read(op)

    def pending_notifications(self, limit: int = 100) -> list[tuple[int, str, str]]:
        """Outbox relay: notifications not yet sent (a mailer marks them with ``mark_sent``)."""
        with self.db.transaction() as s:
            return [
                (n.id, n.subject, n.body)
                for n in s.execute(
                    select(Notification).where(Notification.sent_at.is_(None)).order_by(Notification.id).limit(limit)
                ).scalars()
            ]

    def mark_sent(self, ids: Iterable[int]) -> None:
        with self.db.transaction() as s:
            for i in ids:
                n = s.get(Notification, i)
                if n is not None and n.sent_at is None:
                    n.sent_at = self.clock()
