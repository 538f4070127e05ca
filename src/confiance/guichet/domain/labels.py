"""Every French word a person reads for an internal value: statuses, roles, actions,
evidence kinds, form fields, file types. ONE table, so a page, a flash message and an API
``*_label`` always say the same thing, and no identifier (``a_completer``,
``accepter_chapitre``, ``nru_numbers``, ``application/pdf``) reaches a reader.

Keys are (vocabulary, value): values alone collide across vocabularies ("college" is a
status and an ANS role; "valide" is an evidence and a habilitation status).
"""

from __future__ import annotations

from enum import StrEnum

from .model import (
    AnsRole,
    CandidatureStatus,
    ChapterStatus,
    ComponentKind,
    Environment,
    EvidenceKind,
    EvidenceStatus,
    HabilitationState,
    HabilitationStatus,
    Level,
    OrgRole,
    Role,
    SolutionKind,
)
from .pentest import AppType, Severity

ACTION = "action"  # transition and decision names
FIELD = "field"  # input field names (form errors)
MEDIA = "media"  # MIME types of deposited files
STEP_STATUS = "step_status"

LABELS: dict[type[StrEnum] | str, dict[str, str]] = {
    CandidatureStatus: {
        "brouillon": "brouillon",
        "formulaire_soumis": "formulaire soumis",
        "depot_preuves": "dépôt de preuves",
        "college": "au collège",
        "accordee": "habilitation accordée",
        "refusee": "refusée",
        "abandonnee": "abandonnée",
    },
    ChapterStatus: {
        "a_completer": "à compléter",
        "soumis": "soumis à l'ANS",
        "accepte": "accepté",
        "rejete": "rejeté",
        "complement_demande": "complément demandé",
        "a_revoir": "à revoir",
    },
    EvidenceStatus: {"valide": "déposée", "a_revoir": "à revoir", "remplacee": "remplacée"},
    HabilitationStatus: {
        "valide": "valide",
        "suspendue": "suspendue",
        "retiree": "retirée",
        "expiree": "expirée",
        "renouvelee": "renouvelée",
    },
    HabilitationState: {
        "valide": "valide",
        "a_risque": "à risque",
        "suspendue": "suspendue",
        "retiree": "retirée",
        "expiree": "expirée",
        "renouvelee": "renouvelée",
    },
    STEP_STATUS: {"fait": "fait", "a_faire": "à faire"},
    Role: {
        "ELU": "Éditeur de Logiciel Utilisateur",
        "ELP": "Éditeur de Logiciel Proxy e-Santé",
        "OSU": "Opérateur de Service Utilisateur",
        "OSP": "Opérateur de Service Proxy e-Santé",
    },
    AnsRole: {"verificateur": "vérificateur", "college": "membre du collège", "administrateur": "administrateur"},
    OrgRole: {"mandataire": "mandataire", "representant": "représentant", "salarie": "salarié"},
    Level: {"communaute": "Communauté", "edc": "Espace de Confiance"},
    Environment: {"BAS": "bac à sable (BAS)", "production": "production"},
    SolutionKind: {"logiciel_utilisateur": "logiciel utilisateur", "proxy": "Proxy e-Santé"},
    ComponentKind: {
        "LPS": "LPS — logiciel utilisateur",
        "PROXY": "Proxy e-Santé",
        "EAI": "EAI — module métier embarqué dans le proxy",
    },
    AppType: {
        "application_web": "Application web",
        "application_mobile": "Application mobile",
        "client_lourd_3_tiers_ou_plus": "Client lourd ≥ 3 tiers",
        "client_lourd_moins_de_3_tiers": "Client lourd < 3 tiers",
    },
    Severity: {"haute": "haute", "moyenne": "moyenne", "faible": "faible"},
    EvidenceKind: {
        "test_intrusion": "Test d'intrusion",
        "rapport_conformite": "Rapport de conformité",
        "attestation_cnda": "Attestation CNDA",
        "certificat_test": "Certificat de test",
        "certificat_production": "Certificat de production",
        "document": "Document",
    },
    ACTION: {
        "soumettre_formulaire": "soumettre le formulaire",
        "valider_formulaire": "valider le formulaire",
        "renvoyer_formulaire": "renvoyer le formulaire au candidat",
        "transmettre_college": "transmettre au collège",
        "rouvrir_preuves": "rouvrir le dépôt de preuves",
        "accorder": "accorder l'habilitation",
        "refuser": "refuser la candidature",
        "abandonner": "abandonner la candidature",
        "soumettre_chapitre": "soumettre le chapitre",
        "accepter_chapitre": "accepter le chapitre",
        "rejeter_chapitre": "rejeter le chapitre",
        "demander_complement": "demander un complément",
        "signaler_modification": "signaler une modification",
        "suspendre": "suspendre",
        "retablir": "rétablir",
        "retirer": "retirer",
        "candidat": "le candidat",
        "verificateur": "un vérificateur",
        "college": "le collège",
        "plateforme": "la plateforme",
    },
    FIELD: {
        "email": "Adresse électronique",
        "name": "Nom",
        "password": "Mot de passe",
        "organisation": "Structure",
        "organisation.name": "Raison sociale",
        "organisation.country": "Pays d'immatriculation",
        "organisation.siren": "SIREN",
        "organisation.siret": "SIRET",
        "organisation.registration_number": "Numéro d'immatriculation",
        "role": "Profil",
        "level": "Niveau",
        "path": "Parcours",
        "solution_id": "Solution",
        "proxy_solution_id": "Proxy e-Santé utilisé",
        "osp_habilitation_id": "Opérateur de proxy",
        "software_name": "Nom du logiciel",
        "software_version": "Version",
        "description": "Description",
        "nru_numbers": "Numéros NRU",
        "maturity": "Prérequis de maturité",
        "components": "Composants",
        "kind": "Type",
        "reason": "Motif",
        "decision": "Décision",
        "version": "Version de l'enregistrement",
        "file": "Fichier",
        "csr": "Demande de certificat (CSR)",
        "component_id": "Composant",
        "pentest": "Test d'intrusion",
        "requirement_id": "Exigence",
    },
    MEDIA: {
        "application/pdf": "PDF",
        "image/png": "image PNG",
        "image/jpeg": "image JPEG",
        "application/json": "JSON",
        "application/jose": "jeton signé (JOSE)",
        "text/plain": "texte",
    },
}

ROLE_LABELS: dict[Role, str] = {Role(k): v for k, v in LABELS[Role].items()}


def label(value: StrEnum) -> str:
    """The French label of an enum member."""
    return LABELS[type(value)][value.value]


def label_of(vocabulary: type[StrEnum] | str, value: str) -> str:
    """The label of a raw value in a vocabulary; unknown values are returned as they are
    (a value from a newer database must not break a page)."""
    return LABELS.get(vocabulary, {}).get(str(value), str(value))


def status_labels() -> dict[str, str]:
    """Every status value → its label, for the badges of the web UI (status values that
    appear in several vocabularies have the same label in each)."""
    out: dict[str, str] = {}
    for vocab in (CandidatureStatus, ChapterStatus, HabilitationStatus, HabilitationState, STEP_STATUS):
        out.update(LABELS[vocab])
    return out
