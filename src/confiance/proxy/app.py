"""The ASGI edge: ANS routes, web login, health, metrics.

``/send/…`` is served by a hand-written ASGI handler, not the Starlette router: it is the
hot path, and per request it does only a cookie scan, a path check, a dict lookup for the
session, a dict lookup for the prebuilt relay context (API token, headers, pooled mTLS
client), the upstream call, and an enqueue of its trace. Everything else (connect,
disconnect, traces, web login, health) goes through Starlette.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from confiance import __version__

from .core import DROP_REQUEST_HEADERS, DROP_RESPONSE_HEADERS, Hot, ProxyCore
from .domain import (
    ProxyError,
    Session,
    TraceType,
    client_address,
    internal_error,
    new_session,
    parse_connect,
    parse_iso,
    send_trace_fields,
    trace,
    valid_session_id,
)
from .oauth import OAuthFailure, Unavailable
from .pathsafety import SendTarget, UnsafePath, split_send_target
from .sessions import MemoryStore, StoreUnavailable
from .upstream import Result, UpstreamError

log = logging.getLogger("confiance.proxy")

COOKIE = "proxy_session_id"
STATE_COOKIE = "proxy_auth_state"
SEND_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def session_cookie(sid: str, samesite: str) -> str:
    return f"{COOKIE}={sid}; Path=/; Secure; HttpOnly; SameSite={samesite.capitalize()}"


def erased_cookie(samesite: str) -> str:
    return f"{COOKIE}=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Secure; HttpOnly; SameSite={samesite.capitalize()}"


def cookie_from_headers(headers: list[tuple[bytes, bytes]], name: bytes = COOKIE.encode()) -> str | None:
    for k, v in headers:
        if k == b"cookie":
            for part in v.split(b";"):
                n, _, val = part.strip().partition(b"=")
                if n == name:
                    return val.decode("latin-1")
    return None


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers (with length), body


@dataclass(slots=True)
class _Relay:
    """One /send in progress: what its steps share."""

    method: str
    sid: str
    target: SendTarget
    headers: list[tuple[bytes, bytes]]
    client: tuple[str, int] | None
    t0: float
    now: float = 0.0
    session: Session | None = None
    hot: Hot | None = None
    body: bytes = b""
    head: bytes = b""
    waited: float = 0.0  # seconds spent waiting for the upstream (and the AS, if a renewal ran)
    # The fast path only (send_now): who answers, and when the upstream call started.
    app: ProxyApp | None = None
    respond: Callable[[Answer], None] | None = None
    t_up: float = 0.0

    def upstream_done(self, result: Result | None, exc: BaseException | None) -> None:
        """The upstream's answer to a request relayed by :meth:`ProxyApp.send_now`."""
        app, respond = self.app, self.respond
        assert app is not None and respond is not None
        self.waited += time.perf_counter() - self.t_up
        if result is not None:
            status, rheaders, rbody = result
            if status == 401 and _invalid_token(rheaders):
                retry = asyncio.get_running_loop().create_task(app._finish_after_refusal(self))
                retry.add_done_callback(lambda t: respond(_task_answer(t)))
                return
            answer, _ = app._relayed(self, status, rheaders, rbody)
        elif isinstance(exc, UpstreamError):
            assert self.hot is not None
            answer = error_answer(app._upstream_failed(self.hot, exc))
        else:
            log.error("échec inattendu du relais /send", exc_info=exc)
            answer = error_answer(internal_error())
        app._observe(self.t0, self, answer[0])
        respond(answer)


def _body_reader(body: bytes) -> Callable[[], Awaitable[bytes]]:
    """``read_body`` for a body the server has already read whole."""

    async def read() -> bytes:
        return body

    return read


def _task_answer(task: asyncio.Task[Answer]) -> Answer:
    if not task.cancelled() and task.exception() is None:
        return task.result()
    log.error("échec inattendu du relais /send", exc_info=None if task.cancelled() else task.exception())
    return error_answer(internal_error())


def error_answer(exc: ProxyError) -> Answer:
    """A refusal as a complete response (ANS JSON body, Content-Length)."""
    body = _json(exc.body())
    return exc.status, [*JSON_HEADERS, (b"content-length", b"%d" % len(body))], body


