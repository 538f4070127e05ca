"""/disconnect: the session ends at the proxy and at PSC."""

from __future__ import annotations

import time

from ..http import cookie_erased
from ..model import Evidence, Unverifiable, require
from .campaign import Campaign, error_body_problem


def check_disconnect(c: Campaign, ev: Evidence) -> None:
    s = c.need_main()
    resp = c.disconnect(ev, s.proxy_session_id, "DELETE /disconnect")
    c.disconnected = True
    require(resp.status_code == 200, f"HTTP {resp.status_code} au lieu de 200")
    require(cookie_erased(resp), "le cookie proxy_session_id n'est pas effacé")
    after = c.sign(ev, s, "POST /send après déconnexion")
    require(after.status_code == 401, f"/send après déconnexion : HTTP {after.status_code} au lieu de 401")
    again = c.proxy.request(ev, "DELETE", "/disconnect", cookie=s.proxy_session_id, label="DELETE /disconnect (rejeu)")
    require(again.status_code == 401, f"seconde déconnexion : HTTP {again.status_code} au lieu de 401")
    problem = error_body_problem(again)
    require(problem is None, f"seconde déconnexion : {problem}")


def check_psc_session_ended(c: Campaign, ev: Evidence) -> None:
    s = c.need_main()
    c.need_sandbox()  # the sandbox's 404 for a session it never issued would read as "ended"
    if not c.disconnected:
        raise Unverifiable("prérequis non rempli : pas de déconnexion")
    try:
        view = c.psc.session(ev, s.session_state)
    except Unverifiable:
        time.sleep(1.0)
        still_active = c.psc.end_session_probe(ev, s.session_state)
        require(not still_active, "la session PSC était encore active après la déconnexion (end-session non appelé)")
        ev.note("le bac à sable ne connaît plus de session active pour ce session_state")
        return
    require(view is None or not view.get("active", not view.get("ended", False)), "session PSC toujours active")


def check_api_tokens_revoked(c: Campaign, ev: Evidence) -> None:
    """At logout the proxy revokes the API tokens it obtained for the session."""
    s = c.need_main()
    if not c.disconnected or not c.signed_ok:
        raise Unverifiable("prérequis non rempli : pas d'appel signsessiondata réussi puis de déconnexion")
    deadline = time.monotonic() + c.cfg.observe_timeout  # revocation may follow the 200 in the background
    while True:
        records = [r for r in c.api.access_records(None, s.proxy_session_id) if r.get("outcome", "ok") == "ok"]
        if not records or "revoked" not in records[0]:
            raise Unverifiable("le journal des accès de l'API ne dit pas si les jetons sont révoqués")
        alive = sorted({str(r.get("jti")) for r in records if not r.get("revoked")})
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    ev.data(
        "jetons API de la session (jti) et révocation",
        [{"jti": r.get("jti"), "revoked": r.get("revoked")} for r in records],
    )
    require(not alive, f"jetons API encore valides après la déconnexion : {', '.join(alive)}")
