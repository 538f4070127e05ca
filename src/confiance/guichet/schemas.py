"""Inputs and outputs of the service layer (pydantic), shared by the JSON API and the web UI.

Every string and list is bounded: the API validates before any rule runs, and oversized
input is refused with 422 rather than stored.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .domain.model import AnsRole, ComponentKind, EvidenceKind, Level, OrgRole, Role, SolutionKind
from .domain.pentest import AppType, Criterion, CriterionResult, PentestReport, Severity, Summary

Name = Annotated[str, Field(min_length=1, max_length=200)]
Short = Annotated[str, Field(min_length=1, max_length=64)]
Text = Annotated[str, Field(max_length=5000)]
Reason = Annotated[str, Field(min_length=1, max_length=2000)]
Email = Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Password = Annotated[str, Field(min_length=12, max_length=200)]
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Version = Annotated[int, Field(ge=1, le=2**31 - 1)]


def _no_nul(value: Any) -> None:
    """NUL cannot be stored in a PostgreSQL text field: refused at the edge as invalid input
    (422) rather than failing in the database (500)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("caractère NUL interdit")
    elif isinstance(value, dict):
        for k, v in value.items():
            _no_nul(k)
            _no_nul(v)
    elif isinstance(value, list | tuple):
        for v in value:
            _no_nul(v)


