"""eIDAS levels as PSC answers them in 2026: ``acr`` eidas1/eidas2, ``authMode``, ``auth_level``.

Seeded identities: DUBOIS-TEST (index 6) reaches eidas2 with her CPS card and eidas1 with
her e-CPS; MOREAU-TEST (7) eidas2 on both; LAURENT-TEST (8) has no card (MOBILE only);
the others eidas1 everywhere.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from confiance.core.jose import verify_jwt
from confiance.core.tls import client_context
from confiance.psc.domain import OAuthError, Provider
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle
from tests.psc.conftest import CIBA, Clock, ciba_params, nid

CARD_EIDAS2, BOTH_EIDAS2, NO_CARD = 6, 7, 8


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return result


def _ciba(provider: Provider, clock: Clock, index: int, **over: str) -> dict[str, Any]:
    lps = provider.clients["lps"]
    rid = provider.ciba_start(lps, ciba_params(provider, login_hint=nid(provider, index), **over), clock())
    return provider.token(lps, {"grant_type": CIBA, "auth_req_id": rid["auth_req_id"]}, clock())


@pytest.mark.parametrize(
    ("index", "channel", "acr_values", "expected"),
    [
        (0, "CARD", "eidas1", "eidas1"),
        (CARD_EIDAS2, "CARD", "eidas1", "eidas2"),  # a higher level satisfies: PSC's 2026 answer
        (CARD_EIDAS2, "MOBILE", "eidas1", "eidas1"),
        (CARD_EIDAS2, "CARD", "eidas2", "eidas2"),
        (BOTH_EIDAS2, "MOBILE", "eidas2 eidas1", "eidas2"),
        (0, "CARD", "eidas2 eidas1", "eidas1"),  # preference list: the second choice is met
        (CARD_EIDAS2, "CARD", "eidas3 eidas2", "eidas2"),  # unknown values are skipped
        (NO_CARD, "MOBILE", "eidas1", "eidas1"),
    ],
)
def test_level_follows_means_and_channel(
    provider: Provider, clock: Clock, index: int, channel: str, acr_values: str, expected: str
) -> None:
    tokens = _ciba(provider, clock, index, channel=channel, acr_values=acr_values)
    for token in (tokens["access_token"], tokens["id_token"]):
        claims = _claims(token)
        assert (claims["acr"], claims["authMode"], claims["auth_level"]) == (expected, channel, "1")
    intro = provider.introspect(provider.clients["lps"], tokens["access_token"], None, clock())
    assert (intro["acr"], intro["authMode"], intro["auth_level"]) == (expected, channel, "1")
    # the level is the session's: a refresh keeps it
    refreshed = provider.token(
        provider.clients["lps"], {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, clock()
    )
    assert _claims(refreshed["id_token"])["acr"] == expected


def test_without_acr_values_the_level_reached_is_issued(provider: Provider, clock: Clock) -> None:
    params = ciba_params(provider, login_hint=nid(provider, CARD_EIDAS2))
    del params["acr_values"]
    lps = provider.clients["lps"]
    rid = provider.ciba_start(lps, params, clock())["auth_req_id"]
    assert (
        _claims(provider.token(lps, {"grant_type": CIBA, "auth_req_id": rid}, clock())["id_token"])["acr"] == "eidas2"
    )


@pytest.mark.parametrize(
    ("index", "channel", "acr_values", "error"),
    [
        (0, "CARD", "eidas2", "unmet_authentication_requirements"),
        (CARD_EIDAS2, "MOBILE", "eidas2", "unmet_authentication_requirements"),
        (NO_CARD, "CARD", "eidas1", "access_denied"),  # no CPS card: no CARD channel
        (0, "CARD", "eidas3", "invalid_request"),
        (0, "CARD", "", "invalid_request"),
    ],
)
def test_unreachable_level_is_refused_at_the_backchannel(
    provider: Provider, clock: Clock, index: int, channel: str, acr_values: str, error: str
) -> None:
    params = ciba_params(provider, login_hint=nid(provider, index), channel=channel, acr_values=acr_values)
    with pytest.raises(OAuthError) as exc:
        provider.ciba_start(provider.clients["lps"], params, clock())
    assert (exc.value.error, exc.value.status) == (error, 400)
    assert provider.pending_ciba(clock()) == []


# ---------------------------------------------------------------- browser flow
def _authorize(psc: PscHandle, national_id: str, channel: str, acr_values: str | None) -> dict[str, list[str]]:
    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code",
        "client_id": psc.web_client_id,
        "redirect_uri": psc.web_redirect_uri,
        "scope": "openid scope_all",
        "state": "st",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **({"acr_values": acr_values} if acr_values is not None else {}),
    }
    url = f"{psc.authorization_endpoint}?{urlencode(query)}"
    with httpx.Client(verify=client_context(psc.ca_bundle)) as browser:
        page = browser.get(url)
        assert "Carte CPS" in page.text and "e-CPS" in page.text
        tx = re.search(r"name='tx' value='([^']+)'", page.text)
        csrf = re.search(r"name='csrf' value='([^']+)'", page.text)
        assert tx and csrf
        form = {"tx": tx.group(1), "csrf": csrf.group(1), "national_id": national_id, "action": "approve"}
        r = browser.post(psc.authorization_endpoint, data={**form, "channel": channel})
        assert r.status_code == 302, r.text
        back = parse_qs(urlsplit(r.headers["location"]).query)
        if "code" not in back:
            return back
        with psc.client("none") as http:
            t = http.post(
                psc.token_endpoint,
                auth=(psc.web_client_id, psc.web_client_secret),
                data={
                    "grant_type": "authorization_code",
                    "code": back["code"][0],
                    "redirect_uri": psc.web_redirect_uri,
                    "code_verifier": verifier,
                },
            )
        assert t.status_code == 200, t.text
        claims = _claims(t.json()["id_token"])
        return {k: [str(claims[k])] for k in ("acr", "authMode", "auth_level")}


def test_browser_login_level_by_means(psc_sandbox: PscHandle) -> None:
    ids = [i["national_id"] for i in psc_sandbox.identities]
    card = _authorize(psc_sandbox, ids[CARD_EIDAS2], "CARD", "eidas1")
    assert card == {"acr": ["eidas2"], "authMode": ["CARD"], "auth_level": ["1"]}
    mobile = _authorize(psc_sandbox, ids[CARD_EIDAS2], "MOBILE", None)
    assert mobile["acr"] == ["eidas1"] and mobile["authMode"] == ["MOBILE"]
    refused = _authorize(psc_sandbox, ids[0], "CARD", "eidas2")
    assert refused["error"] == ["unmet_authentication_requirements"] and refused["state"] == ["st"]
    no_card = _authorize(psc_sandbox, ids[NO_CARD], "CARD", None)
    assert no_card["error"] == ["access_denied"]


# ---------------------------------------------------------------- over TLS, with the other components
def test_discovery_publishes_both_levels(psc_sandbox: PscHandle) -> None:
    with psc_sandbox.client("none") as http:
        meta = http.get(psc_sandbox.discovery_url).json()
    assert meta["acr_values_supported"] == ["eidas1", "eidas2"]
    assert {"acr", "authMode", "auth_level"} <= set(meta["claims_supported"])


def test_eidas2_tokens_are_accepted_by_the_api(psc_sandbox: PscHandle, api_services: ApiHandle) -> None:
    """The proxy asks ``acr_values=eidas1`` (its default); a card holder's answer is eidas2,
    signed by the sandbox and accepted by the API's token exchange (it checks no ``acr``)."""
    national_id = psc_sandbox.identities[CARD_EIDAS2]["national_id"]
    tokens = psc_sandbox.ciba_login(national_id=national_id)
    with psc_sandbox.client("none") as http:
        jwks = http.get(psc_sandbox.jwks_uri).json()
    claims = verify_jwt(tokens["id_token"], jwks, issuer=psc_sandbox.issuer, audience=psc_sandbox.mtls_client_id)
    assert claims["acr"] == "eidas2" and claims["authMode"] == "CARD"
    exchanged = api_services.exchange(tokens["access_token"])
    assert exchanged.status_code == 200, exchanged.text


