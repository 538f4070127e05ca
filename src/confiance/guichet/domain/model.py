"""Vocabulary of the guichet: roles, levels, account kinds, components, statuses."""

from __future__ import annotations

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


ROLE_LABELS = {
    Role.ELU: "Éditeur de Logiciel Utilisateur",
    Role.ELP: "Éditeur de Logiciel Proxy e-Santé",
    Role.OSU: "Opérateur de Service Utilisateur",
    Role.OSP: "Opérateur de Service Proxy e-Santé",
}


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

    @property
    def label(self) -> str:
        """The French word users read (values are ASCII identifiers)."""
        return {"retiree": "retirée", "expiree": "expirée", "renouvelee": "renouvelée"}.get(self.value, self.value)
