"""The signed trust list's claims, typed: what the guichet publishes and the trust space reads.

The guichet signs this document (``/trust-list``, a JWT); the PSC sandbox and the API
authorization server admit client certificates from it (``trustlist.admit``). Both sides
used to agree on it only through dict keys; these models are the contract. The JSON is
unchanged: the certificate thumbprint keeps its RFC 8705 name ``x5t#S256`` (``x5t_s256``
in Python), dates keep the guichet's ISO 8601 form.

Readers are lenient where the wire is: fields ``admit`` does not need have defaults, and
fields a newer guichet adds are kept (``extra="allow"``), so an older server keeps
enforcing a newer list. The guichet builds a ``TrustList`` with keyword arguments (the
type checker names a misspelt field) and publishes ``TrustList.to_claims()``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

# Roles of the Espace de Confiance (habilitations and candidatures).
ROLE_ELU = "ELU"  # éditeur de LPS utilisateur
ROLE_ELP = "ELP"  # éditeur de proxy e-Santé
ROLE_OSU = "OSU"  # opérateur de service utilisateur
ROLE_OSP = "OSP"  # opérateur de proxy e-Santé
EDITOR_ROLES = (ROLE_ELU, ROLE_ELP)
OPERATOR_ROLES = (ROLE_OSU, ROLE_OSP)
ROLES = (*EDITOR_ROLES, *OPERATOR_ROLES)

# Environments: editors test in the sandbox (BAS), operators run in production.
ENV_BAS = "BAS"
ENV_PRODUCTION = "production"

# JWT ``typ`` of the signed list.
TRUST_LIST_TYP = "trust-list+jwt"


def roles_for(environment: str) -> tuple[str, ...]:
    """The roles whose certificates an environment admits."""
    return EDITOR_ROLES if environment.upper() == ENV_BAS else OPERATOR_ROLES


def timestamp(value: dt.datetime) -> float:
    """Epoch seconds; a date without a zone is UTC (how the guichet stores them)."""
    return (value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)).timestamp()


class _Entry(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        return data


class TrustedCertificate(_Entry):
    """A client certificate of a component, named by its RFC 8705 thumbprint."""

    x5t_s256: str = Field(alias="x5t#S256")
    subject_dn: str = ""
    not_after: str | None = None


class Holder(_Entry):
    """The organisation holding a habilitation."""

    name: str = ""
    country: str | None = None
    siren: str | None = None
    siret: str | None = None
    registration_number: str | None = None


class SolutionRef(_Entry):
    id: int
    name: str
    software_name: str | None = None
    version: str | None = None


class ComponentEntry(_Entry):
    kind: str
    name: str
    certificates: list[TrustedCertificate] = Field(default_factory=list)


class HabilitationEntry(_Entry):
    """A valid habilitation: who, which role where, until when, relying on which others."""

    id: int
    role: str
    environment: str
    valid_until: dt.datetime
    holder: Holder = Field(default_factory=Holder)
    role_label: str | None = None
    valid_from: dt.datetime | None = None
    at_risk: bool = False
    at_risk_reason: str | None = None
    relies_on: list[int] = Field(default_factory=list)
    solution: SolutionRef | None = None
    components: list[ComponentEntry] = Field(default_factory=list)

    @field_validator("holder", mode="before")
    @classmethod
    def _holder_name(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_serializer("valid_until", "valid_from")
    def _iso(self, v: dt.datetime | None) -> str | None:
        return None if v is None else v.isoformat()

    def holds(self, x5t_s256: str) -> bool:
        return any(c.x5t_s256 == x5t_s256 for comp in self.components for c in comp.certificates)

    def expires_at(self) -> float:
        return timestamp(self.valid_until)


class TestAccess(_Entry):
    """Test certificates of a candidature under instruction, admitted in its environment only."""

    __test__ = False  # not a pytest test class despite the name

    candidature_id: int
    role: str
    environment: str
    holder: str = ""
    certificates: list[TrustedCertificate] = Field(default_factory=list)

    def holds(self, x5t_s256: str) -> bool:
        return any(c.x5t_s256 == x5t_s256 for c in self.certificates)


class TrustList(_Entry):
    """The claims of the signed trust list."""

    iss: str | None = None
    iat: int | None = None
    exp: int | None = None
    habilitations: list[HabilitationEntry] = Field(default_factory=list)
    test_access: list[TestAccess] = Field(default_factory=list)

    @classmethod
    def from_claims(cls, claims: Any) -> TrustList:
        """The typed list from verified JWT claims; ``ValueError`` (pydantic's) if malformed."""
        return claims if isinstance(claims, TrustList) else cls.model_validate(claims)

    def to_claims(self) -> dict[str, Any]:
        """The JSON claims to sign (``None`` kept where the guichet publishes ``null``)."""
        return self.to_json()

    def by_id(self) -> dict[int, HabilitationEntry]:
        return {h.id: h for h in self.habilitations}


__all__ = [
    "EDITOR_ROLES",
    "ENV_BAS",
    "ENV_PRODUCTION",
    "OPERATOR_ROLES",
    "ROLES",
    "ROLE_ELP",
    "ROLE_ELU",
    "ROLE_OSP",
    "ROLE_OSU",
    "TRUST_LIST_TYP",
    "ComponentEntry",
    "HabilitationEntry",
    "Holder",
    "SolutionRef",
    "TestAccess",
    "TrustList",
    "TrustedCertificate",
    "roles_for",
    "timestamp",
]
