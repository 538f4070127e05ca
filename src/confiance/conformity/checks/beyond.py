"""Beyond ANS's tool: refresh, idle expiry, the authorization-code flow, legacy TLS refused."""

from __future__ import annotations

import re
import secrets
import socket
import ssl
import warnings
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from ..http import session_cookie, set_cookies
from ..model import CheckFailed, Evidence, NotApplicable, Unverifiable, require
from .campaign import Campaign
from .send import verify_signed


def check_refresh(c: Campaign, ev: Evidence) -> None:
    c.need_sandbox()  # shortening the sandbox's lifetimes proves nothing about another PSC
    with c.lifetimes(ev, access_token=2.0):
        ev.note("jeton d'accès PSC raccourci à 2 s pour ce scénario")
        s = c.new_session(ev, c.cfg.national_id, "POST /connect (session de rafraîchissement)")
    try:
        c.wait(ev, 3.0, "le jeton d'accès PSC de la session expire")
        resp = c.sign(ev, s, f"POST {c.send_path()} après expiration du jeton PSC")
        verify_signed(c, ev, resp, c.session_data(s))
    finally:
        c.disconnect(ev, s.proxy_session_id, "DELETE /disconnect (fin du scénario)")


def check_idle(c: Campaign, ev: Evidence) -> None:
    c.need_sandbox()
    with c.lifetimes(ev, access_token=1.0, session_idle=3.0):
        ev.note("session PSC : inactivité maximale raccourcie à 3 s (jeton d'accès 1 s)")
        s = c.new_session(ev, c.cfg.national_id, "POST /connect (session d'inactivité)")
        try:
            c.wait(ev, 4.5, "la session PSC expire par inactivité")
            first = c.sign(ev, s, "POST /send après inactivité")
            second = c.sign(ev, s, "POST /send suivant")
        finally:
            if s.proxy_session_id in c.open_sessions:
                c.disconnect(ev, s.proxy_session_id, "DELETE /disconnect (nettoyage)")
    require(first.status_code >= 400, f"/send après expiration de la session PSC : HTTP {first.status_code}")
    require(second.status_code == 401, f"la session n'est pas terminée : HTTP {second.status_code} au lieu de 401")


def check_auth_code(c: Campaign, ev: Evidence) -> None:
    resp = c.proxy.request(
        ev,
        "GET",
        "/authorize",
        params={"clientId": c.cfg.web_client_id or c.cfg.client_id},
        label="GET /authorize (flux code)",
    )
    if resp.status_code in (404, 405, 501):
        raise NotApplicable("le proxy n'offre pas le flux authorization code (/authorize absent)")
    require(resp.status_code in (302, 303, 307), f"HTTP {resp.status_code} au lieu d'une redirection vers PSC")
    location = resp.headers.get("location", "")
    parts = urlsplit(location)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    require(parts.scheme == "https", "redirection non HTTPS")
    require(parts.path.endswith("/protocol/openid-connect/auth"), f"redirection hors de PSC : {parts.path}")
    if c.cfg.psc_url:
        require(
            location.startswith(c.cfg.psc_url.rstrip("/") + "/"),
            "redirection vers un autre fournisseur que le bac à sable",
        )
    problems = []
    if params.get("response_type") != "code":
        problems.append("response_type ≠ code")
    if params.get("client_id") != (c.cfg.web_client_id or c.cfg.client_id):
        problems.append("client_id ≠ clientId")
    if params.get("code_challenge_method") != "S256" or len(params.get("code_challenge", "")) < 43:
        problems.append("PKCE S256 absent")
    for name in ("state", "nonce", "redirect_uri"):
        if not params.get(name):
            problems.append(f"{name} absent")
    if "openid" not in params.get("scope", "").split():
        problems.append("scope sans openid")
    require(not problems, "requête d'autorisation : " + " ; ".join(problems))
    callback = urlsplit(params["redirect_uri"])
    cb_path = callback.path or "/callback"
    forged = c.proxy.request(
        ev,
        "GET",
        cb_path,
        params={"code": secrets.token_urlsafe(16), "state": secrets.token_urlsafe(16)},
        label="GET callback (state forgé)",
    )
    require(forged.status_code >= 400, f"callback avec state forgé : HTTP {forged.status_code}")
    require(session_cookie(forged) is None, "callback avec state forgé : cookie de session posé")
    _complete_code_flow(c, ev, resp, location)


_HIDDEN_RE = re.compile(r"name=['\"](tx|csrf)['\"]\s+value=['\"]([^'\"]*)['\"]")


