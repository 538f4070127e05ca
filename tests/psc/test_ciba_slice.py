"""CIBA vertical slice over real HTTPS with the mTLS and secret clients."""

from __future__ import annotations

from tests.fixtures_psc import PscHandle

CIBA = "urn:openid:params:grant-type:ciba"


def test_discovery_documents_identical(psc_sandbox: PscHandle) -> None:
    with psc_sandbox.client("none") as http:
        a = http.get(psc_sandbox.discovery_url).json()
        b = http.get(f"{psc_sandbox.issuer}/.well-known/wallet-openid-configuration").json()
    assert a == b
    assert a["issuer"].endswith("/auth/realms/esante-wallet")
    assert a["backchannel_authentication_endpoint"] == psc_sandbox.ciba_endpoint
    assert a["backchannel_token_delivery_modes_supported"] == ["poll"]


def test_ciba_mtls_then_introspect_then_logout(psc_sandbox: PscHandle) -> None:
    tokens = psc_sandbox.ciba_login()
    assert {"access_token", "refresh_token", "id_token", "session_state", "refresh_expires_in"} <= set(tokens)
    with psc_sandbox.client("mtls") as http:
        intro = http.post(
            psc_sandbox.introspection_endpoint,
            data={"client_id": psc_sandbox.mtls_client_id, "token": tokens["access_token"]},
        ).json()
        assert intro["active"] is True
        assert intro["SubjectNameID"] == psc_sandbox.national_id
        assert intro["session_state"] == tokens["session_state"]
        r = http.get(psc_sandbox.end_session_endpoint, params={"id_token_hint": tokens["id_token"]})
        assert r.status_code == 200
        intro = http.post(
            psc_sandbox.introspection_endpoint,
            data={"client_id": psc_sandbox.mtls_client_id, "token": tokens["access_token"]},
        ).json()
        assert intro == {"active": False}


def test_secret_client_ciba(psc_sandbox: PscHandle) -> None:
    tokens = psc_sandbox.ciba_login(kind="secret")
    assert tokens["token_type"] == "Bearer"


def test_keycloak_realm_document(psc_sandbox: PscHandle) -> None:
    import base64

    from cryptography.hazmat.primitives.serialization import load_der_public_key

    with psc_sandbox.client("none") as http:
        realm = http.get(psc_sandbox.issuer).json()
    assert realm["realm"] == "esante-wallet"
    assert realm["token-service"] == psc_sandbox.issuer + "/protocol/openid-connect"
    assert load_der_public_key(base64.b64decode(realm["public_key"]))
