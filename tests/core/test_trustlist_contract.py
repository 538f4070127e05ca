"""The typed trust-list contract: same JSON on the wire, typed on both sides."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from confiance.core.trustlist import admit
from confiance.core.trustlist_contract import (
    EDITOR_ROLES,
    ENV_BAS,
    OPERATOR_ROLES,
    ROLE_ELP,
    ComponentEntry,
    HabilitationEntry,
    Holder,
    SolutionRef,
    TestAccess,
    TrustedCertificate,
    TrustList,
    roles_for,
)

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def _guichet_claims() -> dict[str, Any]:
    """A list exactly as guichet/service.py ``trust_list_claims`` publishes it."""
    return {
        "iss": "http://127.0.0.1:8000",
        "iat": 1780315200,
        "exp": 1780318800,
        "habilitations": [
            {
                "id": 3,
                "holder": {
                    "name": "Acme Santé",
                    "country": "FR",
                    "siren": "123456789",
                    "siret": None,
                    "registration_number": None,
                },
                "role": "ELP",
                "role_label": "Éditeur de proxy e-Santé",
                "environment": "BAS",
                "valid_from": "2026-05-01T10:00:00.123456+00:00",
                "valid_until": "2027-05-01T10:00:00+00:00",
                "at_risk": False,
                "at_risk_reason": None,
                "relies_on": [],
                "solution": {"id": 2, "name": "Proxy", "software_name": "acme-proxy", "version": "1.2"},
                "components": [
                    {
                        "kind": "proxy",
                        "name": "proxy",
                        "certificates": [
                            {"subject_dn": "CN=p,OU=1,C=FR", "x5t#S256": "abc", "not_after": "2027-01-01T00:00:00"}
                        ],
                    }
                ],
            }
        ],
        "test_access": [
            {
                "candidature_id": 9,
                "role": "ELU",
                "holder": "Beta",
                "environment": "BAS",
                "certificates": [{"subject_dn": "CN=t", "x5t#S256": "T", "not_after": "2027-01-01T00:00:00"}],
            }
        ],
    }


def test_guichet_json_round_trips_unchanged() -> None:
    claims = _guichet_claims()
    typed = TrustList.from_claims(claims)
    assert typed.habilitations[0].components[0].certificates[0].x5t_s256 == "abc"
    assert typed.habilitations[0].valid_until == dt.datetime(2027, 5, 1, 10, tzinfo=dt.UTC)
    assert typed.to_claims() == claims


def test_builder_with_python_names_produces_the_wire_names() -> None:
    built = TrustList(
        iss="g",
        iat=1,
        exp=2,
        habilitations=[
            HabilitationEntry(
                id=1,
                role=ROLE_ELP,
                environment=ENV_BAS,
                valid_until=NOW,
                holder=Holder(name="Acme"),
                solution=SolutionRef(id=1, name="S"),
                components=[ComponentEntry(kind="proxy", name="p", certificates=[TrustedCertificate(x5t_s256="X")])],
            )
        ],
        test_access=[TestAccess(candidature_id=2, role="ELU", environment=ENV_BAS, holder="B")],
    )
    claims = built.to_claims()
    hab = claims["habilitations"][0]
    assert hab["components"][0]["certificates"][0]["x5t#S256"] == "X"
    assert "x5t_s256" not in hab["components"][0]["certificates"][0]
    assert hab["valid_until"] == NOW.isoformat()
    assert admit(built, "X", "BAS", NOW.timestamp() - 1).admitted
    assert not admit(built, "X", "BAS", NOW.timestamp()).admitted  # valid_until reached


def test_unknown_fields_of_a_newer_guichet_are_kept() -> None:
    claims = _guichet_claims()
    claims["habilitations"][0]["new_field"] = {"x": 1}
    claims["revision"] = 42
    assert TrustList.from_claims(claims).to_claims() == claims


@pytest.mark.parametrize(
    "broken",
    [
        {"habilitations": [{"id": "un", "role": "ELP", "environment": "BAS", "valid_until": "2027-01-01"}]},
        {"habilitations": [{"id": 1, "role": "ELP", "environment": "BAS"}]},
        {"habilitations": [{"id": 1, "role": "ELP", "environment": "BAS", "valid_until": "demain"}]},
        {"habilitations": "tout le monde"},
        {"test_access": [{"role": "ELU", "environment": "BAS"}]},
    ],
)
def test_a_list_breaking_the_contract_is_refused(broken: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TrustList.from_claims(broken)


def test_naive_dates_are_utc() -> None:
    naive = TrustList.from_claims(
        {"habilitations": [{"id": 1, "role": "ELP", "environment": "BAS", "valid_until": "2026-06-01T12:00:00"}]}
    )
    assert naive.habilitations[0].expires_at() == NOW.timestamp()


def test_roles() -> None:
    assert roles_for("BAS") == EDITOR_ROLES == ("ELU", "ELP")
    assert roles_for("bas") == EDITOR_ROLES
    assert roles_for("production") == OPERATOR_ROLES == ("OSU", "OSP")