def test_eidas2_session_through_the_proxy(
    pki: Any, server_cert: Any, psc_sandbox: PscHandle, api_services: ApiHandle, tmp_path: Any
) -> None:
    """The real proxy (acr_values=eidas1, ID token verified) connects a card holder whose PSC
    answer is eidas2 and relays a call to the API with it: both levels pass end to end."""
    from tests.proxy.harness import connect_body, proxy_config, start_proxy

    proxy = start_proxy(proxy_config(pki, server_cert, psc_sandbox, api_services, tmp_path), pki)
    national_id = psc_sandbox.identities[CARD_EIDAS2]["national_id"]
    try:
        with proxy.client() as c:
            r = c.post("/connect", json=connect_body(psc_sandbox, national_id))
            assert r.status_code == 200, r.text
            session = r.json()
            data = {
                "nationalId": national_id,
                "clientID": psc_sandbox.mtls_client_id,
                "proxy_session_id": session["proxy_session_id"],
                "session_state": session["session_state"],
            }
            sent = c.post("/send/signsessiondata/signsessiondata", json=data)
            assert sent.status_code == 200, sent.text
        live = [s for s in psc_sandbox.sandbox.store.sessions() if s.id == session["session_state"]]
        assert [(s.acr, s.channel) for s in live] == [("eidas2", "CARD")]
    finally:
        proxy.stop()
