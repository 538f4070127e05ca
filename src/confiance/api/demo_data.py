"""Synthetic patients and documents for the demo téléservices (every one fictitious).

Names carry a ``-TEST`` suffix and every record says ``fictif: true``, so a demo result
cannot be mistaken for a real patient; INS numbers are well-formed NIRs (with their
control key) so software that validates them accepts the demo data.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

INS_OID = "1.2.250.1.213.1.4.8"  # OID of the INS-NIR
INS_SYSTEM = f"urn:oid:{INS_OID}"


def nir_key(nir13: str) -> str:
    """NIR control key: 97 - (number mod 97), Corsica letters mapped as the INSEE rule says."""
    digits = nir13.replace("2A", "19").replace("2B", "18")
    return f"{97 - int(digits) % 97:02d}"


def normalize_trait(value: str) -> str:
    """Upper-case, accents removed, separators collapsed: how INSi compares traits."""
    text = unicodedata.normalize("NFKD", value)
    text = "".join(c for c in text if not unicodedata.combining(c)).upper()
    for sep in ("-", "'", "  "):
        text = text.replace(sep, " ")
    return " ".join(text.split())


@dataclass(frozen=True)
class Patient:
    nir13: str
    birth_name: str
    given_names: str
    sex: str  # "M" | "F"
    birth_date: str  # YYYY-MM-DD
    birth_place: str  # INSEE code of the commune

    @property
    def ins(self) -> str:
        return self.nir13 + nir_key(self.nir13)

    def identity(self) -> dict[str, object]:
        return {
            "matriculeINS": {"valeur": self.ins, "oid": INS_OID, "cle": self.ins[-2:]},
            "nomNaissance": self.birth_name,
            "prenoms": self.given_names.split(),
            "premierPrenom": self.given_names.split()[0],
            "sexe": self.sex,
            "dateNaissance": self.birth_date,
            "lieuNaissance": self.birth_place,
            "fictif": True,
        }


# Every NIR is built from the other fields (sex, year, month, commune, order number).
PATIENTS: tuple[Patient, ...] = (
    Patient("2850375056123", "MARTIN-TEST", "Claire Anne", "F", "1985-03-14", "75056"),
    Patient("1720169123045", "DUPONT-TEST", "Jean Michel", "M", "1972-01-02", "69123"),
    Patient("2910813055078", "BERNARD-TEST", "Élodie", "F", "1991-08-21", "13055"),
    Patient("1550633063011", "PETIT-TEST", "René", "M", "1955-06-30", "33063"),
    Patient("2030231555017", "LEROY-TEST", "Inès Marie", "F", "2003-02-11", "31555"),
    Patient("1681259350002", "MOREAU-TEST", "François", "M", "1968-12-05", "59350"),
    Patient("2470467482033", "GARNIER-TEST", "Simone", "F", "1947-04-18", "67482"),
    Patient("1121044109050", "ROUX-TEST", "Noah", "M", "2012-10-09", "44109"),
    # Two homonyms with the same traits but different birthplaces: INSi answers "several"
    # when the request omits the birthplace.
    Patient("1800906088014", "LAMBERT-TEST", "Paul", "M", "1980-09-01", "06088"),
    Patient("1800935238027", "LAMBERT-TEST", "Paul", "M", "1980-09-01", "35238"),
)


@dataclass(frozen=True)
class Document:
    id: str
    patient_nir13: str
    type_code: str  # LOINC
    type_display: str
    date: str
    author: str
    title: str


DOCUMENTS: tuple[Document, ...] = (
    Document(
        "doc-0001",
        "2850375056123",
        "11488-4",
        "Consult note",
        "2025-11-02T10:15:00+01:00",
        "Dr TEST-ANDRE",
        "Compte rendu de consultation",
    ),
    Document(
        "doc-0002",
        "2850375056123",
        "18748-4",
        "Diagnostic imaging study",
        "2025-09-12T08:40:00+02:00",
        "Dr TEST-IMAGERIE",
        "Radiographie thoracique",
    ),
    Document(
        "doc-0003",
        "2850375056123",
        "11502-2",
        "Laboratory report",
        "2026-01-20T07:05:00+01:00",
        "Laboratoire TEST",
        "Bilan sanguin",
    ),
    Document(
        "doc-0004",
        "1720169123045",
        "57833-6",
        "Prescription for medication",
        "2026-02-03T17:30:00+01:00",
        "Dr TEST-MARTIN",
        "Ordonnance",
    ),
    Document(
        "doc-0005",
        "1720169123045",
        "34133-9",
        "Summary of episode note",
        "2024-06-18T12:00:00+02:00",
        "CH TEST",
        "Lettre de liaison de sortie",
    ),
    Document(
        "doc-0006",
        "2910813055078",
        "11488-4",
        "Consult note",
        "2026-03-01T09:00:00+01:00",
        "Dr TEST-SAGE-FEMME",
        "Suivi de grossesse",
    ),
    Document(
        "doc-0007",
        "1550633063011",
        "60591-5",
        "Patient summary",
        "2025-12-12T15:20:00+01:00",
        "Dr TEST-GENERALISTE",
        "Volet de synthèse médicale",
    ),
    Document(
        "doc-0008",
        "1121044109050",
        "11369-6",
        "History of immunization",
        "2025-10-01T11:11:00+02:00",
        "Dr TEST-PEDIATRE",
        "Carnet de vaccination",
    ),
)


def find_patients(
    birth_name: str, given_name: str, sex: str, birth_date: str, birth_place: str | None = None
) -> list[Patient]:
    """INSi-like matching on the traits (birth name, first given name, sex, birth date[, place])."""
    name = normalize_trait(birth_name)
    first = normalize_trait(given_name).split(" ")[0] if given_name.strip() else ""
    out = []
    for p in PATIENTS:
        if normalize_trait(p.birth_name) != name or p.sex != sex or p.birth_date != birth_date:
            continue
        if normalize_trait(p.given_names).split(" ")[0] != first:
            continue
        if birth_place is not None and p.birth_place != birth_place:
            continue
        out.append(p)
    return out


def patient_by_ins(ins: str) -> Patient | None:
    for p in PATIENTS:
        if p.ins == ins:
            return p
    return None


def documents_of(patient: Patient) -> list[Document]:
    return [d for d in DOCUMENTS if d.patient_nir13 == patient.nir13]


def document_reference(doc: Document, patient: Patient, base_url: str) -> dict[str, object]:
    """A FHIR R4 DocumentReference (the fields a DMP-like index returns)."""
    return {
        "resourceType": "DocumentReference",
        "id": doc.id,
        "meta": {"tag": [{"system": "urn:confiance:demo", "code": "fictif", "display": "Donnée fictive"}]},
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": doc.type_code, "display": doc.type_display}]},
        "subject": {
            "identifier": {"system": INS_SYSTEM, "value": patient.ins},
            "display": f"{patient.birth_name} {patient.given_names.split()[0]}",
        },
        "date": doc.date,
        "author": [{"display": doc.author}],
        "description": doc.title,
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "url": f"{base_url}/Binary/{doc.id}",
                    "title": doc.title,
                }
            }
        ],
    }
