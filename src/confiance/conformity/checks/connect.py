"""/connect: CIBA login, replay (304), unknown client or user, malformed bodies, failures."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from ..http import session_cookie
from ..model import CheckFailed, Evidence, Unverifiable, require
from .campaign import Campaign, Session, error_body_problem, json_object


def check_connect(c: Campaign, ev: Evidence) -> None:
    resp, obs = c.observed_connect(
        ev, c.cfg.national_id, label="POST /connect (CIBA)", headers={"X-Forwarded-For": c.cfg.spoofed_ip}
    )
    c.observed = obs
    if resp.status_code == 304:
        raise CheckFailed(
            "304 : le proxy a répondu « session déjà ouverte » à un /connect sans cookie "
            "(une session ouverte avant la campagne ne doit pas empêcher une nouvelle connexion)"
        )
    require(resp.status_code == 200, f"HTTP {resp.status_code} au lieu de 200")
    require("json" in resp.headers.get("content-type", ""), "réponse non JSON")
    body = json_object(resp)
    psid, ss = body.get("proxy_session_id"), body.get("session_state")
    require(isinstance(psid, str) and bool(psid), "proxy_session_id absent du corps")
    require(isinstance(ss, str) and bool(ss), "session_state absent du corps")
    cookie = session_cookie(resp)
    require(cookie is not None, "cookie proxy_session_id absent (Set-Cookie)")
    require(cookie == psid, "le cookie proxy_session_id diffère du proxy_session_id du corps")
    assert isinstance(psid, str) and isinstance(ss, str)
    c.main = Session(psid, ss, c.cfg.national_id)
    ev.note("corps {proxy_session_id, session_state} et cookie proxy_session_id conformes")
    if c.psc_is_sandbox:
        ev.note("précondition établie : la demande CIBA du proxy est arrivée au bac à sable piloté par l'outil")
    else:
        ev.note(f"précondition non établie : {c.psc_reason}")


def check_binding(c: Campaign, ev: Evidence) -> None:
    """The user confirms on the right device the code their LPS shows: both reach PSC unchanged."""
    c.need_main()
    c.need_sandbox()
    obs = c.observed
    assert obs is not None and obs.seen is not None
    got_bm, got_channel = obs.seen.get("binding_message"), obs.seen.get("channel")
    ev.note(f"envoyé au proxy : bindingMessage {obs.binding!r}, channel {obs.channel!r}")
    require(got_bm == obs.binding, f"le bac à sable a reçu le binding_message {got_bm!r} au lieu de {obs.binding!r}")
    require(
        str(got_channel).upper() == obs.channel,
        f"le bac à sable a reçu le canal {got_channel!r} au lieu de {obs.channel!r}",
    )


def check_replay(c: Campaign, ev: Evidence) -> None:
    main = c.need_main()
    c.need_sandbox()  # "no new PSC authentication" is read at the sandbox: it must be the proxy's PSC
    nid = c.cfg.national_id
    with c.ecps(ev, nid, "manual"):
        ev.note("e-CPS de l'utilisateur en mode manuel : toute nouvelle demande CIBA resterait en attente")
        try:
            resp = c.connect(
                ev, nid, label="POST /connect (rejeu avec le cookie)", timeout=8.0, cookie=main.proxy_session_id
            )
        except httpx.TimeoutException:
            resp = None
        pending = [p for p in c.psc.pending_ciba(ev) if nid in json.dumps(p)]
        for p in pending:
            rid = p.get("auth_req_id") or p.get("id")
            if isinstance(rid, str):
                c.psc.decide_ciba(ev, rid, approve=False)
    require(not pending, "le proxy a lancé une nouvelle authentification PSC (CIBA) au lieu de répondre 304")
    require(resp is not None, "pas de réponse au rejeu dans les 8 s")
    assert resp is not None
    require(resp.status_code == 304, f"HTTP {resp.status_code} au lieu de 304")
    require(not resp.content, "le 304 porte un corps")
    new_cookie = session_cookie(resp)
    require(new_cookie in (None, main.proxy_session_id), "le rejeu pose un nouveau cookie")
    c.replayed = True
    ev.note("avec le cookie d'une session vivante : 304 sans corps, aucune demande CIBA adressée au bac à sable")
    # ANS's rule is per browser session (the cookie), not per user: without the cookie it is a
    # new login (a second workstation, an LPS that lost its cookie).
    again, obs = c.observed_connect(ev, nid, label="POST /connect (même utilisateur et LPS, sans cookie)")
    require(
        again.status_code == 200,
        f"sans le cookie, HTTP {again.status_code} au lieu d'une nouvelle connexion (200)",
    )
    other = session_cookie(again)
    require(other is not None and other != main.proxy_session_id, "sans le cookie : pas de nouvelle session")
    assert other is not None
    if obs is not None and obs.seen is None and c.psc_is_sandbox:
        raise CheckFailed("sans le cookie : aucune nouvelle authentification PSC (CIBA) n'a eu lieu")
    c.disconnect(ev, other, "DELETE /disconnect (seconde session)")
    ev.note("sans le cookie : nouvelle authentification PSC et nouvelle session (200)")


def check_other_lps(c: Campaign, ev: Evidence) -> None:
    """A user's session with one LPS is not a session with another: no 304 across LPS."""
    main = c.need_main()
    other = c.cfg.other_client_id
    if not other:
        raise Unverifiable("pas de second LPS connu du proxy (endpoints.json : lps_clients)")
    resp = c.connect(
        ev,
        c.cfg.national_id,
        label=f"POST /connect (même utilisateur, LPS {other}, avec le cookie de la session principale)",
        cookie=main.proxy_session_id,
        client_id=other,
    )
    require(resp.status_code != 304, f"304 : la session de l'utilisateur avec {c.cfg.client_id} vaut pour {other}")
    require(resp.status_code == 200, f"connexion au second LPS : HTTP {resp.status_code} au lieu de 200")
    sid = session_cookie(resp)
    require(sid is not None and sid != main.proxy_session_id, "connexion au second LPS sans nouvelle session")
    assert sid is not None
    c.disconnect(ev, sid, "DELETE /disconnect (session du second LPS)")
    ev.note(f"une session avec {c.cfg.client_id} n'ouvre rien pour {other} : nouvelle connexion (200)")


