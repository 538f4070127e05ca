"""The proxy's ASGI app: ANS's contract routes (``/connect``, ``/disconnect``,
``/traces``), the web login's (``web_login.py``), health and metrics.

``/send/…`` is not routed here when the proxy serves itself (``serve.py`` hands it to
:class:`~.relay.Relay` as the HTTP server's fast route); under a plain ASGI server it
reaches :meth:`ProxyApp.send_route`, which reads the body and hands it to the same relay.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confiance import __version__

from .core import ProxyCore
from .domain import ProxyError, parse_connect, valid_session_id
from .edge import (
    Answer,
    cookie_from_headers,
    erased_cookie,
    error_answer,
    parse_json,
    read_body,
    read_request_body,
    require_json,
    scope_address,
    session_cookie,
)
from .relay import Relay
from .sessions import StoreUnavailable
from .traces_http import traces_response
from .web_login import WebLogin


class ProxyApp:
    """The proxy's routes as one ASGI callable."""

    def __init__(self, core: ProxyCore, relay: Relay | None = None) -> None:
        self.core = core
        self.cfg = core.cfg
        self.relay = relay or Relay(core)
        self.max_body = core.cfg.server.max_body_bytes
        self.samesite = core.cfg.sessions.cookie_samesite
        self.router = Starlette(
            routes=[
                Route("/connect", self.connect, methods=["POST"]),
                Route("/disconnect", self.disconnect, methods=["DELETE"]),
                Route("/traces", self.traces, methods=["GET"]),
                *WebLogin(core).routes(),
                Route("/healthz", self.healthz, methods=["GET"]),
                *([] if core.cfg.server.admin_listen else self._ops_routes(core.cfg.server.admin_token)),
            ],
            lifespan=self.lifespan,
        )
        # The admin listener (server.admin_listen) serves operations only.
        self.admin_router = Starlette(
            routes=[Route("/healthz", self.healthz, methods=["GET"]), *self._ops_routes(None)]
        )

    def _ops_routes(self, token: str | None) -> list[Route]:
        """/readyz and /metrics, behind ``Authorization: Bearer <token>`` when given."""
        readyz, metrics = self.readyz, self.metrics
        if token is not None:
            readyz, metrics = _bearer(token, readyz), _bearer(token, metrics)
        return [Route("/readyz", readyz, methods=["GET"]), Route("/metrics", metrics, methods=["GET"])]

    @asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.core.start()
        try:
            yield
        finally:
            await self.core.stop()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("confiance.listener") == "admin":
            await self.admin_router(scope, receive, send)
        elif scope["type"] == "http" and scope["path"].startswith("/send/"):
            await self.send_route(scope, receive, send)
        else:
            await self.router(scope, receive, send)

    async def send_route(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """/send under a plain ASGI server (``confiance proxy serve`` does not come here)."""
        try:
            body = await read_body(scope, receive, self.max_body)
        except ProxyError as exc:
            status, headers, out = error_answer(exc)
        else:
            done: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
            pending = self.relay.handle(
                scope["method"],
                scope.get("raw_path") or scope["path"].encode(),
                scope.get("query_string", b""),
                scope["headers"],
                scope.get("client"),
                body,
                done.set_result,
            )
            status, headers, out = await (pending if pending is not None else done)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    # ------------------------------------------------------------------ ANS routes
    async def connect(self, request: Request) -> Response:
        # Counted and timed, like every route but /send, by access_log.ObservedApp.
        try:
            require_json(request.scope["headers"])  # before reading the body
            body = parse_json(await read_request_body(request, self.max_body))
            req = parse_connect(body)
            ip, port = scope_address(request.scope, self.core.trusted)
            sid = cookie_from_headers(request.scope["headers"])
            status, session = await self.core.connect(req, ip, port, sid if valid_session_id(sid) else None)
            if status == 304 or session is None:
                return Response(status_code=304)
            resp = JSONResponse(
                {"proxy_session_id": session.id, "session_state": session.session_state},
                headers={"Cache-Control": "no-store"},
            )
            resp.headers["set-cookie"] = session_cookie(session.id, self.samesite)
            return resp
        except ProxyError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)

    async def disconnect(self, request: Request) -> Response:
        try:
            sid = cookie_from_headers(request.scope["headers"])
            if not valid_session_id(sid):
                raise ProxyError(401, "SESSION_NOT_FOUND", "cookie proxy_session_id absent ou invalide")
            assert sid is not None
            ip, port = scope_address(request.scope, self.core.trusted)
            await self.core.disconnect(sid, ip, port)
            resp = JSONResponse({"code": "DISCONNECTED", "message": "session terminée"})
            resp.headers["set-cookie"] = erased_cookie(self.samesite)
            return resp
        except ProxyError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)

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
            return JSONResponse(denied.body(), status_code=denied.status, headers={"WWW-Authenticate": "Bearer"})
        _status, response = await traces_response(
            request, self.core.trace_store, self.core.traces, self.cfg.traces.db_timeout
        )
        return response

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
            await asyncio.wait_for(asyncio.to_thread(self.core.trace_store.ping), self.cfg.traces.db_timeout)
        except Exception:
            problems.append("traces")
        if self.core.traces.stalled():  # keeper silent (stopped, stuck) or batches failing
            problems.append("trace_keeper")
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


def _bearer(token: str, endpoint: Any) -> Any:
    """``endpoint`` answering 401 without ``Authorization: Bearer <token>``."""

    async def guarded(request: Request) -> Response:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(), token.encode()):
            return JSONResponse(
                {"code": "UNAUTHORIZED", "message": "jeton d'administration requis (Authorization: Bearer …)"},
                401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        response: Response = await endpoint(request)
        return response

    return guarded
