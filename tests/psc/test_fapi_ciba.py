"""The sandbox's own conformance plan: the OIDF FAPI-CIBA-ID1 modules for poll mode + mTLS.

One test per module of the OpenID Foundation conformance suite's FAPI-CIBA-ID1 test plan
(``fapi-ciba-id1-*``, variant ``client_auth_type=mtls``, ``ciba_mode=poll``), named after
it, run against a real sandbox over TLS with two registered mTLS clients, as the suite
configures ``client``/``mtls`` and ``client2``/``mtls2``. The sandbox's clock is injected:
the e-CPS answers by hand (``manual``) and expiry is reached by advancing the clock.

Modules of the plan that do not apply, and why:
- the request-object modules (``ensure-request-object-*``, ``ensure-backchannel-
  authorization-request-without-request-fails``, ``ensure-different-client-id-and-issuer-
  in-backchannel-authorization-request``): PSC takes plain form parameters, not signed
  request objects (``request_parameter_supported: false``);
- the ``private_key_jwt`` modules (``ensure-client-assertion-*``, ``ensure-without-client-
  assertion-*``, ``ensure-invalid-client-assertions-*``): PSC's trust space uses mTLS;
- the ``*-for-brazil`` and ``connectid-*`` modules: other ecosystems' profiles.
"""

from __future__ import annotations

import ssl
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from confiance.core.jose import verify_jwt
from confiance.core.tls import ClientIdentity, client_context
from confiance.pki import IssuedCertificate, Pki
from confiance.psc.config import ClientConfig
from confiance.psc.errors import OAuthError
from tests.fixtures_psc import PscHandle, build_psc

CIBA = "urn:openid:params:grant-type:ciba"
CLIENT2 = "lps-mtls-2"
CLIENT2_STRUCT = "3" + "90000000004011"  # fictitious SIRET


@dataclass
class Clock:
    t: float = 1_900_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Plan:
    psc: PscHandle
    clock: Clock
    cert2: IssuedCertificate

    def http(self, client: int = 1, cert: int | None = None) -> httpx.Client:
        """An HTTPS client presenting ``mtls`` (1), ``mtls2`` (2) or no certificate (0)."""
        which = client if cert is None else cert
        identity = {
            0: None,
            1: self.psc.mtls_identity,
            2: ClientIdentity(self.cert2.cert_path, self.cert2.key_path),  # type: ignore[arg-type]
        }[which]
        return httpx.Client(verify=client_context(self.psc.ca_bundle, identity), timeout=20)

    @staticmethod
    def client_id(client: int) -> str:
        return "lps-mtls" if client == 1 else CLIENT2

    def backchannel(self, client: int = 1, cert: int | None = None, **params: str | None) -> httpx.Response:
        form: dict[str, str] = {
            "client_id": self.client_id(client),
            "scope": "openid scope_all",
            "acr_values": "eidas1",
            "login_hint": self.psc.national_id,
            "binding_message": "42",
            "channel": "CARD",
        }
        for k, v in params.items():
            if v is None:
                form.pop(k, None)
            else:
                form[k] = v
        with self.http(client, cert) as http:
            return http.post(self.psc.ciba_endpoint, data=form)

    def start(self, client: int = 1, **params: str | None) -> str:
        r = self.backchannel(client, **params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"auth_req_id", "expires_in", "interval"}
        rid: str = body["auth_req_id"]
        assert len(rid) >= 20  # CIBA §7.3: enough entropy
        return rid

    def token(self, client: int = 1, cert: int | None = None, **form: str) -> httpx.Response:
        with self.http(client, cert) as http:
            return http.post(self.psc.token_endpoint, data={"client_id": self.client_id(client), **form})

    def poll(self, rid: str, client: int = 1, cert: int | None = None) -> httpx.Response:
        return self.token(client, cert, grant_type=CIBA, auth_req_id=rid)

    def approve(self, rid: str) -> None:
        self.psc.approve(rid)

    def validate_tokens(self, body: dict[str, Any], client: int = 1) -> dict[str, Any]:
        """What the suite checks on a successful token response (FAPI-CIBA §5.2.2, OIDC §3.1.3.3)."""
        assert body["token_type"].lower() == "bearer" and body["expires_in"] > 0
        assert {"access_token", "refresh_token", "id_token", "scope"} <= set(body)
        with self.http(0) as http:
            jwks = http.get(self.psc.jwks_uri).json()
        claims = verify_jwt(
            body["id_token"], jwks, issuer=self.psc.issuer, audience=self.client_id(client), now=self.clock()
        )
        assert claims["sub"] and claims["auth_time"] <= self.clock() and "nonce" not in claims
        return claims


