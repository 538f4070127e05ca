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
import ssl
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
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
    mandatory: bool = True  # False: needs a campaign setup the operator may not provide


@dataclass
class Session:
    proxy_session_id: str
    session_state: str
    national_id: str


@dataclass(frozen=True)
class Observation:
    """What the tool sent in a /connect and what the sandbox received from the proxy."""

    binding: str
    channel: str
    seen: dict[str, Any] | None


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
    # Precondition established by the first observed connect: True when the sandbox the tool
    # drives received the proxy's CIBA request, False when the proxy logged the user in
    # without it (its PSC is another provider), None when it could not be observed.
    psc_is_sandbox: bool | None = None
    psc_reason: str = "le premier /connect n'a pas pu être observé au bac à sable"
    observed: Observation | None = None
    session_ids: list[str] = field(default_factory=list)  # every proxy_session_id issued, in order
    sends: list[tuple[str, str]] = field(default_factory=list)  # (method, service path) relayed for the main session
    proxy_tls: ssl.SSLContext | None = None  # for raw request lines (path-safety probes)
    _traces: list[dict[str, Any]] | None = None

    # ----- helpers -----
    def connect(
        self,
        ev: Evidence | None,
        national_id: str,
        *,
        label: str,
        timeout: float | None = None,
        binding: str | None = None,
        channel: str = "CARD",
        cookie: str | None = None,
        headers: dict[str, str] | None = None,
        client_id: str | None = None,
    ) -> httpx.Response:
        body = {
            "nationalId": national_id,
            "bindingMessage": binding or f"{secrets.randbelow(100):02d}",
            "clientId": client_id or self.cfg.client_id,
            "channel": channel,
        }
        resp = self.proxy.request(
            ev,
            "POST",
            "/connect",
            json_body=body,
            label=label,
            timeout=timeout or self.cfg.connect_timeout,
            cookie=cookie,
            headers=headers,
        )
        sid = session_cookie(resp)
        if sid and sid not in self.session_ids:  # a replay may repeat an id: it is not a new one
            self.open_sessions.append(sid)
            self.session_ids.append(sid)
        return resp

    def observed_connect(
        self,
        ev: Evidence,
        national_id: str,
        *,
        label: str,
        channel: str = "MOBILE",
        headers: dict[str, str] | None = None,
    ) -> tuple[httpx.Response, Observation | None]:
        """A /connect whose CIBA request the tool watches arrive at the sandbox, then approves.

        The user's e-CPS is put in manual mode, so the proxy's request waits at the sandbox
        until the tool has read it (binding message, channel, client) and approved it. When
        the sandbox cannot be driven the connect runs plainly and nothing is observed.
        """
        binding = f"{secrets.randbelow(100):02d}"
        try:
            ctx = self.ecps(ev, national_id, "manual")
            ctx.__enter__()
        except Unverifiable as exc:
            ev.note(f"demande CIBA non observable : {exc}")
            self.psc_reason = str(exc)
            return self.connect(ev, national_id, label=label, binding=binding, channel=channel, headers=headers), None
        seen: dict[str, Any] | None = None
        try:
            with ThreadPoolExecutor(1) as pool:
                fut = pool.submit(
                    self.connect, ev, national_id, label=label, binding=binding, channel=channel, headers=headers
                )
                deadline = time.monotonic() + self.cfg.observe_timeout
                while seen is None and not fut.done() and time.monotonic() < deadline:
                    for p in self.psc.pending_ciba(None):
                        if p.get("national_id") == national_id and p.get("client_id") in (None, self.cfg.client_id):
                            seen = p
                            break
                    if seen is None:
                        wait_futures([fut], timeout=0.05)
                if seen is not None:
                    ev.data("demande CIBA reçue par le bac à sable", seen)
                    self.psc.decide_ciba(ev, str(seen.get("auth_req_id")), approve=True)
                resp = fut.result()
        finally:
            ctx.__exit__(None, None, None)
        obs = Observation(binding, channel, seen)
        if seen is not None:
            self.psc_is_sandbox = True
        elif resp.status_code == 200 and self.psc_is_sandbox is None:
            self.psc_is_sandbox = False
            self.psc_reason = (
                "le proxy a authentifié l'utilisateur sans que le bac à sable piloté par l'outil reçoive de demande "
                "CIBA : son PSC est un autre fournisseur"
            )
        return resp, obs

    def need_sandbox(self) -> None:
        """Evidence that rests on what the sandbox saw or enforced needs the proxy to use it."""
        if self.psc_is_sandbox is not True:
            raise Unverifiable(f"PSC du proxy non établi comme le bac à sable de l'outil : {self.psc_reason}")

    def wait(self, ev: Evidence | None, seconds: float, why: str) -> None:
        if ev is not None and why:
            ev.note(f"attente de {seconds:g} s : {why}")
        self.cfg.wait(seconds)

    def send_path(self) -> str:
        return f"/send/{self.cfg.service}/{self.cfg.service_path}"

    def session_data(self, s: Session) -> dict[str, str]:
        return {
            "nationalId": s.national_id,
            "clientID": self.cfg.client_id,
            "proxy_session_id": s.proxy_session_id,
            "session_state": s.session_state,
        }

    def sign(
        self, ev: Evidence | None, s: Session, label: str, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return self.proxy.request(
            ev,
            "POST",
            self.send_path(),
            json_body=self.session_data(s),
            cookie=s.proxy_session_id,
            label=label,
            headers=headers,
        )

    def new_session(self, ev: Evidence | None, national_id: str, label: str) -> Session:
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

    @contextmanager
    def psc_outage(self, ev: Evidence, seconds: float) -> Iterator[None]:
        """The sandbox plays "PSC down" (bounded, so a crash here never leaves it down)."""
        self.psc.outage(ev, seconds)
        try:
            self.wait(ev, OUTAGE_PROPAGATION, "que chaque processus du bac à sable applique la panne")
            yield
        finally:
            self.psc.end_outage(ev)
            self.wait(ev, OUTAGE_PROPAGATION, "que chaque processus du bac à sable lève la panne")


# The sandbox's workers reload admin settings at most every 0.25 s (psc ``shared.interval``).
OUTAGE_PROPAGATION = 0.3


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
