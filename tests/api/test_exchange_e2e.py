"""End to end over real HTTPS: PSC CIBA → token exchange → resource services, and the attacks."""

from __future__ import annotations

import base64
import json
import time

import pytest

from confiance.api.domain import TT_ACCESS_TOKEN, access_token_claims, subject_from_claims
from confiance.core.jose import verify_jws, verify_jwt
from confiance.pki import Pki
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle


@pytest.fixture(scope="module")
def psc_tokens(psc_sandbox: PscHandle) -> dict:
    return psc_sandbox.ciba_login()


@pytest.fixture(scope="module")
def thief_cert(pki: Pki):
    """Another valid IGC-Santé certificate, registered or not: it must not reuse a stolen token."""
    return pki.ensure_client("api-test-thief", "3" + "12345678200010", "voleur")


def _exchange_ok(api: ApiHandle, psc_tokens: dict, scope: str = "signsessiondata") -> dict:
    r = api.exchange(psc_tokens["access_token"], scope=scope)
    assert r.status_code == 200, r.text
    return r.json()


def _sign(api: ApiHandle, token: str, cert, psc_sandbox: PscHandle, psc_tokens: dict, **override: str):
    body = {
        "nationalId": psc_sandbox.national_id,
        "clientID": psc_sandbox.mtls_client_id,
        "proxy_session_id": "ps-123",
        "session_state": psc_tokens["session_state"],
        **override,
    }
    with api.client(cert) as http:
        return http.post(
            api.services["signsessiondata"]["url"] + "/signsessiondata",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )


