"""French company identifiers and EU registration.

SIREN (9 digits) and SIRET (14 digits = SIREN + NIC) carry a Luhn check digit, so a typo in
one digit is always caught before a dossier is filed under the wrong company. La Poste's
establishments (SIREN 356000000) are the documented exception: their SIRETs are valid when
the sum of their digits is a multiple of 5.
"""

from __future__ import annotations

from .errors import DomainError

# The 27 member states (ISO 3166-1 alpha-2; Greece is "GR" here, not the VAT "EL").
EU_COUNTRIES = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "ES",
        "FI",
        "FR",
        "GR",
        "HR",
        "HU",
        "IE",
        "IT",
        "LT",
        "LU",
        "LV",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
    ]
)
LA_POSTE_SIREN = "356000000"


def luhn_ok(digits: str) -> bool:
    """Luhn (mod 10) check over a string of ASCII digits."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _clean(value: str) -> str:
    return value.replace(" ", "").replace("\u00a0", "")


def validate_siren(value: str) -> str:
    """Return the normalised SIREN or raise a French error saying what is wrong."""
    v = _clean(value)
    if len(v) != 9 or not v.isascii() or not v.isdigit():
        raise DomainError("siren_invalide", f"SIREN invalide {value!r} : 9 chiffres attendus")
    if not luhn_ok(v):
        raise DomainError("siren_invalide", f"SIREN invalide {value!r} : clé de contrôle (Luhn) incorrecte")
    return v


def validate_siret(value: str) -> str:
    """Return the normalised SIRET or raise; the SIREN part is checked too."""
    v = _clean(value)
    if len(v) != 14 or not v.isascii() or not v.isdigit():
        raise DomainError("siret_invalide", f"SIRET invalide {value!r} : 14 chiffres attendus")
    if v[:9] == LA_POSTE_SIREN:
        if sum(int(c) for c in v) % 5 != 0:
            raise DomainError("siret_invalide", f"SIRET invalide {value!r} : clé de contrôle incorrecte")
        return v
    validate_siren(v[:9])
    if not luhn_ok(v):
        raise DomainError("siret_invalide", f"SIRET invalide {value!r} : clé de contrôle (Luhn) incorrecte")
    return v


def validate_registration(country: str, siren: str | None, siret: str | None, registration_number: str | None) -> None:
    """Every actor is a legal person registered in the EU; French ones are identified by SIREN/SIRET."""
    if country not in EU_COUNTRIES:
        raise DomainError(
            "pays_hors_ue",
            f"pays {country!r} : seule une personne morale immatriculée dans l'Union européenne peut candidater",
        )
    if country == "FR":
        if not siren:
            raise DomainError("siren_requis", "une structure française doit indiquer son SIREN")
        s = validate_siren(siren)
        if siret is not None:
            t = validate_siret(siret)
            if t[:9] != s:
                raise DomainError("siret_incoherent", f"le SIRET {t} n'appartient pas au SIREN {s}")
    elif not registration_number or not registration_number.strip():
        raise DomainError(
            "immatriculation_requise",
            "une structure d'un autre État membre doit indiquer son numéro d'immatriculation",
        )
