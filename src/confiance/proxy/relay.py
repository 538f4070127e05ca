"""``/send/{service}/…``: one request of an LPS relayed to a health API, with its trace.

One class, :class:`Relay`, one entry point, :meth:`Relay.handle`, which the HTTP server
calls for every ``/send`` request (``serve.py`` wires it as the server's fast route). The
walk of a request:

1. ``_begin``: method allowed, session cookie well-formed, path safe, service configured;
2. the session, looked up in-process (or in the shared store, awaited);
3. the relay context (``Hot``) for session + service: the pooled upstream connections for
   the LPS certificate, the current API token (renewed first when due, awaited);
4. ``_prepare_upstream``: the request head, from the forwarded headers and the context's;
5. the upstream call: written at once on an idle kept-alive connection and answered from
   its data callback (:meth:`_Send.upstream_done`), or awaited when it must wait;
6. ``relayed``: the answer, response headers filtered, its SEND trace enqueued.

Why two paths: per request, a task, its coroutine chain and the futures between them cost
CPU and event-loop turns the relay does not need. When everything is at hand (in-process
session, current API token, an idle upstream connection) nothing is awaited; otherwise the
awaited path (:meth:`_relay`) takes over from where the first stopped, so a request is
parsed once. ``bench/proxy/hotpath.py`` measures the first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .core import Hot, ProxyCore
from .domain import ProxyError, Session, internal_error, send_trace_fields, valid_session_id
from .edge import Answer, caller_address, cookie_from_headers, error_answer
from .forwarding import connection_tokens
from .http1.client import Result, UpstreamError
from .pathsafety import SendTarget, UnsafePath, split_send_target
from .sessions import MemoryStore, StoreUnavailable

log = logging.getLogger("confiance.proxy")

SEND_PREFIX = b"/send/"
SEND_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
ALLOW = ((b"allow", b"GET, POST, PUT, PATCH, DELETE"),)  # RFC 9110 §15.5.6: every 405 names them
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

# Response headers the LPS never gets from a service: hop-by-hop, framing (ours), cookies
# (they would land on the proxy's domain), and what names the service's software.
DROP_RESPONSE_HEADERS = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"set-cookie",
        b"server",
        b"date",
    }
)


@dataclass(slots=True)
class _Send:
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
    # The unawaited path only: who answers, and when the upstream call started.
    relay: Relay | None = None
    respond: Callable[[Answer], None] | None = None
    t_up: float = 0.0

    def upstream_done(self, result: Result | None, exc: BaseException | None) -> None:
        """The upstream's answer to a request relayed without awaiting (step 5)."""
        relay, respond = self.relay, self.respond
        assert relay is not None and respond is not None
        self.waited += time.perf_counter() - self.t_up
        if result is not None:
            status, rheaders, rbody = result
            if status == 401 and invalid_token(rheaders):
                retry = asyncio.get_running_loop().create_task(relay.finish_after_refusal(self))
                retry.add_done_callback(lambda t: respond(_task_answer(t)))
                return
            answer, _ = relay.relayed(self, status, rheaders, rbody)
        elif isinstance(exc, UpstreamError):
            assert self.hot is not None
            answer = error_answer(relay.upstream_failed(self.hot, exc))
        else:
            log.error("unexpected /send relay failure", exc_info=exc)
            answer = error_answer(internal_error())
        relay.observe(self.t0, self, answer[0])
        respond(answer)


def _task_answer(task: asyncio.Task[Answer]) -> Answer:
    if not task.cancelled() and task.exception() is None:
        return task.result()
    log.error("unexpected /send relay failure", exc_info=None if task.cancelled() else task.exception())
    return error_answer(internal_error())


def invalid_token(headers: list[tuple[bytes, bytes]]) -> bool:
    """RFC 6750 §3.1: the resource server says the token (not the request) is the problem."""
    return any(k == b"www-authenticate" and b"invalid_token" in v for k, v in headers)


