"""Authorization-code flow for web LPS (PKCE, state, nonce) against the real PSC sandbox login page."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from confiance.core.tls import client_context
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle
from tests.proxy.harness import RunningProxy, proxy_config, start_proxy

WEB_SECRET = secrets.token_urlsafe(24)
LANDING = "https://lps.example/accueil"


@pytest.fixture(scope="module")
def proxy(
    pki, server_cert, psc_sandbox: PscHandle, api_services: ApiHandle, tmp_path_factory
) -> Iterator[RunningProxy]:
    client_id = "web-lps-" + secrets.token_hex(3)
    base = proxy_config(pki, server_cert, psc_sandbox, api_services, tmp_path_factory.mktemp("web"))
    clients = [c.model_dump() for c in base.lps_clients] + [
        {
            # Secret at PSC (a "Communauté" web client); its ORG AUTH_CLI certificate at the API AS.
            "client_id": client_id,
            "auth": "secret",
            "secret": WEB_SECRET,
            "cert": psc_sandbox.mtls_cert.cert_path,
            "key": psc_sandbox.mtls_cert.key_path,
            "as_client_id": psc_sandbox.mtls_client_id,
            "web_redirect_url": LANDING,
        }
    ]
    cfg = proxy_config(pki, server_cert, psc_sandbox, api_services, tmp_path_factory.mktemp("web"), lps_clients=clients)
    p = start_proxy(cfg, pki)
    p.core.cfg.server.public_url = p.url
    with psc_sandbox.client("none") as http:
        r = http.post(
            f"{psc_sandbox.url}/sandbox/admin/clients",
            headers={"Authorization": f"Bearer {psc_sandbox.admin_token}"},
            json={"client_id": client_id, "secret": WEB_SECRET, "redirect_uris": [f"{p.url}/callback"]},
        )
        assert r.status_code == 201, r.text
    p.web_client_id = client_id  # type: ignore[attr-defined]
    yield p
    p.stop()


def _browser(pki: Any) -> httpx.Client:
    return httpx.Client(verify=client_context(pki.ca_bundle), timeout=20, follow_redirects=False)


def _login(browser: httpx.Client, proxy: RunningProxy, nid: str, action: str = "approve") -> httpx.Response:
    r = browser.get(f"{proxy.url}/authorize", params={"clientId": proxy.web_client_id})  # type: ignore[attr-defined]
    assert r.status_code == 302, r.text
    auth_url = r.headers["location"]
    q = parse_qs(urlparse(auth_url).query)
    assert q["code_challenge_method"] == ["S256"] and q["state"] and q["nonce"]
    assert "proxy_auth_state=" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    page = browser.get(auth_url)
    assert page.status_code == 200, page.text
    tx = re.search(r"name='tx' value='([^']+)'", page.text).group(1)  # type: ignore[union-attr]
    csrf = re.search(r"name='csrf' value='([^']+)'", page.text).group(1)  # type: ignore[union-attr]
    back = browser.post(auth_url.split("?")[0], data={"tx": tx, "csrf": csrf, "national_id": nid, "action": action})
    assert back.status_code == 302
    assert back.headers["location"].startswith(f"{proxy.url}/callback?")
    return browser.get(back.headers["location"])


def test_web_login_then_send(proxy: RunningProxy, psc_sandbox: PscHandle) -> None:
    nid = psc_sandbox.identities[16]["national_id"]
    with _browser(proxy.pki) as browser:
        done = _login(browser, proxy, nid)
        assert done.status_code == 302 and done.headers["location"] == LANDING
        cookies = done.headers.get_list("set-cookie")
        session_cookie = next(c for c in cookies if c.startswith("proxy_session_id="))
        for attr in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
            assert attr in session_cookie
        sid = session_cookie.split(";")[0].split("=", 1)[1]
        r = browser.get(f"{proxy.url}/send/dmp/fhir/DocumentReference")
        assert r.status_code < 500 and r.status_code != 401, r.text
    trace = [t for t in proxy.traces() if t.get("proxy_id_session") == sid]
    assert trace[0]["type"] == "CONNECT_SUCCESS" and trace[0]["IdRPPS"] == nid


def test_callback_needs_this_browsers_state(proxy: RunningProxy, psc_sandbox: PscHandle) -> None:
    nid = psc_sandbox.identities[17]["national_id"]
    with _browser(proxy.pki) as victim, _browser(proxy.pki) as attacker:
        r = attacker.get(f"{proxy.url}/authorize", params={"clientId": proxy.web_client_id})  # type: ignore[attr-defined]
        state = parse_qs(urlparse(r.headers["location"]).query)["state"][0]
        # Login CSRF: a callback URL pushed to another browser is refused (no state cookie there).
        forged = victim.get(f"{proxy.url}/callback", params={"code": "x", "state": state})
        assert forged.status_code == 400
        assert "proxy_session_id" not in forged.headers.get("set-cookie", "")
    with _browser(proxy.pki) as browser:
        ok = _login(browser, proxy, nid)
        assert ok.status_code == 302
        replay = browser.get(str(ok.request.url))
        assert replay.status_code == 400  # single-use state


def test_web_login_denied(proxy: RunningProxy, psc_sandbox: PscHandle) -> None:
    with _browser(proxy.pki) as browser:
        r = _login(browser, proxy, psc_sandbox.identities[18]["national_id"], action="deny")
        assert r.status_code == 400 and "refusé" in r.text
        assert "proxy_session_id=" not in r.headers.get("set-cookie", "")
    fails = [t for t in proxy.traces() if t["type"] == "CONNECT_FAILURE"]
    assert fails and fails[-1]["reason"] == "access_denied"


def test_unknown_web_client(proxy: RunningProxy) -> None:
    with _browser(proxy.pki) as browser:
        assert browser.get(f"{proxy.url}/authorize", params={"clientId": "nope"}).status_code == 404