def test_exchange_response_and_claims(api_services: ApiHandle, psc_sandbox: PscHandle, psc_tokens: dict) -> None:
    body = _exchange_ok(api_services, psc_tokens)
    assert body["issued_token_type"] == TT_ACCESS_TOKEN
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 4 * 3600
    assert body["scope"] == "signsessiondata"
    assert "refresh_token" not in body
    with api_services.client(api_services.proxy_cert) as http:
        jwks = http.get(api_services.jwks_uri).json()
    claims = verify_jwt(
        body["access_token"],
        jwks,
        issuer=api_services.issuer,
        audience=api_services.services["signsessiondata"]["audience"],
    )
    assert claims["SubjectNameID"] == psc_sandbox.national_id
    assert claims["session_state"] == psc_tokens["session_state"]
    assert claims["client_id"] == "proxy"
    assert claims["cnf"] == {"x5t#S256": api_services.proxy_cert.x5t_s256}
    assert claims["psc_client_id"] == psc_sandbox.mtls_client_id
    assert {"iss", "sub", "aud", "exp", "iat", "jti", "scope"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 4 * 3600


def test_signsessiondata_signed_and_verifiable(
    api_services: ApiHandle, psc_sandbox: PscHandle, psc_tokens: dict
) -> None:
    token = _exchange_ok(api_services, psc_tokens)["access_token"]
    r = _sign(api_services, token, api_services.proxy_cert, psc_sandbox, psc_tokens)
    assert r.status_code == 200, r.text
    out = r.json()
    with api_services.client(api_services.proxy_cert) as http:
        jwks = http.get(api_services.rs_jwks_uri).json()
    payload = json.loads(verify_jws(out["signature"], jwks))
    assert payload == {k: out[k] for k in ("nationalId", "clientID", "proxy_session_id", "session_state")}
    assert payload["proxy_session_id"] == "ps-123"
    entry = api_services.runtime.audit.recent[-1]
    assert entry["professional"] == psc_sandbox.national_id and entry["client_id"] == "proxy"


def test_signsessiondata_refuses_other_professional_or_session(
    api_services: ApiHandle, psc_sandbox: PscHandle, psc_tokens: dict
) -> None:
    token = _exchange_ok(api_services, psc_tokens)["access_token"]
    r = _sign(api_services, token, api_services.proxy_cert, psc_sandbox, psc_tokens, nationalId="899999999999")
    assert r.status_code == 400 and r.json()["code"] == "session_mismatch"
    r = _sign(api_services, token, api_services.proxy_cert, psc_sandbox, psc_tokens, session_state="autre")
    assert r.status_code == 400 and "session_state" in r.json()["message"]
    r = _sign(api_services, token, api_services.proxy_cert, psc_sandbox, psc_tokens, clientID="autre-lps")
    assert r.status_code == 400 and "clientID" in r.json()["message"]


def test_stolen_token_with_other_certificate_is_401(
    api_services: ApiHandle, psc_sandbox: PscHandle, psc_tokens: dict, thief_cert
) -> None:
    token = _exchange_ok(api_services, psc_tokens)["access_token"]
    r = _sign(api_services, token, thief_cert, psc_sandbox, psc_tokens)
    assert r.status_code == 401
    assert r.json()["reason"] == "cnf_mismatch"
    assert "certificat" in r.json()["message"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    # Even a registered client (the LPS certificate) cannot use the proxy's token.
    r = _sign(api_services, token, psc_sandbox.mtls_cert, psc_sandbox, psc_tokens)
    assert r.status_code == 401 and r.json()["reason"] == "cnf_mismatch"


def test_token_for_another_audience_is_401(api_services: ApiHandle, psc_sandbox: PscHandle, psc_tokens: dict) -> None:
    token = _exchange_ok(api_services, psc_tokens, scope="insi")["access_token"]
    r = _sign(api_services, token, api_services.proxy_cert, psc_sandbox, psc_tokens)
    assert r.status_code == 401 and r.json()["reason"] == "audience"


def test_expired_token_is_401(api_services: ApiHandle, psc_sandbox: PscHandle, psc_tokens: dict) -> None:
    rt = api_services.runtime
    subject = subject_from_claims(
        {"iss": psc_sandbox.issuer, "exp": time.time() + 60, "SubjectNameID": psc_sandbox.national_id, "sub": "s"},
        psc_sandbox.issuer,
        time.time(),
    )
    claims = access_token_claims(
        issuer=rt.issuer,
        subject=subject,
        client=rt.registry.get("proxy"),  # type: ignore[arg-type]
        cert_x5t=api_services.proxy_cert.x5t_s256,
        scopes=("signsessiondata",),
        audiences=(api_services.services["signsessiondata"]["audience"],),
        now=time.time() - 5 * 3600,
        lifetime=4 * 3600,
    )
    token = rt.signer.sign_claims(claims)
    r = _sign(api_services, token, api_services.proxy_cert, psc_sandbox, psc_tokens)
    assert r.status_code == 401 and r.json()["reason"] == "expired" and "expiré" in r.json()["message"]


def test_revoked_token_is_401(api_services: ApiHandle, psc_sandbox: PscHandle, psc_tokens: dict) -> None:
    token = _exchange_ok(api_services, psc_tokens)["access_token"]
    assert _sign(api_services, token, api_services.proxy_cert, psc_sandbox, psc_tokens).status_code == 200
    with api_services.client(api_services.proxy_cert) as http:
        r = http.post(api_services.revocation_endpoint, data={"token": token, "client_id": "proxy"})
        assert r.status_code == 200
        assert http.post(api_services.introspection_endpoint, data={"token": token}).json() == {"active": False}
    r = _sign(api_services, token, api_services.proxy_cert, psc_sandbox, psc_tokens)
    assert r.status_code == 401 and r.json()["reason"] == "revoked"


def test_tampered_token_is_401(api_services: ApiHandle, psc_sandbox: PscHandle, psc_tokens: dict) -> None:
    token = _exchange_ok(api_services, psc_tokens)["access_token"]
    h, p, s = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["SubjectNameID"] = "899999999999"
    p2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    r = _sign(
        api_services, f"{h}.{p2}.{s}", api_services.proxy_cert, psc_sandbox, psc_tokens, nationalId="899999999999"
    )
    assert r.status_code == 401 and r.json()["reason"] == "signature"
    # alg none
    hn = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    r = _sign(api_services, f"{hn}.{p}.", api_services.proxy_cert, psc_sandbox, psc_tokens)
    assert r.status_code == 401


def test_psc_session_ended_exchange_refused(api_services: ApiHandle, psc_sandbox: PscHandle) -> None:
    tokens = psc_sandbox.ciba_login()
    with psc_sandbox.client("mtls") as http:
        assert (
            http.get(psc_sandbox.end_session_endpoint, params={"id_token_hint": tokens["id_token"]}).status_code == 200
        )
    r = api_services.exchange(tokens["access_token"], scope="signsessiondata")
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"
    assert "inactif" in r.json()["error_description"]


def test_unknown_client_dn_is_invalid_client(api_services: ApiHandle, psc_tokens: dict, thief_cert) -> None:
    r = api_services.exchange(psc_tokens["access_token"], cert=thief_cert, scope="signsessiondata")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # Claiming a registered Client_ID_AS with another certificate: DN mismatch.
    r = api_services.exchange(psc_tokens["access_token"], cert=thief_cert, client_id="proxy", scope="signsessiondata")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert "DN" in r.json()["error_description"]


def test_signsessiondata_repeat_and_key_rotation(api_services_factory, psc_sandbox: PscHandle) -> None:
    api = api_services_factory()
    tokens = psc_sandbox.ciba_login()
    token = _exchange_ok(api, tokens)["access_token"]
    first = _sign(api, token, api.proxy_cert, psc_sandbox, tokens).json()
    again = _sign(api, token, api.proxy_cert, psc_sandbox, tokens).json()
    assert again == first
    other = _sign(api, token, api.proxy_cert, psc_sandbox, tokens, proxy_session_id="ps-456").json()
    assert json.loads(verify_jws(other["signature"], api.rs_jwks()))["proxy_session_id"] == "ps-456"
    # A replay with another certificate is refused even though the answer is cached.
    assert _sign(api, token, psc_sandbox.mtls_cert, psc_sandbox, tokens).status_code == 401
    old_kid = json.loads(base64.urlsafe_b64decode(first["signature"].split(".")[0] + "=="))["kid"]
    api.runtime.rs_keys.rotate(keep_for_seconds=3600)
    rotated = _sign(api, token, api.proxy_cert, psc_sandbox, tokens).json()
    new_kid = json.loads(base64.urlsafe_b64decode(rotated["signature"].split(".")[0] + "=="))["kid"]
    assert new_kid != old_kid
    jwks = api.rs_jwks()
    assert {k["kid"] for k in jwks["keys"]} >= {old_kid, new_kid}
    assert verify_jws(first["signature"], jwks) and verify_jws(rotated["signature"], jwks)
