"""Accounts, organisations and API tokens: who may create and validate whom, password
login with throttling, bearer tokens stored as hashes."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable

from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .. import schemas as sc
from ..db import (
    Account,
    ApiToken,
    LoginFailure,
    Organisation,
)
from ..domain.errors import DomainError
from ..domain.identifiers import validate_registration, validate_siren, validate_siret
from ..domain.model import (
    AnsRole,
    OrgRole,
)
from . import base, lookups, outputs
from .base import (
    TOKEN_PREFIX,
    Principal,
    ServiceCore,
    ServiceError,
    conflict,
    forbidden,
    not_found,
)


def new_org(svc: ServiceCore, s: Session, data: sc.OrganisationIn) -> Organisation:
    validate_registration(data.country, data.siren, data.siret, data.registration_number)
    siren = validate_siren(data.siren) if data.siren else None
    siret = validate_siret(data.siret) if data.siret else None
    if siren and s.scalar(select(Organisation.id).where(Organisation.siren == siren)) is not None:
        raise conflict(f"une structure de SIREN {siren} est déjà inscrite", code="structure_existante")
    org = Organisation(
        name=data.name.strip(),
        country=data.country,
        siren=siren,
        siret=siret,
        registration_number=(data.registration_number or None) if data.country != "FR" else None,
        created_at=svc.clock(),
    )
    s.add(org)
    s.flush()
    return org


def new_account(
    svc: ServiceCore,
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
        raise conflict(f"un compte existe déjà pour {email}", code="compte_existant")
    acc = Account(
        email=email,
        name=name.strip(),
        password_hash=svc.hasher.hash(password) if password else None,
        organisation_id=org_id,
        org_role=org_role.value if org_role else None,
        ans_roles=sorted(r.value for r in ans_roles),
        validated=validated,
        active=True,
        created_at=svc.clock(),
    )
    s.add(acc)
    s.flush()
    return acc


def register(svc: ServiceCore, data: sc.RegisterIn) -> sc.AccountOut:
    """A mandataire registers the company; the account waits for ANS identity validation."""

    def op(s: Session) -> sc.AccountOut:
        org = new_org(svc, s, data.organisation)
        acc = new_account(svc, s, data.email, data.name, data.password, org.id, OrgRole.MANDATAIRE, (), validated=False)
        svc.audit(
            s,
            None,
            "compte.inscrire",
            f"organisation:{org.id}",
            after={"organisation": sc.OrganisationOut.model_validate(org).model_dump(), "compte": acc.email},
        )
        return outputs.account_out(acc)

    return svc.run(op)


def create_account(svc: ServiceCore, actor: Principal, data: sc.AccountIn) -> sc.AccountOut:
    """Mandataire: représentants and salariés; représentant: salariés; administrator: anyone."""

    def op(s: Session) -> sc.AccountOut:
        base.require_validated(actor)
        is_admin = actor.has(AnsRole.ADMIN)
        if data.ans_roles:
            if not is_admin:
                raise forbidden("seul un administrateur crée des comptes ANS")
            if data.org_role or data.organisation_id:
                raise DomainError("compte_incoherent", "un compte ANS n'appartient à aucune structure")
            acc = new_account(svc, s, data.email, data.name, data.password, None, None, data.ans_roles, validated=True)
        else:
            if data.org_role is None:
                raise DomainError("role_requis", "indiquez le rôle du compte (mandataire, representant ou salarie)")
            if is_admin and data.organisation_id:
                org_id = lookups.get(svc, s, Organisation, data.organisation_id, "structure").id
                allowed = True
            else:
                org_id = actor.organisation_id or 0
                if data.organisation_id not in (None, org_id):
                    raise forbidden("vous ne pouvez créer des comptes que dans votre structure")
                allowed = (actor.org_role is OrgRole.MANDATAIRE and data.org_role is not OrgRole.MANDATAIRE) or (
                    actor.org_role is OrgRole.REPRESENTANT and data.org_role is OrgRole.SALARIE
                )
            if not allowed or not org_id:
                raise forbidden(
                    "le mandataire nomme les représentants ; mandataire et représentants créent les comptes salariés"
                )
            # a salarié needs validation; représentants are appointed directly by the mandataire
            validated = data.org_role is OrgRole.REPRESENTANT or is_admin
            acc = new_account(
                svc, s, data.email, data.name, data.password, org_id, data.org_role, (), validated=validated
            )
        svc.audit(s, actor, "compte.creer", f"compte:{acc.id}", after=outputs.account_out(acc).model_dump())
        return outputs.account_out(acc)

    return svc.run(op)


def validate_account(svc: ServiceCore, actor: Principal, account_id: int) -> sc.AccountOut:
    """ANS validates a mandataire's identity; mandataire/représentant validate their salariés."""

    def op(s: Session) -> sc.AccountOut:
        base.require_validated(actor)
        acc = lookups.get(svc, s, Account, account_id, "compte")
        if acc.org_role == OrgRole.MANDATAIRE.value or acc.organisation_id is None:
            base.require_ans(actor, AnsRole.VERIFIER, AnsRole.ADMIN)
        elif not actor.has(AnsRole.ADMIN) and not (
            actor.organisation_id == acc.organisation_id
            and actor.org_role in (OrgRole.MANDATAIRE, OrgRole.REPRESENTANT)
        ):
            raise forbidden("seuls le mandataire et les représentants de la structure valident ses comptes")
        if acc.validated:
            raise conflict("ce compte est déjà validé", code="deja_valide")
        acc.validated = True
        svc.audit(
            s, actor, "compte.valider", f"compte:{acc.id}", before={"validated": False}, after={"validated": True}
        )
        return outputs.account_out(acc)

    return svc.run(op)