class ProxyApp:
    """The proxy as one ASGI callable."""

    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self.cfg = core.cfg
        self.max_body = core.cfg.server.max_body_bytes
        self.samesite = core.cfg.sessions.cookie_samesite
        self._get_now = core.store.get_now if isinstance(core.store, MemoryStore) else None
        self._commit_sends = core.cfg.traces.send_durability == "commit"
        self.router = Starlette(
            routes=[
                Route("/connect", self.connect, methods=["POST"]),
                Route("/disconnect", self.disconnect, methods=["DELETE"]),
                Route("/traces", self.traces, methods=["GET"]),
                Route("/authorize", self.authorize, methods=["GET"]),
                Route("/callback", self.callback, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
            ],
            lifespan=self.lifespan,
        )

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.core.start()
        try:
            yield
        finally:
            await self.core.stop()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/send/"):
            await self.send_route(scope, receive, send)
        else:
            await self.router(scope, receive, send)

    def _scope_addr(self, scope: MutableMapping[str, Any]) -> tuple[str | None, int | None]:
        return self._addr(scope.get("client"), scope["headers"])

    def _addr(
        self, client: tuple[str, int] | None, headers: list[tuple[bytes, bytes]]
    ) -> tuple[str | None, int | None]:
        xff = None
        if self.core.trusted:
            for k, v in headers:
                if k == b"x-forwarded-for":
                    xff = v.decode("latin-1") if xff is None else xff + "," + v.decode("latin-1")
        return client_address(client, xff, self.core.trusted)

    # ------------------------------------------------------------------ /send (hot path)
    async def send_route(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI entry for /send: used when the app runs under a plain ASGI server.

        ``confiance proxy serve`` does not come here: its HTTP protocol (``front.py``)
        calls :meth:`handle_send` directly, without building ASGI messages.
        """
        status, headers, body = await self.handle_send(
            scope["method"],
            scope.get("raw_path") or scope["path"].encode(),
            scope.get("query_string", b""),
            scope["headers"],
            scope.get("client"),
            lambda: _read_body(scope, receive, self.max_body),
        )
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def handle_send(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        read_body: Callable[[], Awaitable[bytes]],
    ) -> Answer:
        """Relay one /send request; always answers (errors become ANS JSON bodies).

        ``read_body`` is called only once the session is known, so an anonymous caller
        never gets to upload a body. The response headers include Content-Length.
        """
        t0 = time.perf_counter()
        try:
            r = self._begin(method, raw_path, query, headers, client, t0)
        except ProxyError as exc:
            answer = error_answer(exc)
            self._observe(t0, None, answer[0])
            return answer
        return await self._relay(r, read_body)

    async def _relay(self, r: _Relay, read_body: Callable[[], Awaitable[bytes]]) -> Answer:
        """The awaited path, from a parsed request to its answer: the steps :meth:`send_now`
        does without waiting, with the awaits they may need (session store, token renewal,
        a connection to open or a free slot in the pool)."""
        core = self.core
        try:
            r.now = now = self.core.clock()
            session = self._get_now(r.sid) if self._get_now is not None else None
            if session is None or session.expired(now) is not None:
                session = await core.lookup(r.sid, now)
            if self._get_now is not None:
                session.last_used_at = now
            else:
                try:
                    await core.store.touch(session, now)
                except StoreUnavailable as exc:
                    raise ProxyError(503, "SESSION_STORE_UNAVAILABLE", "stockage des sessions indisponible") from exc
            r.session = session
            r.body = await read_body()
            self._check_traces()
            hot = self._hot_now(r)
            if hot is None:
                t_renew = time.perf_counter()
                hot = await core.hot_entry(session, r.target.service, now)
                r.waited += time.perf_counter() - t_renew
            self._prepare_upstream(r, hot)
            t_up = time.perf_counter()
            try:
                status, rheaders, rbody = await hot.pool.request(r.method, r.head, r.body, hot.timeout)
            except UpstreamError as exc:
                raise self._upstream_failed(hot, exc) from exc
            if status == 401 and _invalid_token(rheaders):
                status, rheaders, rbody = await self._after_refusal(r)
            r.waited += time.perf_counter() - t_up
            answer, fut = self._relayed(r, status, rheaders, rbody)
            if fut is not None:
                await fut
        except ProxyError as exc:
            answer = error_answer(exc)
        self._observe(r.t0, r, answer[0])
        return answer

    def send_now(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        body: bytes,
        respond: Callable[[Answer], None],
    ) -> Awaitable[Answer] | None:
        """Relay one /send request whose body is already read; the proxy's server
        (front.py) calls this. None: ``respond`` was or will be called, once. Otherwise the
        caller awaits what is returned for the answer.

        Why: per request, a task, its coroutine chain and the futures between them cost
        CPU and event-loop turns the relay does not need. When everything is at hand
        (in-process session, current API token, an idle upstream connection) the request is
        written upstream here and answered from the upstream connection's data callback
        (:meth:`_Relay.upstream_done`). Otherwise what is returned is the awaited path
        (:meth:`_relay`), taken from where this one stopped: the request is parsed once.
        """
        read_body = _body_reader(body)
        if self._get_now is None or self._commit_sends:
            return self.handle_send(method, raw_path, query, headers, client, read_body)
        t0 = time.perf_counter()
        try:
            r = self._begin(method, raw_path, query, headers, client, t0)
        except ProxyError as exc:
            answer = error_answer(exc)
            self._observe(t0, None, answer[0])
            respond(answer)
            return None
        r.now = now = self.core.clock()
        session = self._get_now(r.sid)
        if session is None or session.expired(now) is not None or self.core.traces.full():
            return self._relay(r, read_body)
        r.session, r.body = session, body
        hot = self._hot_now(r)
        if hot is None:
            return self._relay(r, read_body)
        self._prepare_upstream(r, hot)
        r.app, r.respond = self, respond
        r.t_up = time.perf_counter()
        if not hot.pool.request_now(method, r.head, body, hot.timeout, r.upstream_done):
            return self._relay(r, read_body)
        session.last_used_at = now
        return None

    # -- the steps both paths share (no await in any of them)
    def _begin(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        t0: float,
    ) -> _Relay:
        if method not in SEND_METHODS:
            raise ProxyError(405, "METHOD_NOT_ALLOWED", "méthode non autorisée")
        sid = cookie_from_headers(headers)
        if not valid_session_id(sid):
            raise ProxyError(401, "SESSION_NOT_FOUND", "cookie proxy_session_id absent ou invalide")
        assert sid is not None
        try:
            target = split_send_target(raw_path, query)
        except UnsafePath as exc:
            raise ProxyError(400, "UNSAFE_PATH", str(exc)) from None
        if target.service not in self.cfg.services:
            raise ProxyError(404, "SERVICE_NOT_FOUND", f"service {target.service} non configuré sur ce proxy")
        return _Relay(method, sid, target, headers, client, t0)

    def _check_traces(self) -> None:
        if self.core.traces.full():
            # Refuse *before* relaying: a request must never reach a service without its trace.
            raise ProxyError(503, "TRACES_UNAVAILABLE", "journal des traces saturé, réessayez")

    def _hot_now(self, r: _Relay) -> Hot | None:
        """The relay context for this session+service if its API token is current."""
        assert r.session is not None
        hot = self.core.hot.get((r.sid, r.target.service))
        tok = r.session.api_tokens.get(r.target.service)
        if hot is None or tok is None or hot.token != tok.access_token or r.now >= hot.renew_at:
            return None
        return hot

    def _prepare_upstream(self, r: _Relay, hot: Hot) -> None:
        r.hot = hot
        target = r.target
        target_path = (hot.base_path + target.path) or "/"
        if target.query:
            target_path += "?" + target.query
        # Header names/values were validated by the HTTP parser and the path by pathsafety:
        # nothing here can inject a line into the upstream request.
        parts = [f"{r.method} {target_path} HTTP/1.1\r\n".encode("latin-1")]
        for k, v in r.headers:
            if k not in DROP_REQUEST_HEADERS:
                parts.append(k + b": " + v + b"\r\n")
        if r.body or r.method in BODY_METHODS:
            parts.append(b"content-length: %d\r\n" % len(r.body))
        parts += (hot.head_suffix, b"\r\n")
        r.head = b"".join(parts)

    async def _after_refusal(self, r: _Relay) -> Result:
        """The AS may have revoked the token early: exchange once more and retry once."""
        assert r.session is not None and r.hot is not None
        hot = await self.core.hot_entry(r.session, r.target.service, self.core.clock(), refused=r.hot.token)
        self._prepare_upstream(r, hot)
        try:
            return await hot.pool.request(r.method, r.head, r.body, hot.timeout)
        except UpstreamError as exc:
            raise self._upstream_failed(hot, exc) from exc

    async def _finish_after_refusal(self, r: _Relay) -> Answer:
        try:
            status, rheaders, rbody = await self._after_refusal(r)
            answer, fut = self._relayed(r, status, rheaders, rbody)
            if fut is not None:
                await fut
        except ProxyError as exc:
            answer = error_answer(exc)
        self._observe(r.t0, r, answer[0])
        return answer

    def _upstream_failed(self, hot: Hot, exc: UpstreamError) -> ProxyError:
        self.core.metrics.upstream_errors.labels(hot.service, exc.kind).inc()
        if exc.kind == "timeout":
            return ProxyError(504, "UPSTREAM_TIMEOUT", f"le service {hot.service} n'a pas répondu à temps")
        if exc.kind == "down":
            return ProxyError(503, "UPSTREAM_UNAVAILABLE", f"le service {hot.service} est injoignable")
        return ProxyError(502, "UPSTREAM_ERROR", f"réponse invalide du service {hot.service}")

    def _relayed(
        self, r: _Relay, status: int, rheaders: list[tuple[bytes, bytes]], rbody: bytes
    ) -> tuple[Answer, asyncio.Future[None] | None]:
        """The answer to a relayed request, its trace enqueued (future: commit, if awaited)."""
        assert r.session is not None and r.hot is not None
        if status >= 500:
            self.core.metrics.upstream_errors.labels(r.hot.service, "status_5xx").inc()
        ip, port = self._addr(r.client, r.headers)
        rec = send_trace_fields(r.now, r.session, ip, port, (r.target.service, r.method, r.target.path or "/"))
        # force: the request was relayed, its trace is kept even past the queue bound.
        fut = self.core.traces.submit(rec, r.now, wait=self._commit_sends, force=True)
        out = [(k, v) for k, v in rheaders if k not in DROP_RESPONSE_HEADERS]
        out.append((b"content-length", b"%d" % len(rbody)))
        return (status, out, rbody), fut

    def _observe(self, t0: float, r: _Relay | None, status: int) -> None:
        total = time.perf_counter() - t0
        # The overhead is what the proxy itself adds to a relayed request, measured inside
        # the process (total minus the upstream and token-renewal waits).
        self.core.metrics.send_done(total, total - r.waited if r is not None and r.waited else None, status)

    # ------------------------------------------------------------------ ANS routes
    async def connect(self, request: Request) -> Response:
        t0 = time.perf_counter()
        status = 500
        try:
            raw = await _read_request_body(request, self.max_body)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                raise ProxyError(
                    400, "INVALID_REQUEST", "corps JSON invalide", metadata={"nationalId": None, "clientId": None}
                ) from None
            req = parse_connect(body)
            ip, port = self._scope_addr(request.scope)
            status, session = await self.core.connect(req, ip, port)
            if status == 304 or session is None:
                return Response(status_code=304)
            resp = JSONResponse(
                {"proxy_session_id": session.id, "session_state": session.session_state},
                headers={"Cache-Control": "no-store"},
            )
            resp.headers["set-cookie"] = session_cookie(session.id, self.samesite)
            return resp
        except ProxyError as exc:
            status = exc.status
            return JSONResponse(exc.body(), status_code=exc.status)
        finally:
            self.core.metrics.latency("connect").observe(time.perf_counter() - t0)
            self.core.metrics.request("connect", status)

    async def disconnect(self, request: Request) -> Response:
        status = 200
        try:
            sid = cookie_from_headers(request.scope["headers"])
            if not valid_session_id(sid):
                raise ProxyError(401, "SESSION_NOT_FOUND", "cookie proxy_session_id absent ou invalide")
            assert sid is not None
            ip, port = self._scope_addr(request.scope)
            await self.core.disconnect(sid, ip, port)
            resp = JSONResponse({"code": "DISCONNECTED", "message": "session terminée"})
            resp.headers["set-cookie"] = erased_cookie(self.samesite)
            return resp
        except ProxyError as exc:
            status = exc.status
            return JSONResponse(exc.body(), status_code=exc.status)
        finally:
            self.core.metrics.request("disconnect", status)

    def _traces_allowed(self, request: Request) -> ProxyError | None:
        tcfg = self.cfg.traces
        if tcfg.conformity_mode:
            return None
        if tcfg.admin_token is None:
            return ProxyError(
                403, "TRACES_DISABLED", "consultation des traces désactivée (ni jeton admin ni mode conformité)"
            )
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(), tcfg.admin_token.encode()):
            return ProxyError(401, "UNAUTHORIZED", "jeton d'administration requis (Authorization: Bearer …)")
        return None

    async def traces(self, request: Request) -> Response:
        denied = self._traces_allowed(request)
        if denied is not None:
            self.core.metrics.request("traces", denied.status)
            return JSONResponse(denied.body(), status_code=denied.status, headers={"WWW-Authenticate": "Bearer"})
        start_raw = request.query_params.get("start")
        end_raw = request.query_params.get("end")
        if not start_raw:
            return JSONResponse({"code": "MISSING_FIELD", "message": "paramètre start manquant", "field": "start"}, 400)
        try:
            start = parse_iso(start_raw)
            end = parse_iso(end_raw) if end_raw else None
        except ValueError:
            return JSONResponse({"code": "INVALID_FIELD", "message": "date ISO 8601 invalide"}, 400)
        # Every request this instance has answered is in what we return (batched SEND traces
        # wait up to flush_interval); if the database is down the query below says so.
        await self.core.traces.flush(timeout=5.0)
        try:
            rows = await asyncio.to_thread(self.core.trace_store.query, start, end)
        except Exception:
            return JSONResponse({"code": "TRACES_UNAVAILABLE", "message": "base des traces indisponible"}, 503)
        self.core.metrics.request("traces", 200)
        return JSONResponse(rows, headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------------ web LPS (authorization code)
    def _redirect_uri(self, request: Request) -> str:
        base = self.cfg.server.public_url or f"https://{request.url.netloc}"
        return base.rstrip("/") + "/callback"

    async def authorize(self, request: Request) -> Response:
        client_id = request.query_params.get("clientId", "")
        self.core.refresh_clients()
        client = self.core.clients.get(client_id)
        if client is None or not client.web_redirect_url:
            return _page(404, "Logiciel inconnu", "Ce clientId n'est pas configuré pour la connexion web.")
        try:
            disc = await self.core.psc.discovery()
        except Unavailable:
            return _page(503, "Pro Santé Connect indisponible", "Réessayez dans quelques instants.")
        if not disc.authorization_endpoint:
            return _page(503, "Pro Santé Connect indisponible", "Point d'autorisation non publié.")
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        try:
            await self.core.store.put_pending(
                "auth:" + state, {"client_id": client_id, "nonce": nonce, "verifier": verifier}, 600
            )
        except StoreUnavailable:
            return _page(503, "Service indisponible", "Stockage des sessions indisponible.")
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": self._redirect_uri(request),
            "scope": self.cfg.psc.scope,
            "acr_values": self.cfg.psc.acr_values,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        resp = RedirectResponse(disc.authorization_endpoint + "?" + urlencode(params), status_code=302)
        # Binds the login to this browser (login CSRF): /callback requires the same state here.
        resp.headers["set-cookie"] = (
            f"{STATE_COOKIE}={state}; Path=/callback; Max-Age=600; Secure; HttpOnly; SameSite=Lax"
        )
        return resp

    async def callback(self, request: Request) -> Response:
        q = request.query_params
        state = q.get("state", "")
        ip, port = self._scope_addr(request.scope)
        if not state or cookie_from_headers(request.scope["headers"], STATE_COOKIE.encode()) != state:
            return _page(400, "Connexion refusée", "Paramètre state absent ou différent de celui de ce navigateur.")
        try:
            pending = await self.core.store.pop_pending("auth:" + state)
        except StoreUnavailable:
            return _page(503, "Service indisponible", "Stockage des sessions indisponible.")
        if pending is None:
            return _page(400, "Connexion expirée", "Cette tentative de connexion est inconnue ou expirée.")
        client = self.core.clients[pending["client_id"]]
        now = self.core.clock()
        failure = None
        tokens: dict[str, Any] = {}
        national_id = None
        if q.get("error"):
            failure = (q.get("error") or "")[:100]
        else:
            try:
                tokens = await self.core.psc.code(
                    client, q.get("code", ""), self._redirect_uri(request), pending["verifier"]
                )
                claims = await self.core.psc.verify_id_token(
                    str(tokens.get("id_token", "")), client.client_id, pending["nonce"]
                )
                national_id = str(claims.get("preferred_username") or claims.get("SubjectNameID") or "") or None
                if national_id is None:
                    failure = "no_national_id"
            except Unavailable:
                return _page(503, "Pro Santé Connect indisponible", "Réessayez dans quelques instants.")
            except OAuthFailure as exc:
                failure = exc.error
        if failure is not None:
            await self.core.trace_now(
                trace(
                    TraceType.CONNECT_FAILURE,
                    now=now,
                    national_id=national_id,
                    ip=ip,
                    port=port,
                    client_id=client.client_id,
                    dn=self.core.dns.get(client.client_id),
                    reason=failure,
                ),
                now,
            )
            return _page(400, "Connexion refusée", f"Pro Santé Connect a refusé la connexion ({failure}).")
        assert national_id is not None
        try:
            old = await self.core.store.find(national_id, client.client_id)
        except StoreUnavailable:
            return _page(503, "Service indisponible", "Stockage des sessions indisponible.")
        if old is not None:
            await self.core.end_session(old.id, "replaced")
        session = new_session(
            client_id=client.client_id,
            national_id=national_id,
            tokens=tokens,
            now=self.core.clock(),
            absolute_ttl=self.cfg.sessions.absolute_ttl,
            idle_ttl=self.cfg.sessions.idle_ttl,
            dn=self.core.dns.get(client.client_id),
            flow="code",
        )
        try:
            _status, created = await self.core._store_new(session, ip, port)
        except ProxyError as exc:
            return _page(exc.status, "Connexion impossible", exc.message)
        if created is None:
            return _page(409, "Connexion concurrente", "Une autre connexion vient d'aboutir ; réessayez.")
        assert client.web_redirect_url is not None
        resp = RedirectResponse(client.web_redirect_url, status_code=302)
        resp.headers.append("set-cookie", session_cookie(created.id, self.samesite))
        resp.headers.append("set-cookie", f"{STATE_COOKIE}=; Path=/callback; Max-Age=0; Secure; HttpOnly; SameSite=Lax")
        return resp

    # ------------------------------------------------------------------ operations
    async def healthz(self, _request: Request) -> Response:
        # The declared version is what the conformity report and the guichet compare.
        return JSONResponse({"status": "ok", "version": __version__, "proxy_id": self.core.cfg.server.proxy_id})

    async def readyz(self, _request: Request) -> Response:
        problems = []
        try:
            await self.core.store.ping()
        except StoreUnavailable:
            problems.append("sessions")
        try:
            await asyncio.to_thread(self.core.trace_store.ping)
        except Exception:
            problems.append("traces")
        if self.core.traces.pending() >= self.cfg.traces.queue_max * 0.9:
            problems.append("trace_queue")
        if problems:
            return JSONResponse({"status": "unavailable", "failing": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(self, _request: Request) -> Response:
        try:
            active = await self.core.store.count()
        except StoreUnavailable:
            active = -1
        body = self.core.metrics.render(self.core.traces.pending(), active)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def _invalid_token(headers: list[tuple[bytes, bytes]]) -> bool:
    """RFC 6750 §3.1: the resource server says the token (not the request) is the problem."""
    return any(k == b"www-authenticate" and b"invalid_token" in v for k, v in headers)


async def _read_body(scope: MutableMapping[str, Any], receive: Any, limit: int) -> bytes:
    for k, v in scope["headers"]:
        if k == b"content-length":
            try:
                if int(v) > limit:
                    raise ProxyError(413, "BODY_TOO_LARGE", f"corps de requête trop volumineux (max {limit} octets)")
            except ValueError:
                raise ProxyError(400, "INVALID_REQUEST", "Content-Length invalide") from None
    chunks = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ProxyError(400, "CLIENT_DISCONNECTED", "requête interrompue")
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise ProxyError(413, "BODY_TOO_LARGE", f"corps de requête trop volumineux (max {limit} octets)")
            chunks.append(chunk)
        if not msg.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _read_request_body(request: Request, limit: int) -> bytes:
    return await _read_body(request.scope, request.receive, limit)


def _page(status: int, title: str, text: str) -> HTMLResponse:
    body = (
        "<!doctype html><html lang='fr'><head><meta charset='utf-8'><title>"
        f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
