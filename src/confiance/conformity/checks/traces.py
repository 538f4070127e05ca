"""/traces: every trace type with its fields, apiRequest on SEND only, dn, time windows."""

from __future__ import annotations

import datetime as dt
from typing import Any

from confiance.pki import normalize_dn

from .. import traces as tr
from ..model import Evidence, NotApplicable, Unverifiable, require
from .campaign import Campaign, Session


def _mine(c: Campaign, ev: Evidence) -> tuple[Session, list[dict[str, Any]], list[dict[str, Any]]]:
    s = c.need_main()
    all_traces = c.campaign_traces(ev)
    mine = [t for t in all_traces if t.get("proxy_id_session") == s.proxy_session_id]
    failures = [t for t in all_traces if t.get("type") == "CONNECT_FAILURE" and t.get("IdRPPS") in c.failure_ids]
    if not c.traces_shown:  # shown once (first trace check), referred to afterwards
        ev.data("traces de la session principale", mine)
        if failures:
            ev.data("traces CONNECT_FAILURE des scénarios d'échec", failures)
        c.traces_shown = True
    else:
        ev.note(
            f"{len(mine)} traces de la session principale et {len(failures)} CONNECT_FAILURE (détail : première vérification des traces)"
        )
    return s, mine, failures


def check_trace_fields(c: Campaign, ev: Evidence) -> None:
    s, mine, failures = _mine(c, ev)
    expected = ["CONNECT_SUCCESS"]
    if c.replayed:
        expected.append("CONNECT_REPLAY")
    if c.sent:
        expected.append("SEND")
    if c.disconnected:
        expected.append("DISCONNECT")
    types = {t.get("type") for t in mine}
    missing = [t for t in expected if t not in types]
    if c.failure_ids and not failures:
        missing.append("CONNECT_FAILURE")
    require(not missing, "traces absentes : " + ", ".join(missing))
    problems: list[str] = []
    for t in mine + failures:
        problems += tr.field_problems(t)
    for t in mine:
        for name, value in (
            ("IdRPPS", s.national_id),
            ("clientId", c.cfg.client_id),
            ("session_state", s.session_state),
        ):
            if t.get(name) not in (None, value):
                problems.append(f"{t.get('type')} : {name} = {t.get(name)!r}, attendu {value!r}")
    require(not problems, " ; ".join(problems))


def check_trace_api_request(c: Campaign, ev: Evidence) -> None:
    _s, mine, failures = _mine(c, ev)
    if not c.sent:
        raise Unverifiable("prérequis non rempli : aucun /send")
    problems: list[str] = []
    for t in mine + failures:
        problems += tr.api_request_problems(t)
    sends = [t for t in mine if t.get("type") == "SEND"]
    require(bool(sends), "aucune trace SEND pour la session")
    sent = c.sends or [("POST", c.cfg.service_path)]
    matched: set[tuple[str, str]] = set()
    for t in sends:
        api = t.get("apiRequest") or {}
        if isinstance(api, dict):
            if api.get("nomApiPsc") not in (None, c.cfg.service):
                problems.append(f"SEND : nomApiPsc = {api.get('nomApiPsc')!r}, attendu {c.cfg.service!r}")
            method, path = str(api.get("methode", "POST")).upper(), str(api.get("path", ""))
            hit = next((m for m in sent if m[0] == method and m[1] in path), None)
            if hit is not None:
                matched.add(hit)
    for method, path in sent:
        if (method, path) not in matched:
            problems.append(f"aucune trace SEND pour {method} …/{path}")
    require(not problems, " ; ".join(problems))