def _complete_code_flow(c: Campaign, ev: Evidence, authorize: httpx.Response, location: str) -> None:
    """Log in on the sandbox's page as the test identity and come back through the proxy's callback."""
    psc = c.psc.recorder
    if psc is None:
        raise Unverifiable("URL du bac à sable inconnue : connexion par le navigateur non simulée")
    browser_cookies = {name: jar[name].value for name, jar in set_cookies(authorize).items()}
    page = psc.request(ev, "GET", location, label="PSC : page de connexion")
    if page.status_code == 400:
        raise Unverifiable(
            "le bac à sable refuse la requête d'autorisation (redirect_uri du proxy non enregistrée pour ce "
            "client ?) : la redirection du proxy est conforme, la suite du flux n'a pas pu être jouée"
        )
    require(page.status_code == 200, f"page de connexion PSC : HTTP {page.status_code}")
    fields = dict(_HIDDEN_RE.findall(page.text))
    if not {"tx", "csrf"} <= set(fields):
        raise Unverifiable("page de connexion du bac à sable non reconnue")
    answer = psc.request(
        ev,
        "POST",
        location.split("?")[0],
        content=urlencode({**fields, "national_id": c.cfg.national_id, "action": "approve"}).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        label="PSC : connexion approuvée",
    )
    back = answer.headers.get("location", "")
    require(answer.status_code in (302, 303) and bool(back), "PSC n'a pas redirigé vers le callback")
    cookie_header = "; ".join(f"{k}={v}" for k, v in browser_cookies.items())
    done = c.proxy.request(
        ev, "GET", back, headers={"Cookie": cookie_header} if cookie_header else None, label="GET callback (code)"
    )
    psid = session_cookie(done)
    require(done.status_code in (200, 302, 303), f"callback : HTTP {done.status_code}")
    require(psid is not None, "callback : pas de cookie proxy_session_id")
    assert psid is not None
    c.open_sessions.append(psid)
    raw = next((v for v in done.headers.get_list("set-cookie") if v.startswith("proxy_session_id=")), "")
    attrs = raw.lower()
    require("secure" in attrs and "httponly" in attrs, "cookie de session web sans Secure/HttpOnly")
    probe = c.proxy.request(
        ev,
        "POST",
        c.send_path(),
        json_body={
            "nationalId": c.cfg.national_id,
            "clientID": c.cfg.client_id,
            "proxy_session_id": psid,
            "session_state": "sonde",
        },
        cookie=psid,
        label="POST /send avec la session web",
    )
    require(probe.status_code != 401, "la session ouverte par le flux code n'est pas reconnue par /send")
    ev.note(
        "session web reconnue : le service a reçu un jeton échangé (il ne refuse que le session_state sonde)"
        if probe.status_code == 400
        else f"/send avec la session web : HTTP {probe.status_code}"
    )
    out = c.disconnect(ev, psid, "DELETE /disconnect (session web)")
    require(out.status_code == 200, f"déconnexion de la session web : HTTP {out.status_code}")


def check_tls_legacy(c: Campaign, ev: Evidence) -> None:
    parts = urlsplit(c.cfg.proxy_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    if parts.scheme != "https":
        raise CheckFailed("le proxy n'est pas servi en HTTPS")

    def handshake(version: ssl.TLSVersion) -> str | None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 would otherwise refuse TLS < 1.2 itself
        with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point of the probe
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = version
            ctx.maximum_version = version
        with socket.create_connection((host, port), timeout=5) as raw:
            try:
                with ctx.wrap_socket(raw, server_hostname=host) as tls:
                    return tls.version()
            except ssl.SSLError as exc:
                if "NO_PROTOCOLS_AVAILABLE" in str(exc).upper() or "NO PROTOCOLS AVAILABLE" in str(exc).upper():
                    raise Unverifiable(f"l'OpenSSL de l'outil ne sait pas parler {version.name}") from exc
                ev.note(f"{version.name} refusé : {exc.reason or exc}")
                return None
            except (ConnectionResetError, OSError) as exc:
                ev.note(f"{version.name} refusé (connexion fermée : {exc})")
                return None

    accepted = [v.name for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1) if handshake(v) is not None]
    modern = handshake(ssl.TLSVersion.TLSv1_2)
    require(not accepted, "versions obsolètes acceptées : " + ", ".join(accepted))
    require(modern is not None, "TLS 1.2 refusé : la sonde n'est pas concluante")
    ev.note("TLS 1.0 et 1.1 refusés, TLS 1.2 accepté")
