"""Interoperability: Authlib's OAuth 2.0 / OIDC client (not written for this sandbox) drives
discovery, authorization code + PKCE, ID token validation, refresh, userinfo, introspection
and revocation. The browser step is the sandbox's login page, submitted like a browser does."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from confiance.core.tls import client_context
from tests.fixtures_psc import PscHandle

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from authlib.jose import JsonWebKey, jwt
    from authlib.oidc.core import CodeIDToken


def browser_login(psc: PscHandle, authorize_url: str, national_id: str, action: str = "approve") -> str:
    """Load the login page, choose an identity, submit; return the redirect Location."""
    with httpx.Client(verify=client_context(psc.ca_bundle)) as browser:
        page = browser.get(authorize_url)
        assert page.status_code == 200, page.text
        assert "fictives" in page.text
        tx = re.search(r"name='tx' value='([^']+)'", page.text)
        csrf = re.search(r"name='csrf' value='([^']+)'", page.text)
        assert tx and csrf
        r = browser.post(
            authorize_url.split("?")[0],
            data={"tx": tx.group(1), "csrf": csrf.group(1), "national_id": national_id, "action": action},
        )
        assert r.status_code == 302, r.text
        return r.headers["location"]


@pytest.fixture
def rp(psc_sandbox: PscHandle) -> Iterator[OAuth2Session]:
    s = OAuth2Session(
        client_id=psc_sandbox.web_client_id,
        client_secret=psc_sandbox.web_client_secret,
        scope="openid scope_all",
        redirect_uri=psc_sandbox.web_redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
    )
    s.verify = str(psc_sandbox.ca_bundle)
    yield s
    s.close()


def test_authlib_code_pkce_refresh_userinfo_introspect(psc_sandbox: PscHandle, rp: OAuth2Session) -> None:
    meta = requests.get(psc_sandbox.discovery_url, verify=str(psc_sandbox.ca_bundle), timeout=10).json()
    assert meta["code_challenge_methods_supported"] == ["S256"]
    verifier = generate_token(64)
    nonce = generate_token(20)
    url, state = rp.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
    location = browser_login(psc_sandbox, url, psc_sandbox.national_id)
    assert parse_qs(urlsplit(location).query)["state"] == [state]

    ca = str(psc_sandbox.ca_bundle)
    token = rp.fetch_token(meta["token_endpoint"], authorization_response=location, code_verifier=verifier, verify=ca)
    assert token["session_state"] and token["refresh_expires_in"] > 0

    jwks = JsonWebKey.import_key_set(
        requests.get(meta["jwks_uri"], verify=str(psc_sandbox.ca_bundle), timeout=10).json()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        claims = jwt.decode(
            token["id_token"],
            jwks,
            claims_cls=CodeIDToken,
            claims_options={"iss": {"essential": True, "value": meta["issuer"]}},
            claims_params={
                "nonce": nonce,
                "client_id": psc_sandbox.web_client_id,
                "access_token": token["access_token"],
            },
        )
        claims.validate()
    assert claims["acr"] == "eidas1" and claims["preferred_username"] == psc_sandbox.national_id

    info = rp.get(meta["userinfo_endpoint"], verify=ca).json()
    assert info["SubjectNameID"] == psc_sandbox.national_id
    assert info["SubjectRefPro"]["exercices"][0]["activities"]
    assert info["sub"] == claims["sub"]

    intro = rp.introspect_token(meta["introspection_endpoint"], token=token["access_token"], verify=ca).json()
    assert intro["active"] is True and intro["SubjectNameID"] == psc_sandbox.national_id

    old_refresh = token["refresh_token"]
    new = rp.refresh_token(meta["token_endpoint"], refresh_token=old_refresh, verify=ca)
    assert new["refresh_token"] != old_refresh and new["access_token"] != token["access_token"]
    assert rp.get(meta["userinfo_endpoint"], verify=ca).status_code == 200

    assert rp.revoke_token(meta["revocation_endpoint"], token=new["refresh_token"], verify=ca).status_code == 200
    intro = rp.introspect_token(meta["introspection_endpoint"], token=new["access_token"], verify=ca).json()
    assert intro == {"active": False}


def test_authlib_code_errors(psc_sandbox: PscHandle, rp: OAuth2Session) -> None:
    verifier = generate_token(64)
    url, _ = rp.create_authorization_url(psc_sandbox.authorization_endpoint, code_verifier=verifier)
    location = browser_login(psc_sandbox, url, psc_sandbox.national_id)
    code = parse_qs(urlsplit(location).query)["code"][0]
    auth = (psc_sandbox.web_client_id, psc_sandbox.web_client_secret)
    verify = str(psc_sandbox.ca_bundle)

    def redeem(**over: str) -> requests.Response:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": psc_sandbox.web_redirect_uri}
        return requests.post(psc_sandbox.token_endpoint, data={**data, **over}, auth=auth, verify=verify, timeout=10)

    bad_pkce = redeem(code_verifier=generate_token(64))
    assert bad_pkce.status_code == 400 and bad_pkce.json()["error"] == "invalid_grant"
    wrong_uri = redeem(code_verifier=verifier, redirect_uri="https://127.0.0.1/other")
    assert wrong_uri.status_code == 400 and wrong_uri.json()["error"] == "invalid_grant"
    ok = redeem(code_verifier=verifier)
    assert ok.status_code == 200
    replay = redeem(code_verifier=verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # the replay revoked what the code produced
    intro = requests.post(
        psc_sandbox.introspection_endpoint,
        data={"token": ok.json()["access_token"]},
        auth=auth,
        verify=verify,
        timeout=10,
    ).json()
    assert intro == {"active": False}


def test_authorize_request_validation(psc_sandbox: PscHandle) -> None:
    with httpx.Client(verify=client_context(psc_sandbox.ca_bundle)) as http:
        base = {
            "client_id": psc_sandbox.web_client_id,
            "redirect_uri": psc_sandbox.web_redirect_uri,
            "response_type": "code",
            "scope": "openid",
            "state": "xyz",
        }
        # unregistered redirect URI: error page, no redirect
        r = http.get(psc_sandbox.authorization_endpoint, params={**base, "redirect_uri": "https://evil.test/cb"})
        assert r.status_code == 400 and "redirect_uri" in r.text
        # no PKCE: redirected error with state
        r = http.get(psc_sandbox.authorization_endpoint, params=base)
        assert r.status_code == 302
        q = parse_qs(urlsplit(r.headers["location"]).query)
        assert q["error"] == ["invalid_request"] and q["state"] == ["xyz"]
        # login_hint preselects the identity on the page
        hint = psc_sandbox.identities[4]["national_id"]
        r = http.get(
            psc_sandbox.authorization_endpoint,
            params={**base, "code_challenge": "a" * 43, "code_challenge_method": "S256", "login_hint": hint},
        )
        assert r.status_code == 200 and f"value='{hint}' selected" in r.text
        # plain PKCE refused
        r = http.get(
            psc_sandbox.authorization_endpoint,
            params={**base, "code_challenge": "a" * 43, "code_challenge_method": "plain"},
        )
        assert parse_qs(urlsplit(r.headers["location"]).query)["error"] == ["invalid_request"]


def test_login_page_deny_and_csrf(psc_sandbox: PscHandle, rp: OAuth2Session) -> None:
    url, state = rp.create_authorization_url(psc_sandbox.authorization_endpoint, code_verifier=generate_token(64))
    location = browser_login(psc_sandbox, url, psc_sandbox.national_id, action="deny")
    q = parse_qs(urlsplit(location).query)
    assert q["error"] == ["access_denied"] and q["state"] == [state]
    with httpx.Client(verify=client_context(psc_sandbox.ca_bundle)) as browser:
        page = browser.get(url)
        tx = re.search(r"name='tx' value='([^']+)'", page.text)
        assert tx
        forged = browser.post(url.split("?")[0], data={"tx": tx.group(1), "csrf": "0" * 64, "action": "approve"})
        assert forged.status_code == 400
