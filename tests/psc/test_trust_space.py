"""Trust-space mode of the PSC sandbox: CIBA and tokens only for certificates of valid habilitations."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator

import pytest

from confiance.core.trustlist import TrustListSettings
from tests.fixtures_psc import PscHandle
from tests.support import TrustListServer, habilitation


@pytest.fixture(scope="module")
def guichet() -> Iterator[TrustListServer]:
    g = TrustListServer().start()
    yield g
    g.stop()


def _settings(g: TrustListServer, enforce: str = "all") -> TrustListSettings:
    return TrustListSettings(
        url=g.url + "/trust-list",
        jwks_url=g.url + "/trust-list/jwks",
        issuer="guichet",
        refresh_seconds=0.3,
        enforce=enforce,  # type: ignore[arg-type]
    )


def _ciba(psc: PscHandle, kind: str = "mtls"):
    with psc.client(kind) as http:
        return http.post(
            psc.ciba_endpoint,
            data={
                **psc.client_auth(kind),
                "scope": "openid scope_all",
                "acr_values": "eidas1",
                "login_hint": psc.national_id,
                "binding_message": "42",
                "channel": "CARD",
            },
        )


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_ciba_refused_until_habilitated_then_after_withdrawal(psc_sandbox_factory, guichet: TrustListServer) -> None:
    guichet.habilitations = []
    psc: PscHandle = psc_sandbox_factory(trust_list=_settings(guichet))
    r = _ciba(psc)
    assert r.status_code == 400
    assert r.json()["error"] == "unauthorized_client"
    assert "ELU/ELP" in r.json()["error_description"]
    guichet.habilitations = [habilitation(1, "ELU", "BAS", psc.mtls_cert.x5t_s256)]
    assert _wait(lambda: _ciba(psc).status_code == 200)
    tokens = psc.ciba_login()
    assert tokens["access_token"]
    # a refresh is an issuance too: refused once the habilitation is withdrawn
    guichet.habilitations = []
    assert _wait(lambda: _ciba(psc).status_code == 400)
    with psc.client("mtls") as http:
        r = http.post(
            psc.token_endpoint,
            data={**psc.client_auth("mtls"), "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        )
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
    # introspection stays open (sessions can still be checked and closed)
    with psc.client("mtls") as http:
        r = http.post(psc.introspection_endpoint, data={**psc.client_auth("mtls"), "token": tokens["access_token"]})
    assert r.status_code == 200


def test_secret_client_refused_in_enforce_all(psc_sandbox_factory, guichet: TrustListServer) -> None:
    psc: PscHandle = psc_sandbox_factory(trust_list=_settings(guichet))
    r = _ciba(psc, "secret")
    assert r.status_code == 400 and "mTLS" in r.json()["error_description"]


def test_flagged_mode_leaves_unflagged_clients_alone(psc_sandbox_factory, guichet: TrustListServer) -> None:
    from confiance.psc.config import ClientConfig

    guichet.habilitations = []
    psc: PscHandle = psc_sandbox_factory(trust_list=_settings(guichet, "flagged"))
    assert _ciba(psc).status_code == 200  # lps-mtls is not flagged
    psc.sandbox.register_client(
        ClientConfig(
            client_id="lps-flagged",
            tls_client_auth_subject_dn=psc.mtls_cert.subject_dn,
            espace_de_confiance=True,
            trust_list_required=True,
        )
    )
    with psc.client("mtls") as http:
        r = http.post(
            psc.ciba_endpoint,
            data={
                "client_id": "lps-flagged",
                "scope": "openid scope_all",
                "acr_values": "eidas1",
                "login_hint": psc.national_id,
                "binding_message": "42",
                "channel": "CARD",
            },
        )
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"


def test_admin_view_of_the_enforced_trust_list(psc_sandbox_factory, guichet: TrustListServer) -> None:
    """An operator sees what is enforced and why a certificate would be refused."""
    import httpx

    guichet.habilitations = []
    psc: PscHandle = psc_sandbox_factory(trust_list=_settings(guichet, enforce="flagged"))
    admin = {"Authorization": f"Bearer {psc.admin_token}"}
    x5t = psc.mtls_cert.x5t_s256
    url = psc.url + "/sandbox/admin/trust-list"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(psc.ca_bundle)), timeout=10) as http:
        assert http.get(url).status_code == 401  # admin only
        view = http.get(url, params={"x5t": x5t}, headers=admin).json()
        assert view["enforced"] is True and view["enforce"] == "flagged" and view["usable"] is True
        assert view["source"] == guichet.url + "/trust-list" and view["fetched_at"] and view["last_error"] is None
        assert view["habilitations"] == []
        assert view["certificate"]["admitted"] is False and "ELU/ELP" in view["certificate"]["reason"]
        registered = http.get(psc.url + "/sandbox/admin/clients", headers=admin).json()
        # "flagged": the check applies to the clients registered with trust_list_required
        assert {c["client_id"]: c["checked"] for c in view["clients"]} == {
            c["client_id"]: c["trust_list_required"] for c in registered
        }
        guichet.habilitations = [habilitation(7, "ELU", "BAS", x5t)]
        assert _wait(lambda: http.get(url, headers=admin).json()["habilitations"] != [])
        view = http.get(url, params={"x5t": x5t}, headers=admin).json()
        assert [h["id"] for h in view["habilitations"]] == [7]
        assert view["certificate"]["admitted"] is True


def test_admin_view_without_enforcement(psc_sandbox_factory) -> None:
    import httpx

    psc: PscHandle = psc_sandbox_factory()
    with httpx.Client(verify=ssl.create_default_context(cafile=str(psc.ca_bundle)), timeout=10) as http:
        r = http.get(psc.url + "/sandbox/admin/trust-list", headers={"Authorization": f"Bearer {psc.admin_token}"})
    assert r.status_code == 200 and r.json() == {"enforced": False}