class Relay:
    """Relays ``/send`` requests for one :class:`ProxyCore` (see the module docstring)."""

    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self.cfg = core.cfg
        self._clock = core.clock
        # In-process sessions, or a shared store's per-worker cache (sessions/cache.py).
        self._get_now = getattr(core.store, "get_now", None)
        self._in_process = isinstance(core.store, MemoryStore)
        self._commit_sends = core.cfg.traces.send_durability == "commit"

    def handle(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        body: bytes,
        respond: Callable[[Answer], None],
    ) -> Awaitable[Answer] | None:
        """Relay one /send request whose body is read. None: ``respond`` was or will be
        called, once. Otherwise the caller awaits what is returned for the answer (errors
        are answers too, in ANS's JSON shape; the headers include Content-Length)."""
        t0 = time.perf_counter()
        try:
            r = self._begin(method, raw_path, query, headers, client, t0)
        except ProxyError as exc:
            answer = error_answer(exc)
            self.observe(t0, None, answer[0], method, client)
            respond(answer)
            return None
        r.body = body
        if self._get_now is None or self._commit_sends:
            return self._relay(r)
        r.now = now = self._clock()
        session = self._get_now(r.sid)
        if session is None or session.expired(now) is not None or self.core.traces.full():
            return self._relay(r)
        r.session = session
        hot = self._hot_now(r)
        if hot is None:
            return self._relay(r)
        self._prepare_upstream(r, hot)
        r.relay, r.respond = self, respond
        r.t_up = time.perf_counter()
        if not hot.pool.request_now(method, r.head, body, hot.timeout, r.upstream_done):
            return self._relay(r)
        session.last_used_at = now
        return None

    def admit(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]]
    ) -> Answer | Awaitable[Answer | None] | None:
        """Judge a /send that announces a body from its head alone: the HTTP server calls
        this before reading the body, so an unknown caller never gets to upload one (nor a
        ``100 Continue``). None admits; an answer refuses (the connection then closes);
        with a shared session store the verdict is awaited. :meth:`handle` checks again."""
        raw_path, _, query = target.partition(b"?")
        try:
            r = self._begin(method, raw_path, query, headers, None, 0.0)
            if self._get_now is None:
                return self._admit_shared(r.sid)
            session = self._get_now(r.sid)
            if not self._in_process and (session is None or session.expired(self._clock()) is not None):
                return self._admit_shared(r.sid)  # not cached, or its copy looks over: ask the store
            if session is None:
                raise ProxyError(401, "SESSION_NOT_FOUND", "session inconnue ou expirée")
            if session.expired(self._clock()) is not None:
                raise ProxyError(401, "SESSION_EXPIRED", "session expirée, reconnectez-vous")
        except ProxyError as exc:
            return self._refusal(exc)
        return None

    async def _admit_shared(self, sid: str) -> Answer | None:
        try:
            await self.core.lookup(sid, self._clock())
        except ProxyError as exc:
            return self._refusal(exc)
        return None

    def _refusal(self, exc: ProxyError) -> Answer:
        answer = error_answer(exc)
        self.observe(time.perf_counter(), None, answer[0])
        return answer

    async def _relay(self, r: _Send) -> Answer:
        """The awaited path, from a parsed request to its answer: the steps :meth:`handle`
        does without waiting, with the awaits they may need (session store, token renewal,
        a connection to open or a free slot in the pool)."""
        core = self.core
        try:
            r.now = now = self._clock()
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
                raise self.upstream_failed(hot, exc) from exc
            if status == 401 and invalid_token(rheaders):
                status, rheaders, rbody = await self._after_refusal(r)
            r.waited += time.perf_counter() - t_up
            answer, fut = self.relayed(r, status, rheaders, rbody)
            if fut is not None:
                await self.core.traces.committed(fut)
        except ProxyError as exc:
            answer = error_answer(exc)
        self.observe(r.t0, r, answer[0])
        return answer

    # -- the steps both paths share (no await in any of them)
    def _begin(
        self,
        method: str,
        raw_path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        client: tuple[str, int] | None,
        t0: float,
    ) -> _Send:
        if method not in SEND_METHODS:
            raise ProxyError(405, "METHOD_NOT_ALLOWED", "méthode non autorisée", headers=ALLOW)
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
        return _Send(method, sid, target, headers, client, t0)

    def _check_traces(self) -> None:
        if self.core.traces.full():
            # Refuse *before* relaying: a request must never reach a service without its trace.
            raise ProxyError(503, "TRACES_UNAVAILABLE", "journal des traces saturé, réessayez")

    def _hot_now(self, r: _Send) -> Hot | None:
        """The relay context for this session+service if its API token is current."""
        assert r.session is not None
        hot = self.core.hot.get((r.sid, r.target.service))
        tok = r.session.api_tokens.get(r.target.service)
        if hot is None or tok is None or hot.token != tok.access_token or r.now >= hot.renew_at:
            return None
        return hot

    def _prepare_upstream(self, r: _Send, hot: Hot) -> None:
        r.hot = hot
        target = r.target
        target_path = (hot.base_path + target.path) or "/"
        if target.query:
            target_path += "?" + target.query
        # Header names/values were validated by the HTTP parser and the path by pathsafety:
        # nothing here can inject a line into the upstream request. Only the service's
        # allow-list is forwarded (forwarding.py), minus what Connection names.
        parts = [f"{r.method} {target_path} HTTP/1.1\r\n".encode("latin-1")]
        forward = hot.forward
        hop: list[bytes] | None = None
        for k, v in r.headers:
            if k in forward:
                parts.append(k + b": " + v + b"\r\n")
            elif k == b"connection":
                hop = [v] if hop is None else [*hop, v]
        if hop is not None:
            named = connection_tokens(hop)
            parts = [parts[0], *(p for p in parts[1:] if p.split(b":", 1)[0] not in named)]
        if r.body or r.method in BODY_METHODS:
            parts.append(b"content-length: %d\r\n" % len(r.body))
        parts += (hot.head_suffix, b"\r\n")
        r.head = b"".join(parts)

    async def _after_refusal(self, r: _Send) -> Result:
        """The AS may have revoked the token early: exchange once more and retry once."""
        assert r.session is not None and r.hot is not None
        hot = await self.core.hot_entry(r.session, r.target.service, self._clock(), refused=r.hot.token)
        self._prepare_upstream(r, hot)
        try:
            return await hot.pool.request(r.method, r.head, r.body, hot.timeout)
        except UpstreamError as exc:
            raise self.upstream_failed(hot, exc) from exc

    # -- called by a request in progress (_Send.upstream_done) as well
    async def finish_after_refusal(self, r: _Send) -> Answer:
        """An unawaited request whose token the upstream refused: retried on the awaited path."""
        try:
            status, rheaders, rbody = await self._after_refusal(r)
            answer, fut = self.relayed(r, status, rheaders, rbody)
            if fut is not None:
                await self.core.traces.committed(fut)
        except ProxyError as exc:
            answer = error_answer(exc)
        self.observe(r.t0, r, answer[0])
        return answer

    def upstream_failed(self, hot: Hot, exc: UpstreamError) -> ProxyError:
        """The refusal the LPS gets for an upstream failure (and its metric)."""
        self.core.metrics.upstream_errors.labels(hot.service, exc.kind).inc()
        if exc.kind == "timeout":
            return ProxyError(504, "UPSTREAM_TIMEOUT", f"le service {hot.service} n'a pas répondu à temps")
        if exc.kind == "down":
            return ProxyError(503, "UPSTREAM_UNAVAILABLE", f"le service {hot.service} est injoignable")
        return ProxyError(502, "UPSTREAM_ERROR", f"réponse invalide du service {hot.service}")

    def relayed(
        self, r: _Send, status: int, rheaders: list[tuple[bytes, bytes]], rbody: bytes
    ) -> tuple[Answer, asyncio.Future[None] | None]:
        """The answer to a relayed request, its trace enqueued (future: commit, if awaited)."""
        assert r.session is not None and r.hot is not None
        if status >= 500:
            self.core.metrics.upstream_errors.labels(r.hot.service, "status_5xx").inc()
        ip, port = caller_address(r.client, r.headers, self.core.trusted)
        rec = send_trace_fields(r.now, r.session, ip, port, (r.target.service, r.method, r.target.path or "/"))
        # force: the request was relayed, its trace is kept even past the queue bound.
        fut = self.core.traces.submit(rec, r.now, wait=self._commit_sends, force=True)
        out = [(k, v) for k, v in rheaders if k not in DROP_RESPONSE_HEADERS]
        out.append((b"content-length", b"%d" % len(rbody)))
        return (status, out, rbody), fut

    def observe(
        self, t0: float, r: _Send | None, status: int, method: str = "", client: tuple[str, int] | None = None
    ) -> None:
        """Record a finished /send in the metrics and the access log (``method`` and
        ``client``: of a request refused before it was parsed, when there is no ``r``)."""
        total = time.perf_counter() - t0
        # The overhead is what the proxy itself adds to a relayed request, measured inside
        # the process (total minus the upstream and token-renewal waits).
        self.core.metrics.send_done(total, total - r.waited if r is not None and r.waited else None, status)
        if r is None:
            self.core.access.line(method, "send", status, total, peer=client)
        else:
            s = r.session
            self.core.access.line(
                r.method, "send", status, total, r.target.service, s.client_id if s else None, r.sid, r.client
            )
