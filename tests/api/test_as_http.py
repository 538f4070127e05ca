"""Authorization server over HTTPS: malformed input, introspection, revocation, refresh, PSC modes."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from confiance.api.domain import GRANT_TOKEN_EXCHANGE, TT_ACCESS_TOKEN
from confiance.core.jose import KeyStore
from confiance.pki import Pki
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle


@pytest.fixture(scope="module")
def psc_token(psc_sandbox: PscHandle) -> str:
    return str(psc_sandbox.ciba_login()["access_token"])


def _form(token: str, **kw: str) -> dict[str, str]:
    return {
        "grant_type": GRANT_TOKEN_EXCHANGE,
        "subject_token": token,
        "subject_token_type": TT_ACCESS_TOKEN,
        "subject_issuer": "psc",
        **kw,
    }


def test_malformed_requests_get_oauth_json_never_500(api_services: ApiHandle, psc_token: str) -> None:
    url = api_services.token_endpoint
    cases = [
        ({"content": b"{}", "headers": {"Content-Type": "application/json"}}, "invalid_request"),
        (
            {"content": b"\xff\xfe\x00", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            "invalid_request",
        ),
        (
            {"content": b"grant_type=a&grant_type=b", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            "invalid_request",
        ),
        ({"data": {"subject_token": psc_token}}, "invalid_request"),  # no grant_type
        ({"data": {"grant_type": "password", "username": "x"}}, "unsupported_grant_type"),
        ({"data": {"grant_type": "refresh_token", "refresh_token": "x"}}, "unsupported_grant_type"),  # disabled here
        ({"data": _form(psc_token, subject_token_type="urn:x")}, "invalid_request"),
        ({"data": _form(psc_token, audience="https://evil.example/api")}, "invalid_target"),
        ({"data": _form(psc_token, scope="admin")}, "invalid_scope"),
        ({"data": _form("not-a-psc-token", scope="insi")}, "invalid_request"),
        ({"data": _form("a.b.c", scope="insi")}, "invalid_request"),
        (
            {"content": b"x=" + b"a" * 20000, "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
            "invalid_request",
        ),
        ({"data": _form(psc_token), "headers": {"Authorization": "Basic !!!"}}, "invalid_client"),
        (
            {"data": _form(psc_token), "headers": {"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()}},
            "invalid_client",
        ),
    ]
    with api_services.client(api_services.proxy_cert) as http:
        for kwargs, error in cases:
            r = http.post(url, **kwargs)
            assert 400 <= r.status_code < 500, (kwargs, r.status_code, r.text)
            assert r.json()["error"] == error, (kwargs, r.text)
            assert r.json()["error_description"]
            assert r.headers["cache-control"] == "no-store"
        r = http.get(url)
        assert r.status_code == 405 and r.json()["error"] == "invalid_request" and "POST" in r.headers["allow"]
        r = http.get(api_services.as_url + "/nowhere")
        assert r.status_code == 404 and "error" in r.json()


def test_no_client_certificate_is_invalid_client(api_services: ApiHandle, psc_token: str) -> None:
    with api_services.client(None) as http:
        r = http.post(api_services.token_endpoint, data=_form(psc_token))
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        assert http.get(api_services.as_url + "/health").json()["status"] == "ok"
        assert http.get(api_services.as_url + "/hello").status_code == 401


def test_metadata_and_audience_parameter(api_services: ApiHandle, psc_token: str) -> None:
    with api_services.client(api_services.proxy_cert) as http:
        meta = http.get(api_services.as_url + "/.well-known/oauth-authorization-server").json()
    assert meta["token_endpoint"] == api_services.token_endpoint
    assert meta["tls_client_certificate_bound_access_tokens"] is True
    insi = api_services.services["insi"]
    r = api_services.exchange(psc_token, audience=insi["audience"])
    assert r.status_code == 200 and r.json()["scope"] == "insi"
    r = api_services.exchange(psc_token, resource=insi["url"])
    assert r.status_code == 200 and r.json()["scope"] == "insi"


def test_introspection_and_revocation_are_per_client(
    api_services: ApiHandle, psc_sandbox: PscHandle, psc_token: str
) -> None:
    token = api_services.exchange(psc_token, scope="dmp").json()["access_token"]
    with api_services.client(api_services.proxy_cert) as proxy:
        info = proxy.post(api_services.introspection_endpoint, data={"token": token}).json()
        assert info["active"] is True and info["client_id"] == "proxy" and info["scope"] == "dmp"
        assert info["cnf"]["x5t#S256"] == api_services.proxy_cert.x5t_s256
    with api_services.client(psc_sandbox.mtls_cert) as other:
        assert other.post(api_services.introspection_endpoint, data={"token": token}).json() == {"active": False}
        # Another client's revocation attempt is accepted (RFC 7009) but does nothing.
        assert other.post(api_services.revocation_endpoint, data={"token": token}).status_code == 200
        r = other.post(api_services.revocation_endpoint, data={"token": token, "token_type_hint": "id_token"})
        assert r.json()["error"] == "unsupported_token_type"
    with api_services.client(api_services.proxy_cert) as proxy:
        assert proxy.post(api_services.introspection_endpoint, data={"token": token}).json()["active"] is True


def test_psc_answer_is_cached_but_not_beyond_its_bound(api_services_factory, psc_sandbox: PscHandle) -> None:
    cached = api_services_factory()
    tokens = psc_sandbox.ciba_login()
    before = cached.runtime.psc.introspections
    for _ in range(3):
        assert cached.exchange(tokens["access_token"], scope="insi").status_code == 200
    assert cached.runtime.psc.introspections == before + 1
    # Without cache, a session ended at PSC is refused on the very next exchange.
    fresh = api_services_factory(cache_seconds=0)
    tokens = psc_sandbox.ciba_login()
    assert fresh.exchange(tokens["access_token"], scope="insi").status_code == 200
    with psc_sandbox.client("mtls") as http:
        http.get(psc_sandbox.end_session_endpoint, params={"id_token_hint": tokens["id_token"]})
    r = fresh.exchange(tokens["access_token"], scope="insi")
    assert r.status_code == 400 and "inactif" in r.json()["error_description"]


def test_expired_psc_token_refused(api_services_factory, psc_sandbox_factory) -> None:
    psc = psc_sandbox_factory(lifetimes={"access_token": 1})
    api = api_services_factory(psc=psc)
    tokens = psc.ciba_login()
    time.sleep(1.6)
    r = api.exchange(tokens["access_token"], cert=psc.mtls_cert, scope="insi")
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_psc_unreachable_is_503(api_services_factory, psc_sandbox_factory) -> None:
    psc = psc_sandbox_factory()
    api = api_services_factory(psc=psc)
    tokens = psc.ciba_login()
    psc.server.stop()
    r = api.exchange(tokens["access_token"], cert=psc.mtls_cert, scope="insi")
    assert r.status_code == 503 and r.json()["error"] == "temporarily_unavailable"


def test_jwks_mode_verifies_and_refuses_forged_tokens(api_services_factory, psc_sandbox: PscHandle) -> None:
    api = api_services_factory(psc_mode="jwks")
    tokens = psc_sandbox.ciba_login()
    r = api.exchange(tokens["access_token"], scope="signsessiondata")
    assert r.status_code == 200, r.text
    forged = KeyStore(None).sign(
        {
            "iss": psc_sandbox.issuer,
            "sub": "x",
            "exp": int(time.time()) + 60,
            "iat": int(time.time()),
            "typ": "Bearer",
            "preferred_username": psc_sandbox.national_id,
        }
    )
    r = api.exchange(forged, scope="signsessiondata")
    assert r.status_code == 400 and "kid" in r.json()["error_description"]


def test_refresh_tokens_bound_rotating_and_revocable(api_services_factory, psc_sandbox: PscHandle, pki: Pki) -> None:
    api = api_services_factory(refresh_tokens=True, token_lifetime=3600)
    tokens = psc_sandbox.ciba_login()
    first = api.exchange(tokens["access_token"], scope="insi dmp").json()
    assert first["expires_in"] == 3600 and first["refresh_token"]
    grant = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    thief = pki.ensure_client("api-test-thief2", "3" + "12345678200010", "voleur2")
    api.register_client("thief", thief.subject_dn)
    with api.client(thief) as http:
        r = http.post(api.token_endpoint, data=grant)
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    with api.client(api.proxy_cert) as http:
        r = http.post(api.token_endpoint, data={**grant, "scope": "insi signsessiondata"})
        assert r.json()["error"] == "invalid_scope"
        second = http.post(api.token_endpoint, data={**grant, "scope": "insi"}).json()
        assert second["scope"] == "insi" and second["refresh_token"] != first["refresh_token"]
        assert http.post(api.token_endpoint, data=grant).json()["error"] == "invalid_grant"  # rotated
        info = http.post(api.introspection_endpoint, data={"token": second["refresh_token"]}).json()
        assert info["active"] is True and info["token_type"].endswith("refresh_token")
        # Revoking the refresh token revokes every access token of the grant (RFC 7009 §2.1).
        assert http.post(api.revocation_endpoint, data={"token": second["refresh_token"]}).status_code == 200
        for at in (first["access_token"], second["access_token"]):
            assert http.post(api.introspection_endpoint, data={"token": at}).json() == {"active": False}
        assert (
            http.post(
                api.token_endpoint, data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]}
            ).json()["error"]
            == "invalid_grant"
        )


def test_sandbox_client_secret(api_services_factory, psc_sandbox: PscHandle, pki: Pki) -> None:
    api = api_services_factory()
    cert = pki.ensure_client("api-test-sandbox", "3" + "12345678200010", "sandbox-lps")
    api.register_client("sbx", "CN=registered-elsewhere,OU=3999999999,C=FR", level="sandbox", secret="s3cret-value-123")
    tokens = psc_sandbox.ciba_login()
    with api.client(cert) as http:
        r = http.post(
            api.token_endpoint, data=_form(tokens["access_token"], scope="insi"), auth=("sbx", "s3cret-value-123")
        )
        assert r.status_code == 200, r.text
        r = http.post(
            api.token_endpoint, data=_form(tokens["access_token"], scope="insi", client_id="sbx", client_secret="bad")
        )
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    with api.client(api.proxy_cert) as http:
        r = http.post(api.token_endpoint, data=_form(tokens["access_token"], scope="insi"), auth=("proxy", "whatever"))
        assert r.status_code == 401 and "mTLS obligatoire" in r.json()["error_description"]


def test_client_cert_header_only_from_trusted_reverse_proxy(
    api_services_factory, psc_sandbox: PscHandle, pki: Pki
) -> None:
    """RFC 9440 Client-Cert is believed only from configured reverse proxies, and re-verified."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from confiance.core.clientcert import encode_header
    from confiance.pki.thumbprint import load_pem_certificate

    def header(cert) -> str:
        pem = Path(cert.cert_path).read_bytes()
        return encode_header(load_pem_certificate(pem).public_bytes(Encoding.DER))

    tokens = psc_sandbox.ciba_login()
    trusting = api_services_factory(trusted_proxies=["127.0.0.1/32"])
    not_trusting = api_services_factory()
    form = _form(tokens["access_token"], scope="insi")
    # A reverse proxy that terminated TLS forwards the proxy's certificate (no cert on this hop).
    with trusting.client(None) as http:
        r = http.post(trusting.token_endpoint, data=form, headers={"Client-Cert": header(trusting.proxy_cert)})
        assert r.status_code == 200, r.text
        claims = http.post(
            trusting.introspection_endpoint,
            data={"token": r.json()["access_token"]},
            headers={"Client-Cert": header(trusting.proxy_cert)},
        ).json()
        assert claims["cnf"]["x5t#S256"] == trusting.proxy_cert.x5t_s256
        # A revoked certificate in the header is refused even from a trusted peer.
        revoked = pki.issue_client("3" + "12345678200010", "revoque", name="api-test-revoked-hdr")
        trusting.register_client("revoked", revoked.subject_dn)
        pki.revoke("api-test-revoked-hdr")
        r = http.post(trusting.token_endpoint, data=form, headers={"Client-Cert": header(revoked)})
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    with not_trusting.client(None) as http:
        r = http.post(not_trusting.token_endpoint, data=form, headers={"Client-Cert": header(not_trusting.proxy_cert)})
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
