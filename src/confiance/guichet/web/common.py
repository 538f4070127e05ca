"""Helpers shared by the pages: calling the service, turning its refusals into French flashes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from ..domain.labels import LABELS, status_labels
from ..domain.model import (
    AnsRole,
    CandidatureStatus,
    ChapterStatus,
    ComponentKind,
    EvidenceKind,
    EvidenceStatus,
    HabilitationState,
    HabilitationStatus,
    OrgRole,
    Role,
)
from ..domain.parcours import StepStatus
from ..domain.workflow import IN_PROGRESS
from ..services import ServiceError
from .core import Flash, Forbidden, NotFound

T = TypeVar("T")

FIELD_LABELS = {
    "email": "adresse électronique",
    "name": "nom",
    "password": "mot de passe",
    "software_name": "nom du logiciel",
    "software_version": "version",
    "solution_id": "solution",
    "role": "profil",
    "reason": "motif",
    "provider": "prestataire",
    "auditor": "auditeur",
    "report_date": "date du rapport",
    "application_name": "nom de l'application",
    "application_version": "version de l'application",
    "application_type": "type d'application",
    "criteria": "critères",
    "summary": "première page",
    "result": "résultat",
    "number": "numéro",
    "issued_on": "date de délivrance",
    "components": "composants",
}


def _problem(kind: str, loc: list[str]) -> str:
    """What is wrong with one field, in French (pydantic error type → sentence)."""
    if kind in ("missing", "string_too_short"):
        return "champ obligatoire"
    if kind == "string_too_long":
        return "texte trop long"
    if kind == "string_pattern_mismatch":
        if loc and loc[-1] == "email":
            return "adresse électronique invalide"
        hint = " (lettres sans accent, chiffres, espace, . _ -)" if loc and loc[-1] == "name" else ""
        return f"format invalide{hint}"
    if kind in ("enum", "literal_error"):
        return "valeur non proposée"
    if kind.startswith("date") or kind.startswith("datetime"):
        return "date invalide"
    if kind.startswith("int") or kind.startswith("float"):
        return "nombre attendu"
    return "valeur invalide"


def validation_messages(exc: ValidationError) -> list[str]:
    """Pydantic errors in French, naming the field as the form labels it."""
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not isinstance(p, int)]
        label = " › ".join(FIELD_LABELS.get(p, p) for p in loc) or "formulaire"
        out.append(f"{label} : {_problem(err['type'], loc)}")
    return out


def field_errors(exc: ValidationError, fields: dict[tuple[str, ...], str]) -> dict[str, str]:
    """Every pydantic error, keyed by the form field it belongs to (``fields`` maps a model
    location to the input's name), so a page shows each beside its field, all at once."""
    out: dict[str, str] = {}
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"] if not isinstance(p, int))
        name = fields.get(loc, "_form")
        out.setdefault(name, _problem(err["type"], list(loc)))
    return out


def attempt(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T | None, Flash | None]:
    """Run a service call; a refusal becomes an error flash (the service changed nothing)."""
    try:
        return fn(*args, **kwargs), None
    except ServiceError as exc:
        problems = exc.extra.get("problems")
        details = [str(p) for p in problems] if isinstance(problems, list) else []
        text = exc.message[:1].upper() + exc.message[1:]
        if details and ":" in text:
            text = text.split(":", 1)[0] + " :"
        return None, Flash("error", text, details)
    except ValidationError as exc:
        return None, Flash("error", "Formulaire incomplet ou invalide :", validation_messages(exc))


def read_or_raise(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """For page loads: 404/403 from the service become the matching error pages."""
    try:
        return fn(*args, **kwargs)
    except ServiceError as exc:
        if exc.status == 404:
            raise NotFound from exc
        if exc.status in (401, 403):
            raise Forbidden from exc
        raise


EVIDENCE_LABELS = LABELS[EvidenceKind]

STATUS_LABELS = status_labels()

ROLE_LABELS_STR = LABELS[Role]

COMMITMENTS = [
    ("respect_referentiels_cgu", "Je m'engage à respecter les référentiels Pro Santé Connect et les CGU."),
    ("exactitude_informations", "J'atteste l'exactitude des informations, des preuves et des contrôles fournis."),
    ("acceptation_audits", "J'accepte le processus d'audit de l'ANS."),
]

MATURITY = [
    ("mtls", "Authentification mTLS maîtrisée"),
    ("tests_bas", "Tests réalisés dans le bac à sable (BAS)"),
    ("traces", "Traçabilité des accès en place"),
    ("supervision", "Supervision et gestion des incidents"),
]

PATHS = [
    ("trust_space", "Raccordement à l'Espace de confiance"),
    ("standard", "Espace communautaire : raccordement standard"),
    ("direct", "Espace communautaire : raccordement direct d'une solution déjà validée"),
    ("delegation", "Raccordement pour la délégation à un FI tiers"),
]

COMPONENT_KINDS = list(LABELS[ComponentKind].items())

ANS_ROLE_LABELS = LABELS[AnsRole]
ORG_ROLE_LABELS = LABELS[OrgRole]

# The colour of a status badge (CSS class), by status value.
BADGE_TONES: dict[str, str] = {
    CandidatureStatus.DRAFT: "muted",
    CandidatureStatus.FORM_SUBMITTED: "info",
    CandidatureStatus.EVIDENCE: "info",
    CandidatureStatus.COLLEGE: "warn",
    CandidatureStatus.GRANTED: "ok",
    CandidatureStatus.REFUSED: "bad",
    CandidatureStatus.ABANDONED: "muted",
    ChapterStatus.OPEN: "muted",
    ChapterStatus.SUBMITTED: "info",
    ChapterStatus.ACCEPTED: "ok",
    ChapterStatus.REJECTED: "bad",
    ChapterStatus.COMPLEMENT: "warn",
    ChapterStatus.TO_REVIEW: "warn",
    HabilitationState.VALID: "ok",
    HabilitationState.SUSPENDED: "bad",
    HabilitationState.WITHDRAWN: "bad",
    HabilitationState.EXPIRED: "muted",
    HabilitationState.AT_RISK: "warn",
    HabilitationState.RENEWED: "muted",
    StepStatus.DONE: "ok",
    StepStatus.TODO: "muted",
}

# Status vocabularies for the templates, so pages compare with names, never with literals.
TEMPLATE_ENUMS: dict[str, Any] = {
    "CS": CandidatureStatus,
    "CH": ChapterStatus,
    "HS": HabilitationStatus,
    "HST": HabilitationState,
    "ES": EvidenceStatus,
    "STEP": StepStatus,
    "IN_PROGRESS": IN_PROGRESS,
}
