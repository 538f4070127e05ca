"""Trust-list admission rule and the client that fetches, verifies and keeps the last good copy."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from confiance.core.trustlist import TrustListClient, TrustListConfig, admit
from tests.support import TrustListServer, habilitation

NOW = time.time()
LATER = (datetime.now(UTC) + timedelta(days=365)).isoformat()
PAST = (datetime.now(UTC) - timedelta(days=1)).isoformat()


def _hab(hid: int, role: str, env: str, x5t: str, relies_on=(), **kw):
    return habilitation(hid, role, env, x5t, relies_on, valid_until=kw.pop("valid_until", LATER), **kw)


def test_valid_editor_certificate_admitted_in_bas():
    claims = {"habilitations": [_hab(1, "ELP", "BAS", "P"), _hab(2, "ELU", "BAS", "U", relies_on=[1])]}
    assert admit(claims, "U", "BAS", NOW).admitted
    assert admit(claims, "P", "BAS", NOW).admitted


def test_unknown_certificate_refused_naming_missing_habilitation():
    d = admit({"habilitations": []}, "X", "BAS", NOW)
    assert not d.admitted and "ELU/ELP" in d.reason
    d = admit({"habilitations": []}, "X", "production", NOW)
    assert not d.admitted and "OSU/OSP" in d.reason


def test_withdrawn_dependency_refuses_dependent():
    # ELP 1 withdrawn: absent from the list; ELU 2 relies on it
    claims = {"habilitations": [_hab(2, "ELU", "BAS", "U", relies_on=[1])]}
    d = admit(claims, "U", "BAS", NOW)
    assert not d.admitted and "n° 1" in d.reason and "ELU n° 2" in d.reason


def test_wrong_environment_expired_and_at_risk_refused():
    assert not admit({"habilitations": [_hab(1, "OSP", "production", "O")]}, "O", "BAS", NOW).admitted
    assert not admit({"habilitations": [_hab(1, "ELP", "BAS", "P", valid_until=PAST)]}, "P", "BAS", NOW).admitted
    d = admit({"habilitations": [_hab(1, "ELP", "BAS", "P", at_risk=True, at_risk_reason="x")]}, "P", "BAS", NOW)
    assert not d.admitted and "risque" in d.reason


def test_test_access_admits_bas_certificate_of_candidature_in_progress():
    claims = {
        "habilitations": [],
        "test_access": [
            {
                "candidature_id": 7,
                "role": "ELP",
                "holder": "Acme",
                "environment": "BAS",
                "certificates": [{"x5t#S256": "T"}],
            }
        ],
    }
    assert admit(claims, "T", "BAS", NOW).admitted
    assert not admit(claims, "T", "production", NOW).admitted


@pytest.fixture
def guichet():
    g = TrustListServer().start()
    yield g
    g.stop()


def _client(guichet, tmp_path, **kw) -> TrustListClient:
    return TrustListClient(
        TrustListConfig(
            url=guichet.url + "/trust-list",
            jwks_url=guichet.url + "/trust-list/jwks",
            environment="BAS",
            cache_path=tmp_path / "tl.json",
            issuer="guichet",
            **kw,
        )
    )


def test_client_fails_closed_before_first_fetch(guichet, tmp_path):
    guichet.up = False
    c = _client(guichet, tmp_path)
    c.refresh()
    d = c.admit("P")
    assert not d.admitted and "liste de confiance" in d.reason


def test_client_refresh_withdrawal_and_last_good_copy(guichet, tmp_path):
    guichet.habilitations = [_hab(1, "ELP", "BAS", "P")]
    c = _client(guichet, tmp_path)
    c.refresh()
    assert c.admit("P").admitted
    # guichet down: last good copy still enforced
    guichet.up = False
    c.refresh()
    assert c.admit("P").admitted and c.last_error
    # a restarted server with the guichet still down reads the persisted copy
    c2 = _client(guichet, tmp_path)
    assert c2.admit("P").admitted
    # withdrawal published: refused after the next refresh
    guichet.up = True
    guichet.habilitations = []
    c.refresh()
    assert not c.admit("P").admitted


def test_client_rejects_tampered_list_and_keeps_previous(guichet, tmp_path):
    guichet.habilitations = [_hab(1, "ELP", "BAS", "P")]
    c = _client(guichet, tmp_path)
    c.refresh()
    guichet.tamper = True
    c.refresh()
    assert c.last_error and "signature" in c.last_error
    assert c.admit("P").admitted  # the forged (empty) list was not taken


def test_client_refuses_a_signed_list_breaking_the_contract_and_keeps_previous(guichet, tmp_path):
    guichet.habilitations = [_hab(1, "ELP", "BAS", "P")]
    c = _client(guichet, tmp_path)
    c.refresh()
    guichet.habilitations = [{"id": "un", "role": "ELP", "environment": "BAS"}]
    c.refresh()
    assert c.last_error and "habilitations.0" in c.last_error
    assert c.admit("P").admitted
    assert c.trust_list().habilitations[0].id == 1


def test_background_refresh_picks_up_withdrawal(guichet, tmp_path):
    guichet.habilitations = [_hab(1, "ELP", "BAS", "P")]
    c = _client(guichet, tmp_path, refresh_seconds=0.2)
    c.start()
    try:
        assert c.admit("P").admitted
        guichet.habilitations = []
        deadline = time.time() + 5
        while c.admit("P").admitted and time.time() < deadline:
            time.sleep(0.05)
        assert not c.admit("P").admitted
    finally:
        c.stop()


def test_large_trust_list_accepted(guichet, tmp_path):
    """The list grows with the registry: hundreds of habilitations (> 128 KiB) must still verify."""
    guichet.habilitations = [
        _hab(i, "ELU", "BAS", f"x5t-{i}", holder={"name": "Éditeur " + "x" * 400}) for i in range(400)
    ]
    c = _client(guichet, tmp_path)
    c.refresh()
    assert c.last_error is None
    assert c.admit("x5t-399").admitted
