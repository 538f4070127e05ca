"""Fictitious health professionals ("MIE de test") and the PSC claim set built from them.

The data file mirrors what PSC returns under ``SubjectRefPro`` (RPPS "exercices" and
"activités"), so an LPS that reads PSC userinfo reads ours unchanged. Every identity is
marked fictitious in the claims themselves (``fictif``) and in its names.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from confiance.core.config import ConfigError, StrictModel, format_validation_error

from .acr import AcrLevel, Channel
from .config import EcpsPolicy

NATIONAL_ID_RE = re.compile(r"^8[0-9]{11}$")
# Keycloak federated users get ``f:<provider id>:<external id>`` subjects; PSC's look the same.
SUB_PREFIX = "f:9c5e1c07-1d4b-4b3e-8d0a-5a1e3c0f0b1e:"
PROFESSIONS = {
    "10": "Médecin",
    "21": "Pharmacien",
    "26": "Audioprothésiste",
    "28": "Opticien-lunetier",
    "40": "Chirurgien-dentiste",
    "50": "Sage-femme",
    "60": "Infirmier",
    "70": "Masseur-kinésithérapeute",
    "80": "Pédicure-podologue",
    "91": "Orthophoniste",
    "96": "Manipulateur ERM",
}
TRE_G15_OID = "1.2.250.1.71.1.2.7"
TRE_R02_OID = "1.2.250.1.71.4.2.4"


class Activity(StrictModel):
    codeModeExercice: str | None = None
    codeSecteurDactivite: str | None = None
    codeSectionPharmacien: str | None = None
    codeRole: str | None = None
    numeroSiretSite: str | None = None
    numeroFinessSite: str | None = None
    numeroFinessetablissementJuridique: str | None = None
    identifiantTechniqueDeLaStructure: str | None = None
    raisonSocialeSite: str | None = None
    enseigneCommercialeSite: str | None = None
    complementDestinataire: str | None = None
    complementPointGeographique: str | None = None
    numeroVoie: str | None = None
    indiceRepetitionVoie: str | None = None
    codeTypeDeVoie: str | None = None
    libelleVoie: str | None = None
    mentionDistribution: str | None = None
    bureauCedex: str | None = None
    codePostal: str | None = None
    codeCommune: str | None = None
    codePays: str | None = None
    telephone: str | None = None
    telephone2: str | None = None
    telecopie: str | None = None
    adresseEMail: str | None = None
    codeDepartement: str | None = None
    ancienIdentifiantDeLaStructure: str | None = None
    autoriteDenregistrement: str | None = None
    codeGenreActivite: str | None = None


class Exercice(StrictModel):
    codeProfession: str = Field(pattern=r"^[0-9]{2}$")
    codeCategorieProfessionnelle: str = "C"
    codeCiviliteDexercice: str | None = None
    codeTypeSavoirFaire: str | None = None
    codeSavoirFaire: str | None = None
    nomDexercice: str
    prenomDexercice: str
    activities: list[Activity] = Field(default_factory=list)


DEFAULT_MEANS: dict[Channel, AcrLevel] = {"CARD": "eidas1", "MOBILE": "eidas1"}


class Identity(StrictModel):
    """One fictitious professional; ``ecps`` overrides the default e-CPS policy."""

    national_id: str = Field(pattern=NATIONAL_ID_RE.pattern)
    civilite: str = Field("M", max_length=8)
    given_name: str = Field(min_length=1, max_length=100)
    family_name: str = Field(min_length=1, max_length=100)
    email: str | None = None
    exercices: list[Exercice] = Field(min_length=1)
    ecps: EcpsPolicy | None = None
    # Means of authentication: channel -> eIDAS level PSC answers with (acr). A channel
    # absent here is one this professional cannot use (e.g. no CPS card: no CARD).
    auth_means: dict[Channel, AcrLevel] = Field(default_factory=lambda: dict(DEFAULT_MEANS), min_length=1)

    @property
    def sub(self) -> str:
        return SUB_PREFIX + self.national_id

    def summary(self) -> dict[str, Any]:
        """The short form written to endpoints.json and shown by the CLI."""
        ex = self.exercices[0]
        return {
            "national_id": self.national_id,
            "given_name": self.given_name,
            "family_name": self.family_name,
            "profession": PROFESSIONS.get(ex.codeProfession, ex.codeProfession),
            "codeProfession": ex.codeProfession,
            "auth_means": dict(self.auth_means),
        }

    def claims(self) -> dict[str, Any]:
        """The PSC userinfo claim set (everything but ``sub`` is identity data)."""
        first = self.exercices[0]
        act = first.activities[0] if first.activities else Activity()
        rpps = self.national_id[1:]
        return {
            "sub": self.sub,
            "SubjectNameID": self.national_id,
            "preferred_username": self.national_id,
            "given_name": self.given_name,
            "family_name": self.family_name,
            "email_verified": False,
            "SubjectOrganization": act.raisonSocialeSite or "",
            "SubjectOrganizationID": act.numeroFinessSite or act.numeroSiretSite or "",
            "SubjectRole": sorted({f"{e.codeProfession}^{TRE_G15_OID}" for e in self.exercices}),
            "Secteur_Activite": f"{act.codeSecteurDactivite}^{TRE_R02_OID}" if act.codeSecteurDactivite else "",
            "Mode_Acces_Raison": "",
            "Acces_Regulation_Medicale": "",
            "UITVersion": "1.0",
            "Palier_Authentification": "APPPRIP3^1.2.250.1.213.1.5.1.1.1",
            "PSI_Locale": "1.2.250.1.213.1.4.2",
            "otherIds": [{"identifiant": rpps, "origine": "RPPS", "qualite": 1}],
            "SubjectRefPro": {
                "codeCivilite": self.civilite,
                "exercices": [e.model_dump() for e in self.exercices],
            },
            "fictif": True,
        }


def parse_identities(data: Any, source: str) -> list[Identity]:
    if not isinstance(data, list):
        raise ConfigError(f"{source}: une liste d'identités est attendue")
    out: list[Identity] = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        try:
            ident = Identity.model_validate(item)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"{source}[{i}]")) from None
        if ident.national_id in seen:
            raise ConfigError(f"{source}[{i}]: identifiant national en double {ident.national_id}")
        seen.add(ident.national_id)
        out.append(ident)
    return out


def seeded_identities() -> list[Identity]:
    text = resources.files("confiance.psc").joinpath("data/identities.yaml").read_text(encoding="utf-8")
    return parse_identities(yaml.safe_load(text), "identities.yaml")


def load_identities_file(path: Path) -> list[Identity]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"fichier d'identités introuvable: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML invalide dans {path}: {exc}") from None
    return parse_identities(data, str(path))