def expect_error(r: httpx.Response, errors: set[str], statuses: frozenset[int] | set[int] = frozenset({400})) -> str:
    """RFC 6749 §5.2 / CIBA §13: JSON error, allowed code and status, printable description."""
    assert r.status_code in statuses, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] in errors, body
    desc = body.get("error_description", "")
    assert isinstance(desc, str) and not any(c in desc for c in "\r\n\t")
    return str(body["error"])


@pytest.fixture(scope="module")
def plan(pki: Pki, server_cert: IssuedCertificate) -> Iterator[Plan]:
    clock = Clock()
    cert2 = pki.ensure_client("psc-test-lps-mtls-2", CLIENT2_STRUCT, "lps-test-mtls-2")
    client2 = ClientConfig(
        client_id=CLIENT2, tls_client_auth_subject_dn=cert2.subject_dn, espace_de_confiance=True, name="LPS 2"
    )
    psc = build_psc(
        pki,
        server_cert,
        clock=clock,
        clients=[client2],
        lifetimes={"ciba_interval": 5},
        ecps_default={"mode": "manual", "delay_ms": 0},
    )
    yield Plan(psc, clock, cert2)
    psc.stop()


# ---------------------------------------------------------------- the modules
def test_fapi_ciba_id1_discovery_end_point_verification(plan: Plan) -> None:
    with plan.http(0) as http:
        meta = http.get(plan.psc.discovery_url).json()
    assert meta["issuer"] == plan.psc.issuer
    assert meta["backchannel_token_delivery_modes_supported"] == ["poll"]
    assert meta["backchannel_authentication_endpoint"].startswith("https://")
    assert CIBA in meta["grant_types_supported"]
    assert "tls_client_auth" in meta["token_endpoint_auth_methods_supported"]
    assert meta["backchannel_user_code_parameter_supported"] is False
    assert {"openid"} <= set(meta["scopes_supported"])
    assert "RS256" in meta["id_token_signing_alg_values_supported"]


