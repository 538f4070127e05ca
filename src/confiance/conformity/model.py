"""Check results and their evidence (pure: no I/O).

Evidence is what makes a report worth signing: each check keeps the requests and responses
it relied on. Tokens, secrets, cookies' values are redacted before anything is stored, so a
report can be deposited at the guichet without leaking credentials.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

MAX_BODY_CHARS = 2000


class Status(StrEnum):
    """Outcome of one check.

    ``unverifiable`` means the tool could not establish the fact (e.g. a sandbox admin
    endpoint is missing); ``not_applicable`` means the proxy does not offer the optional
    feature (e.g. the authorization-code flow). Neither counts as passed.
    """

    PASS = "pass"
    FAIL = "fail"
    UNVERIFIABLE = "unverifiable"
    NOT_APPLICABLE = "not_applicable"


STATUS_LABELS_FR = {
    Status.PASS: "réussi",
    Status.FAIL: "échoué",
    Status.UNVERIFIABLE: "non vérifiable",
    Status.NOT_APPLICABLE: "non applicable",
}

_SECRET_KEYS = re.compile(
    r"(token|secret|password|assertion|authorization|cookie|code_verifier|signature|auth_req_id|^code$)",
    re.IGNORECASE,
)
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER_RE = re.compile(r"(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# Keys whose values are identifiers the report must show (they are what the checks compare).
_KEEP_KEYS = {"proxy_session_id", "session_state", "set-cookie", "cookie"}  # cookies are masked by http.py


def redact_text(text: str) -> str:
    """Mask JWTs and Authorization credentials inside free text."""
    text = _JWT_RE.sub("«jeton masqué»", text)
    return _BEARER_RE.sub(lambda m: f"{m.group(1)} «masqué»", text)


def redact(value: Any, key: str | None = None) -> Any:
    """Recursively mask secrets: values under secret-looking keys, JWTs, bearer credentials."""
    if key is not None and key.lower() not in _KEEP_KEYS and _SECRET_KEYS.search(key):
        if isinstance(value, str | bytes) and value:
            return "«masqué»"
        if isinstance(value, dict | list):
            return "«masqué»"
    if isinstance(value, dict):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def truncate(text: str, limit: int = MAX_BODY_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} caractères de plus)"


@dataclass
class Evidence:
    """What a check saw: exchanges with the proxy or a service, notes, trace excerpts."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.items.append({"kind": "note", "text": text})

    def data(self, label: str, value: Any) -> None:
        self.items.append({"kind": "data", "label": label, "value": redact(value)})

    def exchange(self, record: dict[str, Any]) -> None:
        self.items.append({"kind": "http", **redact(record)})


@dataclass
class CheckResult:
    id: str
    name: str
    requirement: str
    status: Status
    reason: str = ""
    evidence: Evidence = field(default_factory=Evidence)
    duration_ms: int = 0
    # Optional checks need a setup the operator may not provide (short timeouts, fault
    # services): left "non vérifiable" they do not block "conforme"; failed, they do.
    mandatory: bool = True

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "requirement": self.requirement,
            "passed": self.passed,
            "status": self.status.value,
            "mandatory": self.mandatory,
            "reason": self.reason,
            "duration_ms": self.duration_ms,
            "evidence": self.evidence.items,
        }


class CheckFailed(Exception):
    """Raised inside a check: the requirement is not met (message in French)."""


class Unverifiable(Exception):
    """Raised inside a check: the fact cannot be established with what is exposed."""


class NotApplicable(Exception):
    """Raised inside a check: the proxy does not offer this optional feature."""


def require(condition: bool, message: str) -> None:
    """Assert a requirement of the contract; ``message`` says what is wrong, in French."""
    if not condition:
        raise CheckFailed(message)
