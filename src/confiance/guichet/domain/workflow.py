"""The guichet's state machines.

Candidature: the three stages of the guichet (administrative form → evidence → college
decision). Chapter: the review cycle of one evidence chapter. Every transition is a row of a
table saying who may fire it; anything else is an ``IllegalTransition`` and changes nothing.
The service records each fired transition in the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .errors import IllegalTransition
from .labels import ACTION, label, label_of
from .model import CandidatureStatus as CandidatureStatus
from .model import ChapterStatus as ChapterStatus


class Actor(StrEnum):
    CANDIDATE = "candidat"
    VERIFIER = "verificateur"
    COLLEGE = "college"
    SYSTEM = "plateforme"


# A candidature still in progress: at most one per (organisation, role, solution), and the
# ones a new référentiel version must be compared against.
IN_PROGRESS = frozenset(
    {CandidatureStatus.DRAFT, CandidatureStatus.FORM_SUBMITTED, CandidatureStatus.EVIDENCE, CandidatureStatus.COLLEGE}
)


@dataclass(frozen=True)
class Transition:
    name: str
    source: frozenset[StrEnum]
    target: StrEnum
    actors: frozenset[Actor]
    needs_reason: bool = False


def _t(name: str, src: set[StrEnum], dst: StrEnum, actors: set[Actor], reason: bool = False) -> Transition:
    return Transition(name, frozenset(src), dst, frozenset(actors), reason)


S = CandidatureStatus
CANDIDATURE_TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in [
        _t("soumettre_formulaire", {S.DRAFT}, S.FORM_SUBMITTED, {Actor.CANDIDATE}),
        _t("valider_formulaire", {S.FORM_SUBMITTED}, S.EVIDENCE, {Actor.VERIFIER}),
        _t("renvoyer_formulaire", {S.FORM_SUBMITTED}, S.DRAFT, {Actor.VERIFIER}, reason=True),
        _t("transmettre_college", {S.EVIDENCE}, S.COLLEGE, {Actor.SYSTEM}),
        _t("rouvrir_preuves", {S.COLLEGE}, S.EVIDENCE, {Actor.SYSTEM}, reason=True),
        _t("accorder", {S.COLLEGE}, S.GRANTED, {Actor.COLLEGE}, reason=False),
        _t("refuser", {S.COLLEGE}, S.REFUSED, {Actor.COLLEGE}, reason=True),
        _t("abandonner", {S.DRAFT, S.FORM_SUBMITTED, S.EVIDENCE, S.COLLEGE}, S.ABANDONED, {Actor.CANDIDATE}),
    ]
}


C = ChapterStatus
CHAPTER_TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in [
        _t("soumettre_chapitre", {C.OPEN, C.REJECTED, C.COMPLEMENT, C.TO_REVIEW}, C.SUBMITTED, {Actor.CANDIDATE}),
        _t("accepter_chapitre", {C.SUBMITTED}, C.ACCEPTED, {Actor.VERIFIER}),
        _t("rejeter_chapitre", {C.SUBMITTED}, C.REJECTED, {Actor.VERIFIER}, reason=True),
        _t("demander_complement", {C.SUBMITTED}, C.COMPLEMENT, {Actor.VERIFIER}, reason=True),
        _t("signaler_modification", {C.SUBMITTED, C.ACCEPTED}, C.TO_REVIEW, {Actor.SYSTEM}, reason=True),
    ]
}

EDITABLE_CHAPTER = frozenset({C.OPEN, C.REJECTED, C.COMPLEMENT, C.TO_REVIEW})


def fire(table: dict[str, Transition], name: str, current: StrEnum, actor: Actor, reason: str | None = None) -> StrEnum:
    """Return the target state of transition ``name`` or raise ``IllegalTransition`` (French message)."""
    t = table.get(name)
    what = label_of(ACTION, name)
    if t is None:
        raise IllegalTransition("transition_inconnue", f"action inconnue : {what}")
    if actor not in t.actors:
        raise IllegalTransition(
            "transition_interdite",
            f"l'action « {what} » est réservée à : {', '.join(sorted(label_of(ACTION, a) for a in t.actors))}",
        )
    if current not in t.source:
        raise IllegalTransition(
            "transition_impossible",
            f"l'action « {what} » est impossible depuis l'état « {label(current)} » "
            f"(possible depuis : {', '.join(sorted(label(s) for s in t.source))})",
        )
    if t.needs_reason and not (reason and reason.strip()):
        raise IllegalTransition("motif_requis", f"l'action « {what} » exige un motif")
    return t.target


def can_edit_form(status: CandidatureStatus) -> bool:
    """The administrative form is editable until the decision; edits after deposit flag evidence."""
    return status in (S.DRAFT, S.EVIDENCE, S.COLLEGE)