def check_trace_dn(c: Campaign, ev: Evidence) -> None:
    expected = c.cfg.expected_dn
    if expected is None and c.cfg.client_uses_secret:
        raise NotApplicable("client authentifié par secret auprès de PSC : pas de certificat, pas de dn")
    if expected is None:
        raise Unverifiable("certificat du clientId inconnu (--client-cert ou endpoints.json) : client mTLS ?")
    _s, mine, _f = _mine(c, ev)
    require(bool(mine), "aucune trace pour la session")
    wrong = []
    for t in mine:
        dn = t.get("dn")
        if not isinstance(dn, str) or not dn:
            wrong.append(f"{t.get('type')} : « dn » absent")
        elif normalize_dn(dn) != expected:
            wrong.append(f"{t.get('type')} : dn {dn!r} ≠ {expected!r}")
    require(not wrong, " ; ".join(wrong))


def check_trace_window(c: Campaign, ev: Evidence) -> None:
    s, mine, _f = _mine(c, ev)

    def first(ttype: str) -> dt.datetime | None:
        stamps = [tr.parse_timestamp(t.get("timestamp")) for t in mine if t.get("type") == ttype]
        valid = [x for x in stamps if x is not None]
        return min(valid) if valid else None

    t_connect, t_send = first("CONNECT_SUCCESS"), first("SEND")
    if t_connect is None or t_send is None:
        raise Unverifiable("traces CONNECT_SUCCESS et SEND horodatées nécessaires")
    require(t_send > t_connect, "la trace SEND n'est pas postérieure à CONNECT_SUCCESS")
    mid = t_connect + (t_send - t_connect) / 2

    def types_in(start: dt.datetime, end: dt.datetime | None, label: str) -> set[Any]:
        got = c.traces(ev, start, end, label)
        return {t.get("type") for t in got if t.get("proxy_id_session") == s.proxy_session_id}

    late = types_in(mid, t_send + dt.timedelta(milliseconds=500), "fenêtre [milieu, SEND]")
    require("SEND" in late, "la fenêtre [milieu, SEND] ne contient pas la trace SEND")
    require("CONNECT_SUCCESS" not in late, "« start » ignoré : CONNECT_SUCCESS renvoyée avant le début de la fenêtre")
    early = types_in(t_connect - dt.timedelta(seconds=1), mid, "fenêtre [CONNECT − 1 s, milieu]")
    require("CONNECT_SUCCESS" in early, "la fenêtre [CONNECT − 1 s, milieu] ne contient pas CONNECT_SUCCESS")
    require("SEND" not in early, "« end » ignoré : SEND renvoyée après la fin de la fenêtre")
    future = types_in(dt.datetime.now(dt.UTC) + dt.timedelta(days=1), None, "fenêtre future")
    require(not future, "une fenêtre future renvoie des traces de la session")


def check_trace_access(c: Campaign, ev: Evidence) -> None:
    """Traces name professionals: an anonymous caller must not read them."""
    if c.cfg.traces_open:
        raise NotApplicable("l'opérateur déclare /traces ouvert pour la campagne (mode conformité)")
    start = tr.iso(c.started - dt.timedelta(minutes=10))
    resp = c.proxy.request(ev, "GET", "/traces", params={"start": start}, label="GET /traces (anonyme)")
    require(resp.status_code in (401, 403), f"/traces répond HTTP {resp.status_code} à un appelant anonyme")
    items = tr.as_list(_json_or_none(resp))
    require(not items, "/traces renvoie des traces à un appelant anonyme")


def _json_or_none(resp: Any) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def check_trace_ip(c: Campaign, ev: Evidence) -> None:
    """ipAddress is the caller's address, not what an untrusted X-Forwarded-For claims."""
    _s, mine, _f = _mine(c, ev)
    require(bool(mine), "aucune trace pour la session")
    spoofed = [t.get("type") for t in mine if t.get("ipAddress") == c.cfg.spoofed_ip]
    require(
        not spoofed,
        f"ipAddress = {c.cfg.spoofed_ip} (X-Forwarded-For envoyé par l'outil, qui n'est pas un relais de confiance) "
        f"sur : {', '.join(map(str, spoofed))}",
    )
    ev.note(f"/connect et /send envoyés avec X-Forwarded-For: {c.cfg.spoofed_ip} ; aucune trace ne le reprend")