def test_fapi_ciba_id1(plan: Plan) -> None:
    """The happy path: request, pending, user authenticates, tokens, userinfo."""
    rid = plan.start()
    assert plan.poll(rid).json()["error"] == "authorization_pending"
    plan.approve(rid)
    plan.clock.advance(5)
    r = plan.poll(rid)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    claims = plan.validate_tokens(r.json())
    with plan.http() as http:
        info = http.get(plan.psc.userinfo_endpoint, headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert info.status_code == 200 and info.json()["sub"] == claims["sub"]


def test_fapi_ciba_id1_user_rejects_authentication(plan: Plan) -> None:
    rid = plan.start()
    plan.psc.deny(rid)
    assert expect_error(plan.poll(rid), {"access_denied"}) == "access_denied"
    plan.clock.advance(5)
    expect_error(plan.poll(rid), {"access_denied", "invalid_grant", "expired_token"})  # never tokens


def test_fapi_ciba_id1_auth_req_id_expired(plan: Plan) -> None:
    rid = plan.start(requested_expiry="30")
    plan.clock.advance(31)
    expect_error(plan.poll(rid), {"expired_token"})
    with pytest.raises(OAuthError, match="terminée"):
        plan.approve(rid)  # the user is too late


def test_fapi_ciba_id1_multiple_call_to_token_endpoint(plan: Plan) -> None:
    """Calls in a short space of time while pending: authorization_pending, then slow_down;
    once the user authenticated, one call gets the tokens and the next one with the same
    auth_req_id fails (single use, CIBA §11)."""
    rid = plan.start()
    assert expect_error(plan.poll(rid), {"authorization_pending"}) == "authorization_pending"
    assert expect_error(plan.poll(rid), {"slow_down"}) == "slow_down"
    plan.approve(rid)
    plan.clock.advance(5)
    assert plan.poll(rid).status_code == 200
    plan.clock.advance(5)
    expect_error(plan.poll(rid), {"invalid_grant"})


def test_fapi_ciba_id1_ensure_wrong_auth_req_id_in_token_endpoint_request(plan: Plan) -> None:
    """client 1's auth_req_id presented by client 2 (its own certificate): invalid_grant, and
    client 1 can still redeem it; a made-up auth_req_id fails the same way."""
    rid = plan.start(client=1)
    plan.approve(rid)
    expect_error(plan.poll(rid, client=2), {"invalid_grant"})
    expect_error(plan.poll("x" * 36, client=1), {"invalid_grant"})
    assert plan.poll(rid, client=1).status_code == 200


def test_fapi_ciba_id1_ensure_wrong_client_id_in_backchannel_authorization_request(plan: Plan) -> None:
    """client 2's client_id with client 1's certificate."""
    before = plan.psc.pending()
    r = plan.backchannel(client=2, cert=1)
    expect_error(r, {"access_denied", "invalid_request", "invalid_client"}, {400, 401})
    assert plan.psc.pending() == before


def test_fapi_ciba_id1_ensure_wrong_client_id_in_token_endpoint_request(plan: Plan) -> None:
    rid = plan.start(client=1)
    plan.approve(rid)
    expect_error(plan.poll(rid, client=2, cert=1), {"invalid_client", "invalid_grant"}, {400, 401})
    assert plan.poll(rid, client=1).status_code == 200  # nothing was consumed by the wrong call


def test_fapi_ciba_id1_ensure_authorization_request_with_multiple_hints_fails(plan: Plan) -> None:
    rid = plan.start()
    plan.approve(rid)
    plan.clock.advance(5)
    id_token = plan.poll(rid).json()["id_token"]
    before = plan.psc.pending()
    for extra in ({"id_token_hint": id_token}, {"login_hint_token": "eyJhbGciOiJub25lIn0.e30."}):
        expect_error(plan.backchannel(**extra), {"invalid_request"})
    assert plan.psc.pending() == before


def test_fapi_ciba_id1_ensure_requested_expiry_as_string_succeeds(plan: Plan) -> None:
    """Form parameters are strings: ``requested_expiry="30"`` is honoured (capped lifetime)."""
    r = plan.backchannel(requested_expiry="30")
    assert r.status_code == 200, r.text
    assert 0 < r.json()["expires_in"] <= 30
    expect_error(plan.backchannel(requested_expiry="trente"), {"invalid_request"})


def test_fapi_ciba_id1_ensure_other_scope_order_succeeds(plan: Plan) -> None:
    rid = plan.start(scope="scope_all openid")
    plan.approve(rid)
    plan.clock.advance(5)
    r = plan.poll(rid)
    assert r.status_code == 200, r.text
    assert set(r.json()["scope"].split()) == {"openid", "scope_all"}
    plan.validate_tokens(r.json())


def test_fapi_ciba_id1_ensure_authorization_request_with_binding_message_succeeds(plan: Plan) -> None:
    """PSC's binding message (two digits) is shown to the professional as sent."""
    rid = plan.start(binding_message="07")
    assert [p["binding_message"] for p in plan.psc.pending() if p["auth_req_id"] == rid] == ["07"]
    with plan.http(0) as http:
        assert ">07<" in http.get(plan.psc.ecps_url).text
    plan.approve(rid)
    plan.clock.advance(5)
    assert plan.poll(rid).status_code == 200


def test_fapi_ciba_id1_ensure_authorization_request_with_potentially_bad_binding_message(plan: Plan) -> None:
    """A long non-ASCII message the e-CPS app cannot show: invalid_binding_message (CIBA §13)."""
    message = "1234 ✓ Ünïcödé binding message that the authentication device may not display"
    expect_error(plan.backchannel(binding_message=message), {"invalid_binding_message"})
    expect_error(plan.backchannel(binding_message=None), {"invalid_binding_message"})


def test_fapi_ciba_id1_ensure_mtls_holder_of_key_required(plan: Plan) -> None:
    """No client certificate at the token endpoint: refused; and TLS below 1.2 is refused."""
    rid = plan.start()
    plan.approve(rid)
    expect_error(plan.poll(rid, cert=0), {"invalid_client", "invalid_request"}, {400, 401})
    assert plan.poll(rid).status_code == 200  # the refused call consumed nothing
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(plan.psc.ca_bundle))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that only the server can be the one refusing
    with pytest.raises(httpx.ConnectError), httpx.Client(verify=old) as http:
        http.get(plan.psc.discovery_url)


def test_fapi_ciba_id1_refresh_token(plan: Plan) -> None:
    """Refresh with the same certificate: new tokens, same subject and session, rotation."""
    rid = plan.start()
    plan.approve(rid)
    plan.clock.advance(5)
    first = plan.poll(rid).json()
    first_claims = plan.validate_tokens(first)
    plan.clock.advance(10)
    r = plan.token(grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    claims = plan.validate_tokens(second)
    assert (claims["sub"], claims["sid"]) == (first_claims["sub"], first_claims["sid"])
    # refresh tokens are bound to the client that got them, and rotate
    expect_error(
        plan.token(client=2, grant_type="refresh_token", refresh_token=second["refresh_token"]), {"invalid_grant"}
    )
    expect_error(plan.token(grant_type="refresh_token", refresh_token=first["refresh_token"]), {"invalid_grant"})