def check_unknown_client(c: Campaign, ev: Evidence) -> None:
    body = {
        "nationalId": c.cfg.national_id,
        "bindingMessage": "42",
        "clientId": c.cfg.unknown_client_id,
        "channel": "CARD",
    }
    resp = c.proxy.request(ev, "POST", "/connect", json_body=body, label="POST /connect (clientId inconnu)")
    if (cookie := session_cookie(resp)) is not None:
        c.open_sessions.append(cookie)
    require(resp.status_code == 404, f"HTTP {resp.status_code} au lieu de 404")
    problem = error_body_problem(resp, metadata=True)
    require(problem is None, f"404 : {problem}")
    meta = json_object(resp).get("metadata", {})
    require(meta.get("clientId") == c.cfg.unknown_client_id, "metadata.clientId ne reprend pas le clientId demandé")
    unknown_user = {**body, "clientId": c.cfg.client_id, "nationalId": c.cfg.unknown_national_id}
    resp = c.proxy.request(ev, "POST", "/connect", json_body=unknown_user, label="POST /connect (utilisateur inconnu)")
    if (cookie := session_cookie(resp)) is not None:
        c.open_sessions.append(cookie)
    require(resp.status_code == 404, f"utilisateur inconnu : HTTP {resp.status_code} au lieu de 404")
    problem = error_body_problem(resp, metadata=True)
    require(problem is None, f"utilisateur inconnu : {problem}")