class In(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        _no_nul(data)
        return data


# ----- organisations & accounts -----
class OrganisationIn(In):
    name: Name
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")] = "FR"
    siren: Annotated[str, Field(max_length=20)] | None = None
    siret: Annotated[str, Field(max_length=20)] | None = None
    registration_number: Annotated[str, Field(max_length=64)] | None = None


class OrganisationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    country: str
    siren: str | None
    siret: str | None
    registration_number: str | None


class RegisterIn(In):
    """A company's legal representative (mandataire) registers the company."""

    email: Email
    name: Name
    password: Password
    organisation: OrganisationIn


class AccountIn(In):
    email: Email
    name: Name
    password: Password | None = None
    org_role: OrgRole | None = None
    organisation_id: Id | None = None  # ANS administrators only; others create in their own organisation
    ans_roles: Annotated[list[AnsRole], Field(max_length=3)] = []


class AccountOut(BaseModel):
    id: int
    email: str
    name: str
    organisation_id: int | None
    org_role: OrgRole | None
    ans_roles: list[AnsRole]
    validated: bool
    active: bool


class LoginIn(In):
    email: Email
    password: Annotated[str, Field(min_length=1, max_length=200)]
    label: Annotated[str, Field(max_length=100)] = ""


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_at: dt.datetime | None
    account: AccountOut


# ----- solutions -----
class ComponentIn(In):
    kind: ComponentKind
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")]


class SolutionIn(In):
    name: Name
    kind: SolutionKind
    components: Annotated[list[ComponentIn], Field(min_length=1, max_length=20)]


class SolutionUpdateIn(In):
    version: Version
    name: Name


class ComponentsUpdateIn(In):
    version: Version
    components: Annotated[list[ComponentIn], Field(min_length=1, max_length=20)]


class CertificateOut(BaseModel):
    id: int
    component_id: int
    environment: str
    subject_dn: str
    x5t_s256: str
    serial: str
    not_after: str
    issued_at: dt.datetime
    revoked: bool
    cert_pem: str


class IssuedCertificateOut(CertificateOut):
    key_pem: str | None = None  # sandbox only, returned once; None when issued from a CSR


class ComponentOut(BaseModel):
    id: int
    kind: ComponentKind
    name: str
    needs_cnda: bool


class SolutionOut(BaseModel):
    id: int
    organisation_id: int
    name: str
    kind: SolutionKind
    components: list[ComponentOut]
    needs_cnda: bool
    version: int
    in_use: bool = False  # named by a dossier or a habilitation: no longer renamed nor deleted


# ----- candidatures -----
class CandidatureIn(In):
    role: Role
    level: Level = Level.EDC
    path: Literal["standard", "direct", "trust_space", "delegation"] = "trust_space"
    solution_id: Id | None = None
    new_solution: SolutionIn | None = None  # declared with the candidature, in the same transaction
    proxy_solution_id: Id | None = None  # ELU: the Proxy e-Santé its software uses
    osp_habilitation_id: Id | None = None  # OSU: the proxy operator's habilitation
    software_name: Name
    software_version: Short
    description: Text = ""
    nru_numbers: Annotated[list[Annotated[str, Field(min_length=1, max_length=40)]], Field(max_length=20)] = []
    maturity: dict[Annotated[str, Field(max_length=64)], bool] = Field(default_factory=dict, max_length=20)
    renews_habilitation_id: Id | None = None

    @model_validator(mode="after")
    def _one_solution(self) -> CandidatureIn:
        if (self.solution_id is None) == (self.new_solution is None):
            raise ValueError("indiquez une solution existante ou déclarez-en une nouvelle (l'un ou l'autre)")
        return self


class FormUpdateIn(In):
    """Declaration edits; ``version`` is the candidature version the editor read (409 if stale)."""

    version: Version
    software_name: Name | None = None
    software_version: Short | None = None
    description: Text | None = None
    nru_numbers: Annotated[list[Annotated[str, Field(min_length=1, max_length=40)]], Field(max_length=20)] | None = None
    maturity: dict[Annotated[str, Field(max_length=64)], bool] | None = Field(default=None, max_length=20)


class CommitmentsIn(In):
    """The three legal commitments every candidate accepts when submitting the form."""

    version: Version | None = None
    respect_referentiels_cgu: bool
    exactitude_informations: bool
    acceptation_audits: bool


class ActionIn(In):
    version: Version | None = None
    reason: Annotated[str, Field(max_length=2000)] | None = None


class ReasonIn(In):
    version: Version | None = None
    reason: Reason


class ChapterReviewIn(In):
    version: Version | None = None  # the chapter version read by the verifier
    decision: Literal["accepter", "rejeter", "complement"]
    reason: Annotated[str, Field(max_length=2000)] | None = None


class DecisionIn(In):
    version: Version | None = None
    decision: Literal["accorder", "refuser"]
    reason: Annotated[str, Field(max_length=2000)] | None = None


class CertificateOrderIn(In):
    component_id: Id
    # PKCS#10 PEM: the key pair stays with the operator (required in production; without it
    # the guichet generates a key pair, for the sandbox demo only)
    csr_pem: Annotated[str, Field(min_length=1, max_length=20_000)] | None = None


class CertificateRenewIn(In):
    csr_pem: Annotated[str, Field(min_length=1, max_length=20_000)] | None = None


class CollaboratorIn(In):
    account_id: Id


class CriterionIn(In):
    id: Annotated[str, Field(min_length=1, max_length=64)]
    severity: Severity
    result: CriterionResult


class SummaryIn(In):
    application_name: Name
    application_version: Short
    description: Text = ""
    application_type: AppType
    result: Annotated[str, Field(min_length=1, max_length=200)]


class PentestIn(In):
    provider: Name
    auditor: Annotated[str, Field(max_length=200)]
    report_date: dt.date
    application_name: Name
    application_version: Short
    application_type: AppType
    criteria: Annotated[list[CriterionIn], Field(max_length=1000)]
    summary: SummaryIn

    def to_report(self) -> PentestReport:
        """The domain's view, checked by ``pentest.check_report`` (deposit and live web verdict alike)."""
        return PentestReport(
            provider=self.provider,
            auditor=self.auditor,
            report_date=self.report_date,
            application_name=self.application_name,
            application_version=self.application_version,
            application_type=self.application_type,
            criteria=tuple(Criterion(x.id, x.severity, x.result) for x in self.criteria),
            summary=Summary(
                self.summary.application_name,
                self.summary.application_version,
                self.summary.description,
                self.summary.application_type,
                self.summary.result,
            ),
        )


class CndaIn(In):
    number: Annotated[str, Field(min_length=1, max_length=64)]
    issued_on: dt.date


class EvidenceIn(In):
    requirement_id: Annotated[str, Field(min_length=1, max_length=64)]
    kind: EvidenceKind
    file_sha256: Sha256 | None = None
    file_name: Annotated[str, Field(max_length=200)] | None = None  # the original name, kept for downloads
    description: Text = ""
    pentest: PentestIn | None = None
    conformity_report: Annotated[str, Field(min_length=1, max_length=200_000)] | None = None
    cnda: CndaIn | None = None


class EvidenceOut(BaseModel):
    id: int
    requirement_id: str
    kind: EvidenceKind
    file_sha256: str | None
    file_name: str | None = None
    status: str
    review_reason: str | None
    checks: dict[str, Any]
    deposited_at: dt.datetime


class ChapterOut(BaseModel):
    chapter_id: str
    title: str
    requirement_ids: list[str]
    status: str
    reason: str | None
    submitted_at: dt.datetime | None = None  # last submission for review
    decided_at: dt.datetime | None = None  # last verifier decision
    complete: bool
    missing: list[str]
    version: int


class StepOut(BaseModel):
    id: str
    label: str
    status: str
    by_platform: bool
    reachable: bool
    after_grant: bool = False  # follows the college's grant


class CandidatureOut(BaseModel):
    id: int
    organisation_id: int
    role: Role
    level: Level
    path: str
    environment: str
    solution_id: int
    proxy_solution_id: int | None
    osp_habilitation_id: int | None
    software_name: str
    software_version: str
    description: str
    nru_numbers: list[str]
    maturity: dict[str, bool]
    commitments: dict[str, Any]
    status: str
    status_label: str
    status_reason: str | None
    referentiel_version: str
    collaborators: list[int]
    created_by: int
    created_at: dt.datetime
    updated_at: dt.datetime
    version: int
    habilitation_id: int | None


class DependencyOut(BaseModel):
    """One habilitation the dossier relies on ("s'appuie sur"), as found now."""

    label: str  # what is relied on, in French
    role: Role
    habilitation: HabilitationOut | None  # None: no habilitation of that profile exists (yet)
    state: str | None = None  # HabilitationState value
    state_label: str | None = None


class CandidatureDetail(CandidatureOut):
    chapters: list[ChapterOut]
    evidence: list[EvidenceOut]
    parcours: list[StepOut]
    certificates: list[CertificateOut]
    relies_on: list[DependencyOut] = []


class FileOut(BaseModel):
    sha256: str
    size: int
    content_type: str


# ----- habilitations -----
class HabilitationOut(BaseModel):
    id: int
    candidature_id: int
    organisation_id: int
    holder: str
    role: Role
    environment: str
    solution_id: int
    solution_name: str
    granted_at: dt.datetime
    valid_until: dt.datetime
    status: str
    status_reason: str | None
    valid: bool
    at_risk: bool
    at_risk_reason: str | None
    relies_on: list[int]
    version: int
    software_name: str = ""  # as habilitated (the candidature's declaration)
    software_version: str = ""


# ----- référentiel, PASSI, audit, notifications -----
class RequirementOut(BaseModel):
    id: str
    chapter: str
    text: str
    actors: list[str]
    level: str
    evidence: list[str]
    condition: str | None = None


class RequirementChangeOut(BaseModel):
    before: RequirementOut
    after: RequirementOut


class ReferentielDiffOut(BaseModel):
    candidature_id: int
    from_version: str
    to_version: str
    added: list[RequirementOut]
    removed: list[RequirementOut]
    changed: list[RequirementChangeOut]
    up_to_date: bool


class ReferentielIn(In):
    """A new catalogue version (same shape as ``data/referentiel.yaml``)."""

    version: Annotated[str, Field(min_length=1, max_length=40)]
    chapters: Annotated[list[dict[str, Any]], Field(max_length=200)]
    requirements: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=2000)]


class ReferentielOut(BaseModel):
    version: str
    created_at: dt.datetime
    chapters: list[dict[str, Any]]
    requirements: list[RequirementOut]


class PassiIn(In):
    name: Name
    reference: Annotated[str, Field(max_length=64)] = ""


class PassiOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    reference: str
    active: bool


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    at: str
    actor: str
    action: str
    target: str
    before: Any
    after: Any
    hash: str


class AuditCheckOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    ok: bool
    checked: int
    first_bad: int | None
    reason: str | None


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: dt.datetime
    kind: str
    organisation_id: int | None
    account_id: int | None
    candidature_id: int | None = None
    subject: str
    body: str


class SweepOut(BaseModel):
    expired: list[int]
    flagged_at_risk: list[int]
    notifications: int
    reminders: int = 0  # renewal reminders (no renewal candidature in progress)