def list_accounts(svc: ServiceCore, actor: Principal) -> list[sc.AccountOut]:
    def op(s: Session) -> list[sc.AccountOut]:
        q = select(Account).order_by(Account.id)
        if not actor.is_ans:
            base.require_validated(actor)
            q = q.where(Account.organisation_id == actor.organisation_id)
        return [outputs.account_out(a) for a in s.execute(q).scalars()]

    return svc.read(op)


def me(svc: ServiceCore, actor: Principal) -> sc.AccountOut:
    return svc.read(lambda s: outputs.account_out(lookups.get(svc, s, Account, actor.account_id, "compte")))


def get_organisation(svc: ServiceCore, actor: Principal, org_id: int) -> sc.OrganisationOut:
    def op(s: Session) -> sc.OrganisationOut:
        if not actor.is_ans and actor.organisation_id != org_id:
            raise not_found("structure")
        return sc.OrganisationOut.model_validate(lookups.get(svc, s, Organisation, org_id, "structure"))

    return svc.read(op)


def list_organisations(svc: ServiceCore, actor: Principal) -> list[sc.OrganisationOut]:
    def op(s: Session) -> list[sc.OrganisationOut]:
        q = select(Organisation).order_by(Organisation.id)
        if not actor.is_ans:
            q = q.where(Organisation.id == (actor.organisation_id or 0))
        return [sc.OrganisationOut.model_validate(o) for o in s.execute(q).scalars()]

    return svc.read(op)