def _malformed_cases(c: Campaign) -> list[tuple[str, Any]]:
    base = {"nationalId": c.cfg.national_id, "bindingMessage": "17", "clientId": c.cfg.client_id, "channel": "CARD"}

    def without(name: str) -> dict[str, Any]:
        return {k: v for k, v in base.items() if k != name}

    def with_(name: str, value: Any) -> dict[str, Any]:
        return {**base, name: value}

    return [
        ("nationalId absent", without("nationalId")),
        ("nationalId vide", with_("nationalId", "")),
        ("nationalId non textuel", with_("nationalId", 12345678901)),
        ("bindingMessage absent", without("bindingMessage")),
        ("bindingMessage d'un chiffre", with_("bindingMessage", "7")),
        ("bindingMessage de trois chiffres", with_("bindingMessage", "100")),
        ("bindingMessage non numérique", with_("bindingMessage", "a1")),
        ("bindingMessage nombre JSON", with_("bindingMessage", 42)),
        ("clientId absent", without("clientId")),
        ("clientId vide", with_("clientId", "")),
        ("channel absent", without("channel")),
        ("channel inconnu", with_("channel", "FAX")),
        ("corps non JSON", b"{nationalId"),
        ("corps JSON non objet", b"[]"),
    ]


def check_malformed(c: Campaign, ev: Evidence) -> None:
    wrong: list[str] = []
    for label, body in _malformed_cases(c):
        kwargs: dict[str, Any] = (
            {"content": body, "headers": {"Content-Type": "application/json"}}
            if isinstance(body, bytes)
            else {"json_body": body}
        )
        try:
            # One line per case in the evidence (status and error code): reports stay < 128 KiB.
            resp = c.proxy.request(None, "POST", "/connect", label=f"POST /connect ({label})", timeout=15.0, **kwargs)
        except httpx.TimeoutException:
            wrong.append(f"{label} : pas de réponse en 15 s")
            continue
        ev.note(f"POST /connect ({label}) : HTTP {resp.status_code} {json_object(resp).get('code', '')}".rstrip())
        if (cookie := session_cookie(resp)) is not None:
            c.open_sessions.append(cookie)
        if resp.status_code != 400:
            wrong.append(f"{label} : HTTP {resp.status_code}")
        elif (problem := error_body_problem(resp)) is not None:
            wrong.append(f"{label} : {problem}")
    require(not wrong, "requêtes mal formées non refusées en 400 : " + " ; ".join(wrong))
    ev.note(f"{len(_malformed_cases(c))} requêtes mal formées refusées en 400 avec {{code, message}}")


def check_session_state(c: Campaign, ev: Evidence) -> None:
    s = c.need_main()
    try:
        view = c.psc.session(ev, s.session_state)
    except Unverifiable as exc:
        if not c.signed_ok:
            raise Unverifiable(f"{exc} ; et signsessiondata n'a pas abouti (pas de preuve indirecte)") from exc
        ev.note(
            "preuve via l'API : pour signer, le service a vérifié (introspection PSC du jeton échangé) que "
            "nationalId, clientID et session_state sont ceux de la session PSC du jeton présenté par le proxy. "
            f"Consultation directe du bac à sable indisponible : {exc}"
        )
        return
    require(view is not None, "session_state inconnu du bac à sable PSC")
    assert view is not None
    nid = view.get("national_id") or view.get("nationalId")
    require(nid in (None, s.national_id), f"la session PSC appartient à {nid}, pas à {s.national_id}")
    clients = view.get("client_ids") or ([view["client_id"]] if view.get("client_id") else None)
    if clients is not None:
        require(c.cfg.client_id in clients, f"la session PSC n'a pas été ouverte pour {c.cfg.client_id}")
    active = view.get("active", not view.get("ended", False))
    require(bool(active), "la session PSC n'est pas active")


