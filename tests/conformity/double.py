"""A small Proxy e-Santé test double with switchable defects, for testing the conformity tool.

It implements the ANS contract against the real PSC sandbox and API services (CIBA, token
exchange over mTLS, signsessiondata, traces, end-session, refresh), just enough for the
tool's checks. Each name in ``defects`` breaks one behaviour the way a real proxy might:

- ``replay_200``: answers 200 (same session) to a /connect carrying a live session's cookie instead of 304
- ``omit_trace_field``: SEND traces lack ``ipAddress``
- ``no_token_exchange``: forwards the PSC access token to the service as is
- ``one_cert``: uses one proxy-wide certificate for every client's API calls
- ``no_end_session``: /disconnect forgets the session but never ends it at PSC
- ``no_window``: /traces ignores ``start``/``end``
- ``api_request_everywhere``: every trace type carries ``apiRequest``
- ``lax_channel``: accepts any ``channel``
- ``no_refresh``: never refreshes the PSC access token
- ``keeps_dead_sessions``: when refresh fails, answers 502 and keeps the session
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography import x509
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confiance.core.tls import ClientIdentity, client_context
from confiance.pki import subject_dn

CIBA = "urn:openid:params:grant-type:ciba"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
AT = "urn:ietf:params:oauth:token-type:access_token"
TRACES_TOKEN = "double-traces-" + "x" * 16


@dataclass
class DoubleConfig:
    ciba_endpoint: str
    token_endpoint: str
    end_session_endpoint: str
    ca_bundle: Any
    clients: dict[str, ClientIdentity]  # PSC client id → certificate the proxy holds for it
    proxy_identity: ClientIdentity  # a proxy-wide certificate (used only by the one_cert defect)
    api_token_endpoint: str
    services: dict[str, dict[str, Any]]  # name → {"url", "audience", "scope"}
    defects: frozenset[str] = frozenset()
    idle_ttl: float = 3600.0
    absolute_ttl: float = 4 * 3600.0
    clock: Callable[[], float] = time.time  # session expiry reads this (tests move it)


@dataclass
class Sess:
    psid: str
    nid: str
    client_id: str
    session_state: str
    access: str
    access_exp: float
    refresh: str
    id_token: str
    last_seen: float = 0.0
    created: float = 0.0


class DoubleProxy:
    def __init__(self, cfg: DoubleConfig) -> None:
        self.cfg = cfg
        self.sessions: dict[str, Sess] = {}
        self.traces: list[dict[str, Any]] = []
        self._http: dict[str, httpx.AsyncClient] = {}
        self.app = Starlette(
            routes=[
                Route("/connect", self.connect, methods=["POST"]),
                Route("/disconnect", self.disconnect, methods=["DELETE"]),
                Route("/send/{service}/{path:path}", self.send, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
                Route("/traces", self.get_traces, methods=["GET"]),
            ]
        )

    def has(self, defect: str) -> bool:
        return defect in self.cfg.defects

    def http(self, identity: ClientIdentity) -> httpx.AsyncClient:
        key = identity.key_id
        if key not in self._http:
            self._http[key] = httpx.AsyncClient(verify=client_context(self.cfg.ca_bundle, identity), timeout=10)
        return self._http[key]

    def dn(self, identity: ClientIdentity) -> str:
        assert identity.cert is not None
        return subject_dn(x509.load_pem_x509_certificate(identity.cert.read_bytes()))

    def api_identity(self, client_id: str) -> ClientIdentity:
        return self.cfg.proxy_identity if self.has("one_cert") else self.cfg.clients[client_id]

    def trace(self, ttype: str, request: Request, nid: str, s: Sess | None = None, api: Any = None) -> None:
        t: dict[str, Any] = {
            "type": ttype,
            "IdRPPS": nid,
            "ipAddress": request.client.host if request.client else None,
            "ports": [request.client.port] if request.client else [],
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        if s is not None:
            t.update(
                clientId=s.client_id,
                proxy_id_session=s.psid,
                session_state=s.session_state,
                dn=self.dn(self.api_identity(s.client_id)),
            )
        if api is not None or self.has("api_request_everywhere"):
            t["apiRequest"] = api or {"nomApiPsc": None, "methode": None, "path": None}
        if ttype == "SEND" and self.has("omit_trace_field"):
            del t["ipAddress"]
        self.traces.append(t)

    @staticmethod
    def error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"code": code, "message": message, **extra}, status_code=status)

    def session_of(self, request: Request) -> Sess | None:
        s = self.sessions.get(request.cookies.get("proxy_session_id", ""))
        now = self.cfg.clock()
        if s is not None and (now - s.last_seen > self.cfg.idle_ttl or now - s.created > self.cfg.absolute_ttl):
            self.sessions.pop(s.psid, None)
            return None
        return s

    async def connect(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return self.error(400, "invalid_request", "corps JSON invalide")
        if not isinstance(body, dict):
            return self.error(400, "invalid_request", "objet JSON attendu")
        nid, bm, cid, channel = (body.get(k) for k in ("nationalId", "bindingMessage", "clientId", "channel"))
        meta = {"metadata": {"nationalId": nid, "clientId": cid}}
        if not isinstance(nid, str) or not nid:
            return self.error(400, "invalid_request", "nationalId invalide", **meta)
        if not isinstance(bm, str) or not re.fullmatch(r"\d{2}", bm):
            return self.error(400, "invalid_request", "bindingMessage invalide", **meta)
        if not isinstance(cid, str) or not cid:
            return self.error(400, "invalid_request", "clientId invalide", **meta)
        if not self.has("lax_channel") and channel not in ("CARD", "MOBILE"):
            return self.error(400, "invalid_request", "channel invalide", **meta)
        if cid not in self.cfg.clients:
            return self.error(404, "not_found", "clientId inconnu", **meta)
        live = self.session_of(request)  # ANS's rule: the cookie of a live session, not the user
        if live is not None and live.nid == nid and live.client_id == cid:
            self.trace("CONNECT_REPLAY", request, nid, live)
            if self.has("replay_200"):
                return self.ok(live)
            return Response(status_code=304)
        identity = self.cfg.clients[cid]
        http = self.http(identity)
        r = await http.post(
            self.cfg.ciba_endpoint,
            data={
                "client_id": cid,
                "scope": "openid scope_all",
                "acr_values": "eidas1",
                "login_hint": nid,
                "binding_message": bm,
                "channel": str(channel),
            },
        )
        if r.status_code >= 500:  # PSC down: the contract's 503
            self.trace("CONNECT_FAILURE", request, nid)
            return self.error(503, "PSC_UNAVAILABLE", "Pro Santé Connect est indisponible")
        if r.status_code != 200:
            self.trace("CONNECT_FAILURE", request, nid)
            return self.error(404, "not_found", "utilisateur inconnu", **meta)
        rid, interval = r.json()["auth_req_id"], float(r.json().get("interval", 0))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await asyncio.sleep(max(interval, 0.05))
            t = await http.post(
                self.cfg.token_endpoint, data={"client_id": cid, "grant_type": CIBA, "auth_req_id": rid}
            )
            if t.status_code == 200:
                tok = t.json()
                s = Sess(
                    psid=str(uuid.uuid4()),
                    nid=nid,
                    client_id=cid,
                    session_state=tok["session_state"],
                    access=tok["access_token"],
                    access_exp=self.cfg.clock() + float(tok["expires_in"]),
                    refresh=tok["refresh_token"],
                    id_token=tok["id_token"],
                    last_seen=self.cfg.clock(),
                    created=self.cfg.clock(),
                )
                self.sessions[s.psid] = s
                self.trace("CONNECT_SUCCESS", request, nid, s)
                return self.ok(s)
            if t.json().get("error") not in ("authorization_pending", "slow_down"):
                break
        self.trace("CONNECT_FAILURE", request, nid)
        return self.error(401, "authentication_failed", "authentification refusée ou expirée", **meta)

    def session_of_id(self, psid: str) -> bool:
        s = self.sessions.get(psid)
        return s is not None and self.cfg.clock() - s.last_seen <= self.cfg.idle_ttl

    @staticmethod
    def ok(s: Sess) -> JSONResponse:
        resp = JSONResponse({"proxy_session_id": s.psid, "session_state": s.session_state})
        resp.set_cookie("proxy_session_id", s.psid, path="/", secure=True, httponly=True)
        return resp

    async def disconnect(self, request: Request) -> Response:
        s = self.session_of(request)
        if s is None:
            return self.error(401, "unauthorized", "session inconnue")
        del self.sessions[s.psid]
        if not self.has("no_end_session"):
            await self.http(self.cfg.clients[s.client_id]).post(
                self.cfg.end_session_endpoint, data={"id_token_hint": s.id_token}
            )
        self.trace("DISCONNECT", request, s.nid, s)
        resp = Response(status_code=200)
        resp.delete_cookie("proxy_session_id", path="/", secure=True, httponly=True)
        return resp

    async def send(self, request: Request) -> Response:
        raw = request.scope.get("raw_path", b"").split(b"?")[0].lower()
        if any(bad in raw for bad in (b"/../", b"/./", b"%2e", b"%2f", b"%5c", b"//")) or raw.endswith(b"/.."):
            return self.error(400, "unsafe_path", "chemin refusé")
        s = self.session_of(request)
        if s is None:
            return self.error(401, "unauthorized", "session inconnue")
        s.last_seen = self.cfg.clock()
        name, path = request.path_params["service"], request.path_params["path"]
        svc = self.cfg.services.get(name)
        if svc is None:
            return self.error(404, "not_found", "service inconnu")
        identity = self.cfg.clients[s.client_id]
        if self.cfg.clock() >= s.access_exp - 0.5 and not self.has("no_refresh"):
            r = await self.http(identity).post(
                self.cfg.token_endpoint,
                data={"client_id": s.client_id, "grant_type": "refresh_token", "refresh_token": s.refresh},
            )
            if r.status_code != 200:
                if self.has("keeps_dead_sessions"):
                    return self.error(502, "bad_gateway", "rafraîchissement PSC refusé")
                self.sessions.pop(s.psid, None)
                return self.error(401, "unauthorized", "session PSC expirée")
            tok = r.json()
            s.access, s.refresh = tok["access_token"], tok.get("refresh_token", s.refresh)
            s.access_exp = self.cfg.clock() + float(tok["expires_in"])
        api_http = self.http(self.api_identity(s.client_id))
        bearer = s.access
        if not self.has("no_token_exchange"):
            ex = await api_http.post(
                self.cfg.api_token_endpoint,
                data={
                    "grant_type": EXCHANGE,
                    "subject_token": s.access,
                    "subject_token_type": AT,
                    "subject_issuer": "psc",
                    "scope": svc["scope"],
                    "audience": svc["audience"],
                },
            )
            if ex.status_code != 200:
                return self.error(502, "bad_gateway", f"échange de jeton refusé ({ex.status_code})")
            bearer = ex.json()["access_token"]
        up = await api_http.request(
            request.method,
            f"{svc['url'].rstrip('/')}/{path}",
            content=await request.body(),
            headers={
                "Authorization": f"Bearer {bearer}",
                "Content-Type": request.headers.get("content-type", "application/json"),
            },
        )
        self.trace("SEND", request, s.nid, s, {"nomApiPsc": name, "methode": request.method, "path": "/" + path})
        return Response(up.content, status_code=up.status_code, media_type=up.headers.get("content-type"))

    async def get_traces(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TRACES_TOKEN}":
            return self.error(401, "unauthorized", "jeton d'administration requis")

        def parse(v: str | None) -> dt.datetime | None:
            return dt.datetime.fromisoformat(v.replace("Z", "+00:00")) if v else None

        start, end = parse(request.query_params.get("start")), parse(request.query_params.get("end"))
        out = []
        for t in self.traces:
            ts = parse(t["timestamp"])
            assert ts is not None
            if not self.has("no_window") and ((start and ts < start) or (end and ts > end)):
                continue
            out.append(t)
        return JSONResponse(out)
