"""The state one campaign shares across its checks, and the helpers every check uses.

A check raises :class:`CheckFailed` (requirement not met), :class:`Unverifiable` (the
fact cannot be established — missing prerequisite or harness endpoint) or
:class:`NotApplicable` (optional feature not offered); returning normally means passed.
Checks share the state of one campaign (the main session, what was observed) because the
ANS scenario is a story: connect, replay, send, disconnect, then read the traces.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from .. import traces as tr
from ..config import RunConfig
from ..http import Recorder, session_cookie
from ..model import CheckFailed, Evidence, Unverifiable, require
from ..services import ApiServices, PscSandbox

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
        body = json_object(resp)
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
        items = tr.as_list(json_any(resp))
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


def json_any(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def json_object(resp: httpx.Response) -> dict[str, Any]:
    data = json_any(resp)
    return data if isinstance(data, dict) else {}


def error_body_problem(resp: httpx.Response, *, metadata: bool = False) -> str | None:
    body = json_any(resp)
    if not isinstance(body, dict):
        return "corps JSON {code, message} absent"
    if not isinstance(body.get("code"), str | int) or not isinstance(body.get("message"), str):
        return "corps sans « code » et « message »"
    if metadata and not isinstance(body.get("metadata"), dict):
        return "corps sans « metadata » {nationalId, clientId}"
    return None