def bootstrap_account(
    svc: ServiceCore,
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
            org_id = existing.id if existing else new_org(svc, s, org).id
        acc = new_account(svc, s, email, name, password, org_id, org_role, ans_roles, validated=True)
        svc.audit(s, None, "compte.creer_admin", f"compte:{acc.id}", after=outputs.account_out(acc).model_dump())
        return outputs.account_out(acc)

    return svc.run(op)


def login(svc: ServiceCore, data: sc.LoginIn) -> sc.TokenOut:
    """Exchange email + password for a bearer API token (argon2id password hashes).

    The slow hash check runs outside any transaction (it must not hold SQLite's write
    lock), and repeated failures for one address are throttled (429) for a window. The
    failures are rows of the database (``LoginFailure``), so every guichet process
    sharing it counts the same ones.
    """
    email = data.email.strip().lower()
    now = svc.clock()
    window = dt.timedelta(seconds=svc.settings.login_window_seconds)
    with svc.db.read() as s:
        recent = s.execute(
            select(func.count(), func.min(LoginFailure.at)).where(
                LoginFailure.email == email, LoginFailure.at > now - window
            )
        ).one()
        acc = s.execute(select(Account).where(Account.email == email)).scalar_one_or_none()
        account_id, pw_hash, active = (acc.id, acc.password_hash, acc.active) if acc else (None, None, False)
    failures, oldest = recent
    if failures >= svc.settings.login_max_failures:
        raise ServiceError(
            429,
            "trop_de_tentatives",
            "trop de tentatives de connexion pour ce compte : réessayez plus tard",
            retry_after=max(1, int((oldest + window - now).total_seconds()) + 1),
        )
    ok = False
    if pw_hash and active:
        try:
            ok = svc.hasher.verify(pw_hash, data.password)
        except (VerificationError, InvalidHashError):
            ok = False
    else:
        svc.hasher.hash(data.password)  # same work whether or not the account exists
    if not ok or account_id is None:
        with svc.db.transaction() as s:
            # Rows past the window count for nothing: this address's are dropped here.
            s.execute(delete(LoginFailure).where(LoginFailure.email == email, LoginFailure.at <= now - window))
            s.add(LoginFailure(email=email, at=now))
        raise ServiceError(401, "identifiants_invalides", "adresse ou mot de passe incorrect")

    def op(s: Session) -> sc.TokenOut:
        s.execute(delete(LoginFailure).where(LoginFailure.email == email))
        return issue_token(svc, s, lookups.get(svc, s, Account, account_id, "compte"), data.label)

    return svc.run(op)


def issue_token(svc: ServiceCore, s: Session, acc: Account, label: str) -> sc.TokenOut:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = svc.clock() + dt.timedelta(days=svc.settings.token_ttl_days)
    s.add(
        ApiToken(
            account_id=acc.id,
            token_hash=hashlib.sha256(token.encode()).hexdigest(),
            label=label[:100],
            created_at=svc.clock(),
            expires_at=expires,
        )
    )
    svc.audit(s, lookups.principal(svc, acc), "jeton.emettre", f"compte:{acc.id}", after={"label": label})
    return sc.TokenOut(access_token=token, expires_at=expires, account=outputs.account_out(acc))


def issue_token_for(svc: ServiceCore, email: str, label: str = "cli") -> sc.TokenOut:
    """CLI: a token for an existing account (the host operator is trusted)."""

    def op(s: Session) -> sc.TokenOut:
        acc = s.execute(select(Account).where(Account.email == email.strip().lower())).scalar_one_or_none()
        if acc is None:
            raise not_found("compte")
        return issue_token(svc, s, acc, label)

    return svc.run(op)


def authenticate(svc: ServiceCore, token: str) -> Principal | None:
    """The principal behind a bearer token, or None (unknown, expired, revoked, inactive)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    digest = hashlib.sha256(token.encode()).hexdigest()
    with svc.db.read() as s:
        row = s.execute(select(ApiToken).where(ApiToken.token_hash == digest)).scalar_one_or_none()
        if row is None or row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= svc.clock()):
            return None
        acc = s.get(Account, row.account_id)
        if acc is None or not acc.active:
            return None
        return lookups.principal(svc, acc)


def principal_for(svc: ServiceCore, account_id: int) -> Principal | None:
    """The principal of an account (web sessions keep the account id, not a token)."""
    with svc.db.read() as s:
        acc = s.get(Account, account_id)
        if acc is None or not acc.active:
            return None
        return lookups.principal(svc, acc)


def check_password(svc: ServiceCore, email: str, password: str) -> Principal | None:
    """Password login for the web UI (same argon2id check as ``login``, no token issued)."""
    try:
        tok = login(svc, sc.LoginIn(email=email, password=password, label="web"))
    except (ServiceError, ValueError):
        return None
    revoke_token(svc, tok.access_token)
    return principal_for(svc, tok.account.id)


def revoke_token(svc: ServiceCore, token: str) -> None:
    digest = hashlib.sha256(token.encode()).hexdigest()
    with svc.db.transaction() as s:
        row = s.execute(select(ApiToken).where(ApiToken.token_hash == digest)).scalar_one_or_none()
        if row is not None and row.revoked_at is None:
            row.revoked_at = svc.clock()
