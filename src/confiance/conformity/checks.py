"""The scenarios: each a named check with its requirement, run in order against one proxy.

A check raises :class:`CheckFailed` (requirement not met), :class:`Unverifiable` (the
fact cannot be established — missing prerequisite or harness endpoint) or
:class:`NotApplicable` (optional feature not offered); returning normally means passed.
Checks share the state of one campaign (the main session, what was observed) because the
ANS scenario is a story: connect, replay, send, disconnect, then read the traces.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import socket
import ssl
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from confiance.core.jose import ASYMMETRIC_ALGS, TokenError, verify_jws
from confiance.pki import normalize_dn

from . import traces as tr
from .config import RunConfig
from .http import Recorder, cookie_erased, session_cookie, set_cookies
from .model import CheckFailed, Evidence, NotApplicable, Unverifiable, require
from .services import ApiServices, PscSandbox

CheckFn = Callable[["Campaign", Evidence], None]


@dataclass(frozen=True)
class CheckDef:
    id: str
    name: str
    requirement: str
    fn: CheckFn
    slow: bool = False


@dataclass
class Session:
    proxy_session_id: str
    session_state: str
    national_id: str


@dataclass
class Campaign:
    """State shared by the checks of one run."""

    cfg: RunConfig
    proxy: Recorder
    psc: PscSandbox
    api: ApiServices
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    main: Session | None = None
    open_sessions: list[str] = field(default_factory=list)
    replayed: bool = False
    sent: bool = False
    signed_ok: bool = False
    disconnected: bool = False
    failure_ids: list[str] = field(default_factory=list)
    traces_shown: bool = False
    _traces: list[dict[str, Any]] | None = None

    # ----- helpers -----
    def connect(self, ev: Evidence, national_id: str, *, label: str, timeout: float | None = None) -> httpx.Response:
        body = {
            "nationalId": national_id,
            "bindingMessage": f"{secrets.randbelow(100):02d}",
            "clientId": self.cfg.client_id,
            "channel": "CARD",
        }
        resp = self.proxy.request(
            ev, "POST", "/connect", json_body=body, label=label, timeout=timeout or self.cfg.connect_timeout
        )
        cookie = session_cookie(resp)
        if cookie:
            self.open_sessions.append(cookie)
        return resp

    def send_path(self) -> str:
        return f"/send/{self.cfg.service}/{self.cfg.service_path}"

    def session_data(self, s: Session) -> dict[str, str]:
        return {
            "nationalId": s.national_id,
            "clientID": self.cfg.client_id,
            "proxy_session_id": s.proxy_session_id,
            "session_state": s.session_state,
        }

    def sign(self, ev: Evidence, s: Session, label: str) -> httpx.Response:
        return self.proxy.request(
            ev, "POST", self.send_path(), json_body=self.session_data(s), cookie=s.proxy_session_id, label=label
        )

    def new_session(self, ev: Evidence, national_id: str, label: str) -> Session:
        resp = self.connect(ev, national_id, label=label)
        if resp.status_code == 304 and self.open_sessions:
            # A session of this campaign is still open (e.g. the disconnect check was skipped).
            for still_open in list(self.open_sessions):
                self.disconnect(ev, still_open, "DELETE /disconnect (session restée ouverte)")
            resp = self.connect(ev, national_id, label=label)
        if resp.status_code != 200:
            raise CheckFailed(f"connexion impossible pour ce scénario (HTTP {resp.status_code})")
        body = _json(resp)
        psid, ss = body.get("proxy_session_id"), body.get("session_state")
        if not isinstance(psid, str) or not isinstance(ss, str):
            raise CheckFailed("réponse de /connect sans proxy_session_id/session_state")
        return Session(psid, ss, national_id)

    def disconnect(self, ev: Evidence | None, psid: str, label: str = "déconnexion") -> httpx.Response:
        resp = self.proxy.request(ev, "DELETE", "/disconnect", cookie=psid, label=label)
        if psid in self.open_sessions:
            self.open_sessions.remove(psid)
        return resp

    def need_main(self) -> Session:
        if self.main is None:
            raise Unverifiable("prérequis non rempli : la connexion CIBA initiale a échoué")
        return self.main

    def traces(self, ev: Evidence, start: dt.datetime, end: dt.datetime | None, label: str) -> list[dict[str, Any]]:
        params = {"start": tr.iso(start)}
        if end is not None:
            params["end"] = tr.iso(end)
        headers = {"Authorization": self.cfg.traces_auth} if self.cfg.traces_auth else {}
        resp = self.proxy.request(ev, "GET", "/traces", params=params, headers=headers, label=label)
        if resp.status_code in (401, 403):
            raise Unverifiable(
                "/traces refuse l'accès : fournir --traces-auth (jeton d'administration) "
                "ou activer le mode conformité du proxy"
            )
        require(resp.status_code == 200, f"/traces répond HTTP {resp.status_code}")
        items = tr.as_list(_json_any(resp))
        require(items is not None, "/traces ne renvoie pas une liste JSON de traces")
        assert items is not None
        return items

    def campaign_traces(self, ev: Evidence) -> list[dict[str, Any]]:
        if self._traces is None:
            self._traces = self.traces(
                ev,
                self.started - dt.timedelta(minutes=10),
                dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10),
                "traces de la campagne",
            )
        else:
            ev.note(f"{len(self._traces)} traces de la campagne déjà relevées (même requête /traces)")
        return self._traces

    @contextmanager
    def ecps(self, ev: Evidence, national_id: str, mode: str) -> Iterator[None]:
        previous = self.psc.ecps_policy(ev, national_id)
        self.psc.set_ecps(ev, national_id, mode)
        try:
            yield
        finally:
            self.psc.set_ecps(ev, national_id, str(previous.get("mode", "approve")), int(previous.get("delay_ms", 0)))

    @contextmanager
    def lifetimes(self, ev: Evidence, **values: float) -> Iterator[None]:
        previous = self.psc.lifetimes(ev)
        self.psc.set_lifetimes(ev, **values)
        try:
            yield
        finally:
            self.psc.set_lifetimes(ev, **{k: previous[k] for k in values if k in previous})


def _json_any(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _json(resp: httpx.Response) -> dict[str, Any]:
    data = _json_any(resp)
    return data if isinstance(data, dict) else {}


def _error_body_problem(resp: httpx.Response, *, metadata: bool = False) -> str | None:
    body = _json_any(resp)
    if not isinstance(body, dict):
        return "corps JSON {code, message} absent"
    if not isinstance(body.get("code"), str | int) or not isinstance(body.get("message"), str):
        return "corps sans « code » et « message »"
    if metadata and not isinstance(body.get("metadata"), dict):
        return "corps sans « metadata » {nationalId, clientId}"
    return None


# ======================================================================== ANS scenarios


def check_connect(c: Campaign, ev: Evidence) -> None:
    resp = c.connect(ev, c.cfg.national_id, label="POST /connect (CIBA)")
    if resp.status_code == 304:
        raise CheckFailed(
            "304 : une session était déjà active pour cet utilisateur et ce LPS avant la campagne "
            "(déconnectez-la puis relancez)"
        )
    require(resp.status_code == 200, f"HTTP {resp.status_code} au lieu de 200")
    require("json" in resp.headers.get("content-type", ""), "réponse non JSON")
    body = _json(resp)
    psid, ss = body.get("proxy_session_id"), body.get("session_state")
    require(isinstance(psid, str) and bool(psid), "proxy_session_id absent du corps")
    require(isinstance(ss, str) and bool(ss), "session_state absent du corps")
    cookie = session_cookie(resp)
    require(cookie is not None, "cookie proxy_session_id absent (Set-Cookie)")
    require(cookie == psid, "le cookie proxy_session_id diffère du proxy_session_id du corps")
    assert isinstance(psid, str) and isinstance(ss, str)
    c.main = Session(psid, ss, c.cfg.national_id)
    ev.note("corps {proxy_session_id, session_state} et cookie proxy_session_id conformes")


def check_replay(c: Campaign, ev: Evidence) -> None:
    c.need_main()
    nid = c.cfg.national_id
    with c.ecps(ev, nid, "manual"):
        ev.note("e-CPS de l'utilisateur en mode manuel : toute nouvelle demande CIBA resterait en attente")
        try:
            resp = c.connect(ev, nid, label="POST /connect (rejeu)", timeout=8.0)
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
    require(new_cookie in (None, c.main.proxy_session_id if c.main else None), "le rejeu pose un nouveau cookie")
    c.replayed = True
    ev.note("304 sans corps ; aucune demande CIBA adressée au bac à sable")


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
    problem = _error_body_problem(resp, metadata=True)
    require(problem is None, f"404 : {problem}")
    meta = _json(resp).get("metadata", {})
    require(meta.get("clientId") == c.cfg.unknown_client_id, "metadata.clientId ne reprend pas le clientId demandé")
    unknown_user = {**body, "clientId": c.cfg.client_id, "nationalId": c.cfg.unknown_national_id}
    resp = c.proxy.request(ev, "POST", "/connect", json_body=unknown_user, label="POST /connect (utilisateur inconnu)")
    if (cookie := session_cookie(resp)) is not None:
        c.open_sessions.append(cookie)
    require(resp.status_code == 404, f"utilisateur inconnu : HTTP {resp.status_code} au lieu de 404")
    problem = _error_body_problem(resp, metadata=True)
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
            resp = c.proxy.request(ev, "POST", "/connect", label=f"POST /connect ({label})", timeout=15.0, **kwargs)
        except httpx.TimeoutException:
            wrong.append(f"{label} : pas de réponse en 15 s")
            continue
        if (cookie := session_cookie(resp)) is not None:
            c.open_sessions.append(cookie)
        if resp.status_code != 400:
            wrong.append(f"{label} : HTTP {resp.status_code}")
        elif (problem := _error_body_problem(resp)) is not None:
            wrong.append(f"{label} : {problem}")
    require(not wrong, "requêtes mal formées non refusées en 400 : " + " ; ".join(wrong))
    ev.note(f"{len(_malformed_cases(c))} requêtes mal formées refusées en 400 avec {{code, message}}")


def check_send_unauthenticated(c: Campaign, ev: Evidence) -> None:
    data = {
        "nationalId": c.cfg.national_id,
        "clientID": c.cfg.client_id,
        "proxy_session_id": "x",
        "session_state": "x",
    }
    attempts: list[tuple[str, str | None]] = [("sans cookie", None), ("cookie forgé", str(uuid.uuid4()))]
    if c.main is not None:
        real = c.main.proxy_session_id
        last = "0" if real[-1] != "0" else "1"
        attempts.append(("cookie d'une session réelle altéré d'un caractère", real[:-1] + last))
    wrong: list[str] = []
    for label, cookie in attempts:
        resp = c.proxy.request(ev, "POST", c.send_path(), json_body=data, cookie=cookie, label=f"POST /send ({label})")
        if resp.status_code != 401:
            wrong.append(f"{label} : HTTP {resp.status_code}")
        elif (problem := _error_body_problem(resp)) is not None:
            wrong.append(f"{label} : {problem}")
    require(not wrong, "accès sans session valide non refusé en 401 : " + " ; ".join(wrong))


def _verify_signed(c: Campaign, ev: Evidence, resp: httpx.Response, expected: Mapping[str, str]) -> None:
    require(resp.status_code == 200, f"HTTP {resp.status_code} au lieu de 200")
    body = _json(resp)
    for name, value in expected.items():
        require(body.get(name) == value, f"« {name} » renvoyé {body.get(name)!r}, attendu {value!r}")
    signature = body.get("signature")
    require(isinstance(signature, str) and bool(signature), "« signature » absente")
    assert isinstance(signature, str)
    jwks = c.api.jwks(ev)
    try:
        payload = verify_jws(signature, jwks, algorithms=ASYMMETRIC_ALGS)
    except TokenError as exc:
        raise CheckFailed(f"la signature ne se vérifie pas avec le JWKS de l'API : {exc}") from exc
    try:
        signed = json.loads(payload)
    except ValueError as exc:
        raise CheckFailed("contenu signé illisible") from exc
    require(signed == dict(expected), f"contenu signé inattendu : {signed!r}")
    ev.data("contenu signé par l'API (vérifié avec son JWKS)", signed)


def check_signsessiondata(c: Campaign, ev: Evidence) -> None:
    s = c.need_main()
    time.sleep(1.1)  # separates CONNECT and SEND timestamps for the time-window check
    c.sent = True
    resp = c.sign(ev, s, f"POST {c.send_path()}")
    _verify_signed(c, ev, resp, c.session_data(s))
    c.signed_ok = True


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


def check_cnf_binding(c: Campaign, ev: Evidence) -> None:
    s = c.need_main()
    if not c.signed_ok:
        raise Unverifiable("prérequis non rempli : aucun appel signsessiondata réussi")
    expected_dn = c.cfg.expected_dn
    if expected_dn is None:
        raise Unverifiable("certificat du clientId inconnu (--client-cert ou endpoints.json)")
    records = [r for r in c.api.access_records(ev, s.proxy_session_id) if r.get("outcome", "ok") == "ok"]
    require(bool(records), "l'API n'a journalisé aucun appel réussi pour cette session")
    for rec in records:
        dn = rec.get("dn")
        require(
            isinstance(dn, str) and normalize_dn(dn) == expected_dn,
            f"certificat présenté à l'API {dn!r} ≠ certificat du clientId {expected_dn!r}",
        )
        cnf_obj = rec.get("cnf")
        cnf = rec.get("cnf_x5t") or (cnf_obj.get("x5t#S256") if isinstance(cnf_obj, dict) else None)
        presented = rec.get("x5t#S256") or rec.get("cert_x5t")
        if cnf is not None and presented is not None:
            require(cnf == presented, "cnf du jeton API ≠ empreinte du certificat présenté")
        if presented is not None and c.cfg.expected_x5t is not None:
            require(presented == c.cfg.expected_x5t, "empreinte du certificat présenté ≠ certificat du clientId")
    ev.note("le service de ressources n'accepte un jeton que si son cnf x5t#S256 est le certificat TLS présenté")


def _probe_no_session(c: Campaign, ev: Evidence, national_id: str) -> None:
    """A failed connect must leave no session: connecting again must not answer 304."""
    with c.ecps(ev, national_id, "deny"):
        again = c.connect(ev, national_id, label="POST /connect (sonde : pas de session)")
    require(again.status_code != 304, "une session a été créée malgré l'échec (le rejeu répond 304)")
    require(session_cookie(again) is None, "la sonde obtient un cookie de session")


def check_denied(c: Campaign, ev: Evidence) -> None:
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
    problem = _error_body_problem(again)
    require(problem is None, f"seconde déconnexion : {problem}")


def check_psc_session_ended(c: Campaign, ev: Evidence) -> None:
    s = c.need_main()
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
    for t in sends:
        api = t.get("apiRequest") or {}
        if isinstance(api, dict):
            if api.get("nomApiPsc") not in (None, c.cfg.service):
                problems.append(f"SEND : nomApiPsc = {api.get('nomApiPsc')!r}, attendu {c.cfg.service!r}")
            if str(api.get("methode", "POST")).upper() != "POST":
                problems.append(f"SEND : methode = {api.get('methode')!r}, attendu POST")
            if c.cfg.service_path not in str(api.get("path", c.cfg.service_path)):
                problems.append(f"SEND : path = {api.get('path')!r} ne nomme pas {c.cfg.service_path!r}")
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


# ======================================================================== beyond ANS


def check_refresh(c: Campaign, ev: Evidence) -> None:
    with c.lifetimes(ev, access_token=2.0):
        ev.note("jeton d'accès PSC raccourci à 2 s pour ce scénario")
        s = c.new_session(ev, c.cfg.national_id, "POST /connect (session de rafraîchissement)")
    try:
        time.sleep(3.0)
        ev.note("3 s d'attente : le jeton d'accès PSC de la session a expiré")
        resp = c.sign(ev, s, f"POST {c.send_path()} après expiration du jeton PSC")
        _verify_signed(c, ev, resp, c.session_data(s))
    finally:
        c.disconnect(ev, s.proxy_session_id, "DELETE /disconnect (fin du scénario)")


def check_idle(c: Campaign, ev: Evidence) -> None:
    with c.lifetimes(ev, access_token=1.0, session_idle=3.0):
        ev.note("session PSC : inactivité maximale raccourcie à 3 s (jeton d'accès 1 s)")
        s = c.new_session(ev, c.cfg.national_id, "POST /connect (session d'inactivité)")
        try:
            time.sleep(4.5)
            first = c.sign(ev, s, "POST /send après inactivité")
            second = c.sign(ev, s, "POST /send suivant")
        finally:
            if s.proxy_session_id in c.open_sessions:
                c.disconnect(ev, s.proxy_session_id, "DELETE /disconnect (nettoyage)")
    require(first.status_code >= 400, f"/send après expiration de la session PSC : HTTP {first.status_code}")
    require(second.status_code == 401, f"la session n'est pas terminée : HTTP {second.status_code} au lieu de 401")
    idle = c.cfg.idle_timeout
    if idle is None or idle > c.cfg.max_wait:
        ev.note("délai d'inactivité propre au proxy non déclaré ou trop long (--idle-timeout) : non testé")
        return
    s2 = c.new_session(ev, c.cfg.national_id, "POST /connect (inactivité du proxy)")
    try:
        first = c.sign(ev, s2, "POST /send (session active)")
        require(first.status_code == 200, f"/send sur session active : HTTP {first.status_code}")
        time.sleep(idle + 1.0)
        late = c.sign(ev, s2, f"POST /send après {idle + 1:.0f} s d'inactivité")
        require(
            late.status_code == 401, f"session toujours active après le délai d'inactivité : HTTP {late.status_code}"
        )
    finally:
        if s2.proxy_session_id in c.open_sessions:
            c.disconnect(ev, s2.proxy_session_id, "DELETE /disconnect (nettoyage)")


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


CHECKS: tuple[CheckDef, ...] = (
    CheckDef(
        "connect.ciba",
        "Connexion CIBA",
        "POST /connect → 200, corps {proxy_session_id, session_state} et cookie proxy_session_id identique.",
        check_connect,
    ),
    CheckDef(
        "connect.replay",
        "Rejeu de la connexion",
        "Un second /connect du même utilisateur et du même LPS → 304 sans corps, sans nouvelle authentification PSC.",
        check_replay,
    ),
    CheckDef(
        "connect.unknown_client",
        "clientId ou utilisateur inconnu",
        "/connect avec un clientId inconnu, ou un nationalId inconnu de PSC → 404 et corps {code, message, metadata}.",
        check_unknown_client,
    ),
    CheckDef(
        "connect.malformed",
        "Requêtes de connexion mal formées",
        "Chaque champ absent ou mal formé (nationalId, bindingMessage à deux chiffres, clientId, channel CARD|MOBILE) → 400 avec corps.",
        check_malformed,
    ),
    CheckDef(
        "send.unauthenticated",
        "/send sans session valide",
        "/send sans cookie, avec un cookie forgé ou altéré → 401 {code, message}.",
        check_send_unauthenticated,
    ),
    CheckDef(
        "send.signsessiondata",
        "signsessiondata : échange de jeton et correspondance des sessions",
        "POST /send/{service}/signsessiondata → signature vérifiée avec le JWKS de l'API ; nationalId, clientID, "
        "proxy_session_id et session_state exacts.",
        check_signsessiondata,
    ),
    CheckDef(
        "connect.session_state",
        "session_state = session PSC",
        "Le session_state renvoyé est celui de la session PSC créée par le bac à sable pour cet utilisateur et ce client.",
        check_session_state,
    ),
    CheckDef(
        "api.cnf_binding",
        "Jeton API lié au certificat du clientId",
        "Le jeton API utilisé par le proxy est lié (cnf x5t#S256) au certificat présenté, celui du clientId.",
        check_cnf_binding,
    ),
    CheckDef(
        "connect.denied",
        "Refus sur l'e-CPS",
        "L'utilisateur refuse sur l'e-CPS → statut d'échec, aucune session.",
        check_denied,
    ),
    CheckDef(
        "connect.no_answer",
        "e-CPS sans réponse",
        "L'utilisateur ne répond jamais → statut d'échec à l'expiration de la demande CIBA, aucune session.",
        check_no_answer,
        slow=True,
    ),
    CheckDef(
        "disconnect",
        "Déconnexion",
        "DELETE /disconnect → 200 et cookie effacé ; /send ensuite → 401 ; seconde déconnexion → 401.",
        check_disconnect,
    ),
    CheckDef(
        "disconnect.psc_session",
        "Fin de la session PSC",
        "Après la déconnexion, la session PSC est terminée au bac à sable (end-session avec id_token_hint).",
        check_psc_session_ended,
    ),
    CheckDef(
        "traces.fields",
        "Traces : présence et champs",
        "CONNECT_SUCCESS, CONNECT_REPLAY, SEND, DISCONNECT et CONNECT_FAILURE existent avec les champs requis par leur type.",
        check_trace_fields,
    ),
    CheckDef(
        "traces.api_request",
        "Traces : apiRequest",
        "apiRequest {nomApiPsc, methode, path} présent sur SEND et absent de tout autre type.",
        check_trace_api_request,
    ),
    CheckDef(
        "traces.dn",
        "Traces : DN du certificat",
        "dn = DN du certificat du clientId sur les traces d'un client mTLS.",
        check_trace_dn,
    ),
    CheckDef(
        "traces.window",
        "Traces : filtrage par fenêtre de temps",
        "GET /traces?start=&end= ne renvoie que les traces de la fenêtre.",
        check_trace_window,
    ),
    CheckDef(
        "beyond.refresh",
        "Au-delà d'ANS : rafraîchissement du jeton PSC",
        "Le jeton d'accès PSC expiré en cours de session est rafraîchi : /send réussit avec la même session PSC.",
        check_refresh,
        slow=True,
    ),
    CheckDef(
        "beyond.idle_expiry",
        "Au-delà d'ANS : expiration par inactivité",
        "Une session inactive au-delà du délai (PSC ou proxy) est terminée : /send → 401.",
        check_idle,
        slow=True,
    ),
    CheckDef(
        "beyond.auth_code",
        "Au-delà d'ANS : flux authorization code",
        "Si proposé : redirection vers PSC avec PKCE S256, state et nonce ; callback au state forgé refusé.",
        check_auth_code,
    ),
    CheckDef(
        "tls.legacy_refused",
        "TLS 1.0/1.1 refusés",
        "Le proxy refuse TLS 1.0 et 1.1 (sonde capable de les parler) et accepte TLS 1.2.",
        check_tls_legacy,
    ),
)