def _probe_no_session(c: Campaign, ev: Evidence, national_id: str) -> None:
    """A failed connect must leave no session: connecting again must not answer 304."""
    with c.ecps(ev, national_id, "deny"):
        again = c.connect(ev, national_id, label="POST /connect (sonde : pas de session)")
    require(again.status_code != 304, "une session a été créée malgré l'échec (le rejeu répond 304)")
    require(session_cookie(again) is None, "la sonde obtient un cookie de session")


def check_denied(c: Campaign, ev: Evidence) -> None:
    c.need_sandbox()  # a refusal the sandbox did not issue proves nothing (e.g. 404 from another PSC)
    nid = c.cfg.deny_national_id
    if not nid:
        raise Unverifiable("pas de seconde identité de test (--deny-national-id ou endpoints.json)")
    with c.ecps(ev, nid, "deny"):
        resp = c.connect(ev, nid, label="POST /connect (refus e-CPS)")
    c.failure_ids.append(nid)
    require(resp.status_code >= 400, f"HTTP {resp.status_code} alors que l'utilisateur a refusé")
    require(session_cookie(resp) is None, "cookie de session posé malgré le refus")
    _probe_no_session(c, ev, nid)


def check_no_answer(c: Campaign, ev: Evidence) -> None:
    c.need_sandbox()
    nid = c.cfg.never_national_id
    if not nid:
        raise Unverifiable("pas de troisième identité de test (--never-national-id ou endpoints.json)")
    with c.lifetimes(ev, ciba_request=3.0), c.ecps(ev, nid, "never"):
        ev.note("demande CIBA raccourcie à 3 s pour ce scénario")
        started = time.monotonic()
        try:
            resp = c.connect(ev, nid, label="POST /connect (e-CPS sans réponse)", timeout=c.cfg.connect_timeout)
        except httpx.TimeoutException as exc:
            raise CheckFailed(f"le proxy n'a pas répondu en {c.cfg.connect_timeout:.0f} s") from exc
        ev.note(f"réponse après {time.monotonic() - started:.1f} s")
    c.failure_ids.append(nid)
    require(resp.status_code >= 400, f"HTTP {resp.status_code} alors que l'utilisateur n'a pas répondu")
    require(session_cookie(resp) is None, "cookie de session posé sans authentification")
    _probe_no_session(c, ev, nid)


def check_psc_unavailable(c: Campaign, ev: Evidence) -> None:
    """PSC down → the contract's 503 (never 500), no session; PSC back → /connect works again."""
    c.need_sandbox()  # switching the sandbox off proves nothing if the proxy's PSC is another provider
    nid = c.cfg.national_id
    with c.psc_outage(ev, 60.0):
        ev.note("bac à sable en panne : ses points d'accès protocolaires (CIBA, jeton, découverte…) répondent 503")
        try:
            resp = c.connect(ev, nid, label="POST /connect (PSC indisponible)", timeout=c.cfg.connect_timeout)
        except httpx.TimeoutException as exc:
            raise CheckFailed(f"PSC indisponible : le proxy n'a pas répondu en {c.cfg.connect_timeout:.0f} s") from exc
    require(resp.status_code == 503, f"PSC indisponible : HTTP {resp.status_code} au lieu de 503")
    require(session_cookie(resp) is None, "PSC indisponible : cookie de session posé")
    problem = error_body_problem(resp)
    require(problem is None, f"PSC indisponible : 503 {problem}")
    ev.note("PSC indisponible : 503 avec {code, message}, sans session")
    again = c.connect(ev, nid, label="POST /connect (PSC rétabli)")
    require(again.status_code == 200, f"PSC rétabli : HTTP {again.status_code} au lieu de 200 (pas de rétablissement)")
    sid = session_cookie(again)
    require(sid is not None, "PSC rétabli : pas de cookie de session")
    assert sid is not None
    c.disconnect(ev, sid, "DELETE /disconnect (session après rétablissement)")
    ev.note("PSC rétabli : nouvelle connexion (200)")
