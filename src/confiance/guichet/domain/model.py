"""Vocabulary of the guichet: roles, levels, account kinds, components, statuses."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum


class Role(StrEnum):
    """The four EDC PSC actors; each habilitation is for exactly one of them."""

    ELU = "ELU"  # Éditeur de Logiciel Utilisateur
    ELP = "ELP"  # Éditeur de Logiciel Proxy e-Santé
    OSU = "OSU"  # Opérateur de Service Utilisateur
    OSP = "OSP"  # Opérateur de Service Proxy e-Santé

    @property
    def is_editor(self) -> bool:
        return self in (Role.ELU, Role.ELP)

    @property
    def is_operator(self) -> bool:
        return not self.is_editor

    @property
    def is_proxy(self) -> bool:
        return self in (Role.ELP, Role.OSP)


class Level(StrEnum):
    COMMUNAUTE = "communaute"
    EDC = "edc"


class Environment(StrEnum):
    BAS = "BAS"  # bac à sable: editors
    PRODUCTION = "production"  # operators


def environment_for(role: Role) -> Environment:
    """Editors are habilitated in the sandbox, operators in production."""
    return Environment.BAS if role.is_editor else Environment.PRODUCTION


class OrgRole(StrEnum):
    """Company-side accounts on the platform."""

    MANDATAIRE = "mandataire"
    REPRESENTANT = "representant"
    SALARIE = "salarie"


class AnsRole(StrEnum):
    """ANS-side roles."""

    VERIFIER = "verificateur"
    COLLEGE = "college"
    ADMIN = "administrateur"


class ComponentKind(StrEnum):
    LPS = "LPS"  # user software
    PROXY = "PROXY"  # Proxy e-Santé
    EAI = "EAI"  # business add-on embedded in a proxy


def needs_cnda(kinds: list[ComponentKind] | set[ComponentKind]) -> bool:
    """The LPS and business add-ons need CNDA homologation; a bare proxy does not."""
    return any(k in (ComponentKind.LPS, ComponentKind.EAI) for k in kinds)


class SolutionKind(StrEnum):
    USER = "logiciel_utilisateur"
    PROXY = "proxy"


def solution_kind_for(role: Role) -> SolutionKind:
    return SolutionKind.PROXY if role.is_proxy else SolutionKind.USER


class EvidenceKind(StrEnum):
    PENTEST = "test_intrusion"
    CONFORMITY = "rapport_conformite"
    CNDA = "attestation_cnda"
    TEST_CERTIFICATE = "certificat_test"
    PRODUCTION_CERTIFICATE = "certificat_production"
    DOCUMENT = "document"


class HabilitationStatus(StrEnum):
    VALID = "valide"
    SUSPENDED = "suspendue"
    WITHDRAWN = "retiree"
    EXPIRED = "expiree"
    RENEWED = "renouvelee"


class CandidatureStatus(StrEnum):
    DRAFT = "brouillon"  # stage 1: administrative form being filled
    FORM_SUBMITTED = "formulaire_soumis"  # waiting for a verifier
    EVIDENCE = "depot_preuves"  # stage 2: form validated, evidence deposit open
    COLLEGE = "college"  # stage 3: every chapter accepted, waiting for the college
    GRANTED = "accordee"
    REFUSED = "refusee"
    ABANDONED = "abandonnee"


class ChapterStatus(StrEnum):
    OPEN = "a_completer"  # the candidate deposits evidence
    SUBMITTED = "soumis"  # complete and submitted: a verifier reviews it
    ACCEPTED = "accepte"
    REJECTED = "rejete"  # with reasons; the candidate may deposit again and resubmit
    COMPLEMENT = "complement_demande"  # with reasons; same as rejected, softer
    TO_REVIEW = "a_revoir"  # the declaration changed after deposit: affected evidence must be reviewed again


class EvidenceStatus(StrEnum):
    VALID = "valide"  # current evidence for its requirement
    TO_REVIEW = "a_revoir"  # the declaration changed after deposit
    REPLACED = "remplacee"  # superseded by a later deposit


class HabilitationState(StrEnum):
    """What a reader is shown for a habilitation: its status, or "at risk" when what it
    relies on is no longer valid, or "expired" once past its date before the sweep ran."""

    VALID = "valide"
    AT_RISK = "a_risque"
    SUSPENDED = "suspendue"
    WITHDRAWN = "retiree"
    EXPIRED = "expiree"
    RENEWED = "renouvelee"


def habilitation_state(status: str, valid_until: dt.datetime, at_risk: bool, now: dt.datetime) -> HabilitationState:
    """The one rule for what a habilitation is shown as: past its date it is expired even
    before the sweep has run; a valid one relying on an invalid one is at risk."""
    if status == HabilitationStatus.VALID:
        if valid_until <= now:
            return HabilitationState.EXPIRED
        return HabilitationState.AT_RISK if at_risk else HabilitationState.VALID
    return HabilitationState(status)
