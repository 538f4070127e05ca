"""The HTTP surface over real HTTPS: hostile input, mTLS client authentication, userinfo,
JWKS rotation, signing algorithms, the e-CPS page and the admin API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from confiance.core.jose import generate_key, verify_jwt
from confiance.core.tls import ClientIdentity, client_context
from confiance.pki import Pki
from confiance.psc.config import ClientConfig
from tests.fixtures_psc import PscHandle

CIBA = "urn:openid:params:grant-type:ciba"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64(sig)}"


@pytest.fixture(scope="module")
def tokens(psc_sandbox: PscHandle) -> dict[str, Any]:
    return psc_sandbox.ciba_login(kind="secret")


@pytest.fixture
def http(psc_sandbox: PscHandle) -> Iterator[httpx.Client]:
    with psc_sandbox.client("none") as c:
        yield c


def intro(psc: PscHandle, http: httpx.Client, token: str) -> dict[str, Any]:
    r = http.post(psc.introspection_endpoint, data={**psc.client_auth("secret"), "token": token})
    assert r.status_code == 200
    data: dict[str, Any] = r.json()
    return data


# ---------------------------------------------------------------- tampered tokens
def test_tampered_access_tokens_are_refused(psc_sandbox: PscHandle, http: httpx.Client, tokens: dict[str, Any]) -> None:
    at = tokens["access_token"]
    header = json.loads(base64.urlsafe_b64decode(at.split(".")[0] + "=="))
    claims = json.loads(base64.urlsafe_b64decode(at.split(".")[1] + "==="))
    jwks = http.get(psc_sandbox.jwks_uri).json()
    public_jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    public_pem = json.dumps(public_jwk).encode()  # any public material an attacker has
    stranger = generate_key("RS256", kid=header["kid"])

    def stranger_sign(data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return bytes(stranger.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256()))

    forged = {
        "alg none": forge({**header, "alg": "none"}, claims),
        "HS256 with the public key": forge(
            {**header, "alg": "HS256"}, claims, lambda d: hmac.new(public_pem, d, hashlib.sha256).digest()
        ),
        "wrong kid": forge({**header, "kid": "inconnu"}, claims, stranger_sign),
        "same kid, other key": forge(header, claims, stranger_sign),
        "modified payload": ".".join(
            [at.split(".")[0], b64(json.dumps({**claims, "sub": "f:x:899999999999"}).encode()), at.split(".")[2]]
        ),
        "garbage": "a.b.c",
        "not a jwt": "x" * 50,
    }
    assert intro(psc_sandbox, http, at)["active"] is True
    for name, token in forged.items():
        assert intro(psc_sandbox, http, token) == {"active": False}, name
        r = http.get(psc_sandbox.userinfo_endpoint, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, name
        assert r.json()["error"] == "invalid_token"
        assert "invalid_token" in r.headers["www-authenticate"]
        r = http.get(psc_sandbox.end_session_endpoint, params={"id_token_hint": token})
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", name


def test_expired_access_token(psc_sandbox_factory: Any) -> None:
    psc = psc_sandbox_factory(lifetimes={"access_token": 1})
    t = psc.ciba_login(kind="secret")
    time.sleep(1.6)
    with psc.client("none") as http:
        assert intro(psc, http, t["access_token"]) == {"active": False}
        assert (
            http.get(psc.userinfo_endpoint, headers={"Authorization": f"Bearer {t['access_token']}"}).status_code == 401
        )
        # the refresh token still works and gives a live access token
        r = http.post(
            psc.token_endpoint,
            data={**psc.client_auth("secret"), "grant_type": "refresh_token", "refresh_token": t["refresh_token"]},
        )
        assert r.status_code == 200 and intro(psc, http, r.json()["access_token"])["active"] is True


# ---------------------------------------------------------------- malformed requests
def test_oversized_bodies(psc_sandbox: PscHandle, http: httpx.Client) -> None:
    big = "a=" + "x" * (psc_sandbox.sandbox.config.max_body_bytes + 10)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for url in (psc_sandbox.token_endpoint, psc_sandbox.ciba_endpoint, psc_sandbox.introspection_endpoint):
        r = http.post(url, content=big, headers=form)
        assert r.status_code == 413 and r.json()["error"] == "invalid_request"

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 1024

    r = http.post(psc_sandbox.token_endpoint, content=chunks(), headers=form)  # chunked, no Content-Length
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("content", "ctype"),
    [
        (b"grant_type=refresh_token", "application/json"),
        (b'{"grant_type": "refresh_token"}', "application/json"),
        (b"\xff\xfe=\xff", "application/x-www-form-urlencoded"),
        (b"grant_type=a&grant_type=b", "application/x-www-form-urlencoded"),
        (b"&".join(b"k%d=v" % i for i in range(100)), "application/x-www-form-urlencoded"),
        (b"refresh_token=" + b"x" * 9000, "application/x-www-form-urlencoded"),
    ],
)
def test_malformed_forms(psc_sandbox: PscHandle, http: httpx.Client, content: bytes, ctype: str) -> None:
    for url in (psc_sandbox.token_endpoint, psc_sandbox.ciba_endpoint, psc_sandbox.revocation_endpoint):
        r = http.post(url, content=content, headers={"Content-Type": ctype})
        assert r.status_code == 400, (url, r.text)
        assert r.json()["error"] == "invalid_request"
        assert r.headers["cache-control"] == "no-store"


def test_wrong_methods_and_paths(psc_sandbox: PscHandle, http: httpx.Client) -> None:
    assert http.get(psc_sandbox.token_endpoint).status_code == 405
    assert http.get(psc_sandbox.url + "/auth/realms/autre/protocol/openid-connect/token").status_code == 404


def test_basic_auth_header_garbage(psc_sandbox: PscHandle, http: httpx.Client) -> None:
    for value in (
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff:x").decode(),
    ):
        r = http.post(
            psc_sandbox.token_endpoint, data={"grant_type": "refresh_token"}, headers={"Authorization": value}
        )
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        assert r.headers["www-authenticate"].startswith("Basic")


def test_client_secret_basic_url_encoded(psc_sandbox: PscHandle, http: httpx.Client, tokens: dict[str, Any]) -> None:
    r = http.post(
        psc_sandbox.introspection_endpoint,
        data={"token": tokens["access_token"]},
        auth=(psc_sandbox.secret_client_id, psc_sandbox.secret_client_secret),
    )
    assert r.status_code == 200 and r.json()["active"] is True


# ---------------------------------------------------------------- CIBA over HTTP
def test_ciba_errors_over_http(psc_sandbox: PscHandle, http: httpx.Client) -> None:
    base = {
        **psc_sandbox.client_auth("secret"),
        "scope": "openid scope_all",
        "acr_values": "eidas1",
        "login_hint": psc_sandbox.national_id,
        "binding_message": "42",
        "channel": "CARD",
    }
    for over, error in (
        ({"binding_message": "4"}, "invalid_binding_message"),
        ({"login_hint": "899999999990"}, "unknown_user_id"),
        ({"channel": "FAX"}, "invalid_request"),
    ):
        r = http.post(psc_sandbox.ciba_endpoint, data={**base, **over})
        assert r.status_code == 400 and r.json()["error"] == error
    r = http.post(psc_sandbox.ciba_endpoint, data={**base, "client_secret": "faux-secret"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_ciba_slow_down_and_single_use_over_http(psc_sandbox_factory: Any) -> None:
    psc = psc_sandbox_factory(lifetimes={"ciba_interval": 2})
    psc.set_ecps("approve", delay_ms=1500)
    with psc.client("mtls") as http:
        r = http.post(
            psc.ciba_endpoint,
            data={
                **psc.client_auth(),
                "scope": "openid scope_all",
                "acr_values": "eidas1",
                "login_hint": psc.national_id,
                "binding_message": "09",
                "channel": "MOBILE",
            },
        )
        body = r.json()
        assert body["interval"] == 2
        poll = {**psc.client_auth(), "grant_type": CIBA, "auth_req_id": body["auth_req_id"]}
        assert http.post(psc.token_endpoint, data=poll).json()["error"] == "authorization_pending"
        assert http.post(psc.token_endpoint, data=poll).json()["error"] == "slow_down"
        time.sleep(2.1)
        ok = http.post(psc.token_endpoint, data=poll)
        assert ok.status_code == 200 and ok.json()["session_state"]
        again = http.post(psc.token_endpoint, data=poll)
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


# ---------------------------------------------------------------- mTLS client authentication
def test_espace_de_confiance_requires_mtls(psc_sandbox: PscHandle, pki: Pki) -> None:
    other = pki.ensure_client("psc-test-intruder", "3" + "90000000009010", "intrus")
    data = {"client_id": psc_sandbox.mtls_client_id, "token": "x"}
    with psc_sandbox.client("none") as anon:
        r = anon.post(psc_sandbox.introspection_endpoint, data=data)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        r = anon.post(psc_sandbox.introspection_endpoint, data={**data, "client_secret": "n-importe-quoi"})
        assert r.status_code == 401 and "mTLS" in r.json()["error_description"]
    identity = ClientIdentity(Path(other.cert_path), Path(other.key_path))
    with httpx.Client(verify=client_context(psc_sandbox.ca_bundle, identity)) as intruder:
        r = intruder.post(psc_sandbox.introspection_endpoint, data=data)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    with psc_sandbox.client("mtls") as good:
        assert good.post(psc_sandbox.introspection_endpoint, data=data).json() == {"active": False}


def test_revoked_client_certificate_cannot_connect(psc_sandbox_factory: Any, pki: Pki) -> None:
    cert = pki.issue_client("3" + "90000000009028", "revoquee", name="psc-test-revoked")
    psc = psc_sandbox_factory(
        clients=[
            ClientConfig(client_id="revoked-lps", tls_client_auth_subject_dn=cert.subject_dn, espace_de_confiance=True)
        ]
    )
    identity = ClientIdentity(Path(cert.cert_path), Path(cert.key_path))
    data = {"client_id": "revoked-lps", "token": "x"}
    with httpx.Client(verify=client_context(psc.ca_bundle, identity)) as c:
        assert c.post(psc.introspection_endpoint, data=data).status_code == 200
    pki.revoke("psc-test-revoked")
    with httpx.Client(verify=client_context(psc.ca_bundle, identity)) as c, pytest.raises(httpx.HTTPError):
        c.post(psc.introspection_endpoint, data=data)


# ---------------------------------------------------------------- userinfo, JWKS, algorithms
def test_userinfo_json_and_jwt(psc_sandbox: PscHandle, http: httpx.Client, tokens: dict[str, Any]) -> None:
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    info = http.get(psc_sandbox.userinfo_endpoint, headers=auth).json()
    for claim in (
        "sub",
        "SubjectNameID",
        "given_name",
        "family_name",
        "preferred_username",
        "email_verified",
        "SubjectOrganization",
        "SubjectOrganizationID",
        "SubjectRole",
        "Secteur_Activite",
        "Mode_Acces_Raison",
        "Acces_Regulation_Medicale",
        "UITVersion",
        "Palier_Authentification",
        "PSI_Locale",
        "otherIds",
        "SubjectRefPro",
    ):
        assert claim in info, claim
    activity = info["SubjectRefPro"]["exercices"][0]["activities"][0]
    assert {"codeModeExercice", "numeroSiretSite", "raisonSocialeSite", "codePostal", "codeGenreActivite"} <= set(
        activity
    )
    r = http.post(psc_sandbox.userinfo_endpoint, headers={**auth, "Accept": "application/jwt"})
    assert r.headers["content-type"].startswith("application/jwt")
    jwks = http.get(psc_sandbox.jwks_uri).json()
    claims = verify_jwt(r.text, jwks, issuer=psc_sandbox.issuer, require=("iat",))
    assert claims["SubjectNameID"] == info["SubjectNameID"] and claims["aud"] == psc_sandbox.secret_client_id
    # token in the body (RFC 6750 §2.2) works too; twice is an error
    r = http.post(psc_sandbox.userinfo_endpoint, data={"access_token": tokens["access_token"]})
    assert r.status_code == 200
    r = http.post(psc_sandbox.userinfo_endpoint, headers=auth, data={"access_token": tokens["access_token"]})
    assert r.status_code == 400
    assert http.get(psc_sandbox.userinfo_endpoint).status_code == 401


@pytest.mark.parametrize("alg", ["ES256", "PS256"])
def test_other_signing_algorithms(psc_sandbox_factory: Any, alg: str) -> None:
    psc = psc_sandbox_factory(signing_alg=alg)
    t = psc.ciba_login(kind="secret")
    with psc.client("none") as http:
        jwks = http.get(psc.jwks_uri).json()
        assert {k["alg"] for k in jwks["keys"]} == {"RS256", "ES256", "PS256"}
        for token in (t["access_token"], t["id_token"]):
            header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
            assert header["alg"] == alg
            verify_jwt(token, jwks, issuer=psc.issuer)
        assert intro(psc, http, t["access_token"])["active"] is True


def test_key_rotation_keeps_old_keys(psc_sandbox_factory: Any) -> None:
    psc = psc_sandbox_factory()
    t = psc.ciba_login(kind="secret")
    with psc.client("none") as http:
        before = {k["kid"] for k in http.get(psc.jwks_uri).json()["keys"]}
        r = http.post(psc.url + "/sandbox/admin/keys/rotate", headers={"Authorization": f"Bearer {psc.admin_token}"})
        assert r.status_code == 200
        after = {k["kid"] for k in http.get(psc.jwks_uri).json()["keys"]}
        assert before < after and len(after) == 2 * len(before)
        assert intro(psc, http, t["access_token"])["active"] is True  # old key still verifies
        t2 = psc.ciba_login(kind="secret")
        kid = json.loads(base64.urlsafe_b64decode(t2["access_token"].split(".")[0] + "=="))["kid"]
        assert kid in after - before


# ---------------------------------------------------------------- logout
def test_logout_redirect_rules(psc_sandbox: PscHandle, http: httpx.Client) -> None:
    t = psc_sandbox.ciba_login(kind="secret")
    r = http.get(
        psc_sandbox.end_session_endpoint,
        params={"id_token_hint": t["id_token"], "post_logout_redirect_uri": "https://evil.test/"},
    )
    assert r.status_code == 400
    assert intro(psc_sandbox, http, t["access_token"])["active"] is True  # a refused request ends nothing
    r = http.post(
        psc_sandbox.end_session_endpoint,
        data={**psc_sandbox.client_auth("secret"), "refresh_token": t["refresh_token"]},
    )
    assert r.status_code == 204
    assert intro(psc_sandbox, http, t["access_token"]) == {"active": False}


# ---------------------------------------------------------------- e-CPS page and admin API
def test_ecps_manual_page(psc_sandbox_factory: Any) -> None:
    psc = psc_sandbox_factory()
    psc.set_ecps("manual")
    with psc.client("mtls") as http:
        body = http.post(
            psc.ciba_endpoint,
            data={
                **psc.client_auth(),
                "scope": "openid scope_all",
                "acr_values": "eidas1",
                "login_hint": psc.national_id,
                "binding_message": "73",
                "channel": "MOBILE",
            },
        ).json()
        rid = body["auth_req_id"]
        page = http.get(psc.ecps_url)
        assert page.status_code == 200 and "73" in page.text and "MOBILE" in page.text and rid in page.text
        import re

        csrf = re.search(rf"/sandbox/ecps/{rid}/approve'.*?name='csrf' value='([0-9a-f]+)'", page.text)
        assert csrf
        bad = http.post(f"{psc.url}/sandbox/ecps/{rid}/approve", data={"csrf": "0" * 64})
        assert bad.status_code == 400
        poll = {**psc.client_auth(), "grant_type": CIBA, "auth_req_id": rid}
        assert http.post(psc.token_endpoint, data=poll).json()["error"] == "authorization_pending"
        ok = http.post(f"{psc.url}/sandbox/ecps/{rid}/approve", data={"csrf": csrf.group(1)})
        assert ok.status_code == 303
        assert http.post(psc.token_endpoint, data=poll).status_code == 200
        assert rid not in http.get(psc.ecps_url).text


def test_admin_api(psc_sandbox_factory: Any) -> None:
    psc = psc_sandbox_factory()
    admin = {"Authorization": f"Bearer {psc.admin_token}"}
    with psc.client("none") as http:
        r = http.get(psc.url + "/sandbox/admin/identities")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = http.post(psc.url + "/sandbox/admin/ciba/whatever/explode", headers=admin)
        assert r.status_code == 404
        r = http.get(psc.url + "/sandbox/admin/identities", headers={"Authorization": "Bearer " + "x" * 30})
        assert r.status_code == 401
        idents = http.get(psc.url + "/sandbox/admin/identities", headers=admin).json()
        assert len(idents) >= 20
        professions = {i["profession"] for i in idents}
        assert {
            "Médecin",
            "Pharmacien",
            "Infirmier",
            "Sage-femme",
            "Chirurgien-dentiste",
            "Masseur-kinésithérapeute",
        } <= professions
        new = {
            "national_id": "899900000123",
            "civilite": "MME",
            "given_name": "Nouvelle",
            "family_name": "CREEE-TEST",
            "exercices": [{"codeProfession": "60", "nomDexercice": "CREEE-TEST", "prenomDexercice": "Nouvelle"}],
        }
        assert http.post(psc.url + "/sandbox/admin/identities", json=new, headers=admin).status_code == 201
        assert http.post(psc.url + "/sandbox/admin/identities", json=new, headers=admin).status_code == 409
        bad = http.post(psc.url + "/sandbox/admin/identities", json={**new, "national_id": "12"}, headers=admin)
        assert bad.status_code == 400 and "national_id" in bad.json()["error_description"]
        r = http.post(psc.url + "/sandbox/admin/identities", content=b"{not json", headers=admin)
        assert r.status_code == 400
        t = psc.ciba_login(national_id="899900000123", kind="secret")
        assert intro(psc, http, t["access_token"])["SubjectNameID"] == "899900000123"

        r = http.put(psc.url + "/sandbox/admin/identities/899900000123/ecps", json={"mode": "deny"}, headers=admin)
        assert r.status_code == 200
        with pytest.raises(AssertionError, match="access_denied"):
            psc.ciba_login(national_id="899900000123", kind="secret")
        r = http.put(psc.url + "/sandbox/admin/ecps", json={"mode": "sometimes"}, headers=admin)
        assert r.status_code == 400

        client = {"client_id": "nouveau-lps", "secret": "un-secret-assez-long"}
        assert http.post(psc.url + "/sandbox/admin/clients", json=client, headers=admin).status_code == 201
        r = http.post(
            psc.url + "/sandbox/admin/clients", json={"client_id": "x", "espace_de_confiance": True}, headers=admin
        )
        assert r.status_code == 400
        r = http.post(
            psc.introspection_endpoint,
            data={"token": "x"},
            auth=("nouveau-lps", "un-secret-assez-long"),
        )
        assert r.status_code == 200

        r = http.put(psc.url + "/sandbox/admin/lifetimes", json={"access_token": 2}, headers=admin)
        assert r.json()["access_token"] == 2
        r = http.put(psc.url + "/sandbox/admin/lifetimes", json={"access_token": -1}, headers=admin)
        assert r.status_code == 400
        r = http.put(psc.url + "/sandbox/admin/lifetimes", json={"nope": 1}, headers=admin)
        assert r.status_code == 400


def test_admin_disabled_without_token(psc_sandbox_factory: Any) -> None:
    psc = psc_sandbox_factory(admin_token=None)
    with psc.client("none") as http:
        r = http.get(psc.url + "/sandbox/admin/identities", headers={"Authorization": "Bearer x"})
        assert r.status_code == 403


def test_random_garbage_never_500(psc_sandbox: PscHandle, http: httpx.Client) -> None:
    """Seeded random bodies, headers and query strings on every endpoint: always a 4xx/2xx/3xx."""
    import random

    rng = random.Random(20261128)
    paths = [
        ("POST", psc_sandbox.token_endpoint),
        ("POST", psc_sandbox.ciba_endpoint),
        ("POST", psc_sandbox.introspection_endpoint),
        ("POST", psc_sandbox.revocation_endpoint),
        ("POST", psc_sandbox.userinfo_endpoint),
        ("GET", psc_sandbox.userinfo_endpoint),
        ("POST", psc_sandbox.end_session_endpoint),
        ("GET", psc_sandbox.end_session_endpoint),
        ("GET", psc_sandbox.authorization_endpoint),
        ("POST", psc_sandbox.authorization_endpoint),
        ("POST", psc_sandbox.url + "/sandbox/ecps/x/approve"),
        ("POST", psc_sandbox.url + "/sandbox/admin/identities"),
        ("PUT", psc_sandbox.url + "/sandbox/admin/lifetimes"),
    ]
    names = ["grant_type", "client_id", "client_secret", "token", "auth_req_id", "refresh_token", "code", "scope",
             "login_hint", "binding_message", "id_token_hint", "redirect_uri", "tx", "csrf", "access_token"]  # fmt: skip
    values = ["", "=", "%", "%zz", "\x00", "é" * 3, "a" * 300, "openid scope_all", CIBA, "refresh_token", "a.b.c",
              psc_sandbox.secret_client_id, "1" * 12, "{}", "[]", "null"]  # fmt: skip
    ctypes = ["application/x-www-form-urlencoded", "application/json", "text/plain", "multipart/form-data", ""]
    for _ in range(300):
        method, url = rng.choice(paths)
        fields = {rng.choice(names): rng.choice(values) for _ in range(rng.randint(0, 5))}
        body = "&".join(f"{k}={v}" for k, v in fields.items()).encode("utf-8", "surrogateescape")
        if rng.random() < 0.2:
            body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
        headers = {"Content-Type": rng.choice(ctypes)}
        if rng.random() < 0.3:
            headers["Authorization"] = (
                rng.choice(["Basic ", "Bearer ", "Basic Og==", "Bearer a.b.c", "Digest x"]) + "zz"
            )
        if rng.random() < 0.2:
            headers["Authorization"] = f"Bearer {psc_sandbox.admin_token}"
        if method == "GET":
            r = http.request(method, url, params=fields, headers=headers)
        else:
            r = http.request(method, url, content=body, headers=headers)
        assert r.status_code < 500, (method, url, fields, r.text)
        if r.headers.get("content-type", "").startswith("application/json") and r.status_code >= 400:
            data = r.json()
            assert "error" in data and "error_description" in data
