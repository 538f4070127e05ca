"""Conformity report (rapport de conformité) evidence for proxy editors.

The conformity tool runs its scenarios against a proxy and signs its report as a compact
JWS whose payload is the JSON::

    {"tool": {"name", "version"}, "proxy": {"url", "version"}, "date": "YYYY-MM-DDThh:mm:ssZ",
     "checks": [{"id", "name", "requirement", "passed": bool, "evidence"}],
     "summary": {"passed": int, "failed": int, ...}}

(extra keys such as ``context``, ``conforme``, a check's ``status`` are accepted; a check whose
``status`` is ``not_applicable`` does not count as failed.)

The guichet verifies the signature against the tool's published keys (a configured JWKS:
verification is pluggable), then the content: recent date, the candidature's proxy
version, every check passed, and a summary consistent with the checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from .errors import DomainError


class ReportVerifier(Protocol):
    """Checks a signed report and returns its payload bytes, or raises ``DomainError``."""

    def verify(self, token: str) -> bytes: ...


@dataclass(frozen=True)
class ConformityVerdict:
    accepted: bool
    problems: tuple[str, ...]
    report: dict[str, Any]


def parse_payload(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DomainError("rapport_illisible", "le rapport de conformité n'est pas un JSON valide") from exc
    if not isinstance(data, dict):
        raise DomainError("rapport_illisible", "le rapport de conformité doit être un objet JSON")
    return data


def _get(d: Mapping[str, Any], key: str, kind: type) -> Any:
    v = d.get(key)
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise DomainError("rapport_incomplet", f"champ « {key} » absent ou mal typé dans le rapport de conformité")
    return v


def check_report(data: Mapping[str, Any], *, proxy_version: str, today: date, max_age_days: int) -> ConformityVerdict:
    problems: list[str] = []
    tool = _get(data, "tool", dict)
    _get(tool, "name", str)
    _get(tool, "version", str)
    proxy = _get(data, "proxy", dict)
    version = _get(proxy, "version", str)
    _get(proxy, "url", str)
    raw_date = _get(data, "date", str)
    try:
        when = datetime.fromisoformat(raw_date.replace("Z", "+00:00"))
    except ValueError as exc:
        raise DomainError("rapport_incomplet", f"date du rapport illisible : {raw_date!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    age = (today - when.astimezone(UTC).date()).days
    if age < 0:
        problems.append("le rapport de conformité est daté dans le futur")
    elif age > max_age_days:
        problems.append(f"le rapport de conformité date de {age} jours ({max_age_days} jours au plus)")
    if version.strip() != proxy_version.strip():
        problems.append(
            f"le rapport porte sur la version {version} du proxy, la candidature sur la version {proxy_version}"
        )
    checks = _get(data, "checks", list)
    if not checks:
        problems.append("le rapport ne contient aucun contrôle")
    failed = []
    passed_count = 0
    for c in checks:
        if not isinstance(c, dict) or not isinstance(c.get("id"), str) or not isinstance(c.get("passed"), bool):
            raise DomainError(
                "rapport_incomplet", "chaque contrôle doit avoir un « id » texte et un « passed » booléen"
            )
        if c["passed"]:
            passed_count += 1
        elif c.get("status") != "not_applicable":  # the tool may mark a check not applicable to this proxy
            if c.get("status") == "unverifiable" and c.get("mandatory") is False:
                continue  # an optional check whose setup the operator did not provide
            failed.append(c["id"])
    if failed:
        problems.append("contrôles en échec ou non vérifiables : " + ", ".join(failed))
    if passed_count == 0:
        problems.append("aucun contrôle réussi")
    summary = _get(data, "summary", dict)
    if _get(summary, "passed", int) != passed_count or _get(summary, "failed", int) > len(failed):
        problems.append("le résumé du rapport ne correspond pas à ses contrôles")
    if "conforme" in data and data["conforme"] is not True and not failed:
        problems.append("le rapport ne conclut pas à la conformité")
    return ConformityVerdict(not problems, tuple(problems), dict(data))
