"""The proxy's behaviour, between its HTTP routes and the outside world.

Owns the session store, the trace writer, the PSC and AS clients and the per-session hot
cache. Rules that decide (validation, expiry, trace shape, path safety) live in ``domain``
and ``pathsafety``; this module sequences I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from confiance.core.clientcert import parse_networks
from confiance.core.clients_file import ClientsFile
from confiance.core.http import ClientFactory, Timeouts
from confiance.pki.thumbprint import subject_dn

from .access_log import AccessLog
from .config import LpsClient, ProxyConfig, ServiceSection
from .domain import (
    ApiToken,
    ConnectRequest,
    ProxyError,
    Session,
    TraceType,
    apply_psc_refresh,
    new_session,
    trace,
)
from .forwarding import forwarded
from .http1.client import Pool
from .http1.outbox import Outbox
from .metrics import Metrics
from .oauth import OAuthFailure, PscClient, TokenExchanger, Unavailable, identity_of
from .sessions import SessionStore, StoreUnavailable, make_store
from .traces import TraceQueueFull
from .tracewriter import TraceCommitTimeout, build_writer

log = logging.getLogger("confiance.proxy")


@dataclass(slots=True)
class Hot:
    """What /send needs for one session+service, computed once per API token: the pooled
    connection set for (origin, LPS certificate) and the header bytes every request carries."""

    token: str
    renew_at: float
    base_path: str  # path prefix of the service base URL ("" or "/dmp")
    head_suffix: bytes  # b"host: …\r\nauthorization: Bearer …\r\n"
    pool: Pool
    timeout: float
    service: str
    forward: frozenset[bytes]  # request headers this service receives (forwarding.py)


def client_dn(client: LpsClient) -> str | None:
    if client.cert is None:
        return None
    from cryptography import x509

    return subject_dn(x509.load_pem_x509_certificate(client.cert.read_bytes()))


class ProxyCore:
    def __init__(
        self, cfg: ProxyConfig, store: SessionStore | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        """``clock``: epoch seconds for every session and token decision (expiry, idle time,
        renewal, the LPS-clients file's re-read interval). Tests move it instead of sleeping,
        so no rule depends on how fast a loaded machine runs."""
        self.cfg = cfg
        self.clock = clock
        self.instance = secrets.token_hex(8)
        self.trusted = parse_networks(cfg.server.trusted_proxies)
        self.store = store or make_store(
            cfg.sessions.store,
            cfg.sessions.url,
            cfg.sessions.touch_interval,
            cfg.sessions.redis_prefix,
            cfg.sessions.encryption_key,
            cfg.sessions.cache_max_age,
        )
        self.traces = build_writer(cfg.traces)
        self.trace_store = self.traces.store
        self.factory = ClientFactory(
            cfg.outbound.ca_bundle,
            Timeouts(connect=cfg.outbound.connect_timeout, total=cfg.outbound.upstream_timeout),
            pool_size=cfg.outbound.pool_size,
        )
        self.psc = PscClient(cfg.psc, self.factory, cfg.outbound.psc_timeout)
        self.exchanger = TokenExchanger(self.factory, cfg.outbound.psc_timeout)
        self.metrics = Metrics()
        self.access = AccessLog(enabled=cfg.server.access_log)  # access_log.py (ops)
        self.clients = {c.client_id: c for c in cfg.lps_clients}
        self.dns = {c.client_id: client_dn(c) for c in cfg.lps_clients}
        path = cfg.lps_clients_file
        self._clients_file = ClientsFile(path, LpsClient, clock=self.clock) if path is not None else None
        self.refresh_clients()
        self.forward = {name: forwarded(svc.forward_headers) for name, svc in cfg.services.items()}
        self.hot: dict[tuple[str, str], Hot] = {}
        self.pools: dict[tuple[str, int, str], Pool] = {}
        self.outbox = Outbox()  # requests to the services, written at the end of each loop pass
        self._locks: dict[str, asyncio.Lock] = {}
        self._bg: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.started = False

    def refresh_clients(self) -> None:
        """Pick up LPS onboarded with `confiance proxy clients add` without a restart.

        The file is looked at no more than once a second and re-read only when it changed;
        a bad file is logged and the previous clients are kept. Clients of the config file
        win over the onboarded ones (an operator cannot be overridden by a dropped file).
        """
        if self._clients_file is None:
            return
        extra = self._clients_file.poll()  # None: not looked at, unchanged, or unreadable (logged)
        if extra is None:
            return
        clients = {c.client_id: c for c in self.cfg.lps_clients}
        dns = {cid: self.dns.get(cid) for cid in clients}
        for c in extra:
            if c.client_id in clients:
                continue
            try:
                dns[c.client_id] = client_dn(c)
            except (OSError, ValueError) as exc:
                log.warning("LPS client %s ignored: unreadable certificate (%s)", c.client_id, exc)
                continue
            clients[c.client_id] = c
        self.clients, self.dns = clients, dns

    async def reload_clients(self, lps_clients: list[LpsClient]) -> None:
        """SIGHUP (reload.py): the configuration's clients replaced, the onboarded file
        re-read, and every outbound connection and TLS context dropped, so rotated LPS
        certificates are read again on the next request (those in flight finish)."""
        self.cfg.lps_clients = lps_clients
        self.clients = {c.client_id: c for c in lps_clients}
        self.dns = {c.client_id: client_dn(c) for c in lps_clients}
        if self._clients_file is not None:  # a fresh watcher reads the file at once
            self._clients_file = ClientsFile(self._clients_file.path, LpsClient, clock=self.clock)
        self.refresh_clients()
        pools, self.pools = self.pools, {}
        self.hot.clear()
        for pool in pools.values():
            pool.close()
        await self.factory.reload()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.traces.start()
        self.metrics.start()  # shares this worker's metrics when several serve one socket
        if not await self.traces.ready(self.cfg.traces.keeper_timeout):
            log.error(
                "trace keeper not answering after %.0f s; serving anyway (/readyz says so)",
                self.cfg.traces.keeper_timeout,
            )
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop(), name="session-sweeper")
        self.started = True

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._bg:
            await asyncio.wait(self._bg, timeout=10)
        await self.traces.close()
        for pool in self.pools.values():
            pool.close()
        await self.factory.aclose()
        await self.store.close()
        self.trace_store.close()
        self.access.flush()
        await self.metrics.stop()

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    # ------------------------------------------------------------------ traces
    async def trace_now(self, rec: dict[str, Any], now: float) -> None:
        """Low-rate traces (connect/disconnect): answered only once committed."""
        try:
            await self.traces.write(rec, now)
        except TraceQueueFull as exc:
            raise ProxyError(503, "TRACES_UNAVAILABLE", "journal des traces saturé, réessayez") from exc
        except TraceCommitTimeout as exc:
            raise ProxyError(503, "TRACES_UNAVAILABLE", "journal des traces indisponible, réessayez") from exc

    # ------------------------------------------------------------------ connect
    async def connect(
        self, req: ConnectRequest, ip: str | None, port: int | None, sid: str | None = None
    ) -> tuple[int, Session | None]:
        """200 + a new session, or 304 when ``sid`` (the caller's cookie) is a live session
        of this professional with this LPS; ProxyError otherwise."""
        now = self.clock()
        meta = {"nationalId": req.national_id, "clientId": req.client_id}
        self.refresh_clients()
        client = self.clients.get(req.client_id)

        async def fail(status: int, code: str, message: str, reason: str) -> ProxyError:
            await self.trace_now(
                trace(
                    TraceType.CONNECT_FAILURE,
                    now=self.clock(),
                    national_id=req.national_id,
                    ip=ip,
                    port=port,
                    client_id=req.client_id,
                    dn=self.dns.get(req.client_id),
                    reason=reason,
                ),
                self.clock(),
            )
            return ProxyError(status, code, message, metadata=meta)

        if client is None:
            raise await fail(404, "CLIENT_NOT_FOUND", "clientId inconnu de ce proxy", "unknown_client")
        if sid is not None:
            # The 304 rule (ANS's SessionController.connect: a started web session →
            # Reconnect): only the caller holding the cookie of a live session is told it is
            # already connected. Without it (another workstation, a lost cookie) this is a
            # new login. A live session of another professional or LPS is no replay either:
            # answering 304 would leave this caller acting under someone else's session.
            try:
                existing = await self.store.get(sid)
            except StoreUnavailable as exc:
                raise ProxyError(503, "SESSION_STORE_UNAVAILABLE", "stockage des sessions indisponible") from exc
            if existing is not None:
                why = existing.expired(now)
                if why is not None:
                    await self.end_session(existing.id, why)
                elif existing.national_id == req.national_id and existing.client_id == req.client_id:
                    await self.trace_now(
                        trace(
                            TraceType.CONNECT_REPLAY,
                            now=now,
                            national_id=req.national_id,
                            ip=ip,
                            port=port,
                            session=existing,
                        ),
                        now,
                    )
                    return 304, None
        try:
            tokens = await self.psc.ciba(client, req.national_id, req.binding_message, req.channel)
            if self.cfg.psc.verify_id_token and tokens.get("id_token"):
                claims = await self.psc.verify_id_token(str(tokens["id_token"]), client.client_id)
                who = claims.get("preferred_username") or claims.get("SubjectNameID")
                if who is not None and who != req.national_id:
                    raise OAuthFailure("invalid_id_token", "identité authentifiée différente de celle demandée")
        except Unavailable as exc:
            raise await fail(503, "PSC_UNAVAILABLE", "Pro Santé Connect est indisponible", str(exc)) from exc
        except OAuthFailure as exc:
            status, code, message = _connect_error(exc)
            raise await fail(status, code, message, exc.error) from exc
        done = self.clock()
        session = new_session(
            client_id=client.client_id,
            national_id=req.national_id,
            tokens=tokens,
            now=done,
            absolute_ttl=self.cfg.sessions.absolute_ttl,
            idle_ttl=self.cfg.sessions.idle_ttl,
            dn=self.dns.get(client.client_id),
        )
        return await self.store_new(session, ip, port)

    async def store_new(self, session: Session, ip: str | None, port: int | None) -> tuple[int, Session]:
        """Store and trace a session PSC just opened (CIBA or web login)."""
        try:
            await self.store.create(session)
        except StoreUnavailable as exc:
            self.spawn(self._end_remote(session, "store_unavailable"))
            raise ProxyError(503, "SESSION_STORE_UNAVAILABLE", "stockage des sessions indisponible") from exc
        now = self.clock()
        try:
            await self.trace_now(
                trace(
                    TraceType.CONNECT_SUCCESS,
                    now=now,
                    national_id=session.national_id,
                    ip=ip,
                    port=port,
                    session=session,
                ),
                now,
            )
        except ProxyError:
            await self._unmake(session, ip, port)
            raise
        # The idle clock starts when the LPS gets its session, not when PSC answered: the
        # trace commit above can take a while (a loaded machine, the keeper's first batch),
        # and a short idle_ttl must not be half spent before the first /send. Best effort:
        # the session is stored and traced; a store hiccup here must not undo the connect.
        with contextlib.suppress(StoreUnavailable):
            await self.store.touch(session, self.clock())
        return 200, session

    async def _unmake(self, session: Session, ip: str | None, port: int | None) -> None:
        """A session whose CONNECT_SUCCESS was not committed does not exist: nobody has its
        cookie yet, so it is removed and ended at PSC. Its trace was withdrawn from the
        queue; in case a stopped keeper committed it anyway, a CONNECT_FAILURE follows it."""
        with contextlib.suppress(StoreUnavailable):
            await self.store.delete(session.id)
        self.spawn(self._end_remote(session, "traces_unavailable"))
        now = self.clock()
        rec = trace(
            TraceType.CONNECT_FAILURE,
            now=now,
            national_id=session.national_id,
            ip=ip,
            port=port,
            client_id=session.client_id,
            dn=self.dns.get(session.client_id),
            reason="traces_unavailable",
        )
        self.traces.submit(rec, now, force=True)

    # ------------------------------------------------------------------ sessions
    async def lookup(self, sid: str, now: float) -> Session:
        """The live session for a cookie, or 401 (ends it first when it just expired)."""
        try:
            s = await self.store.get(sid)
        except StoreUnavailable as exc:
            raise ProxyError(503, "SESSION_STORE_UNAVAILABLE", "stockage des sessions indisponible") from exc
        if s is None:
            raise ProxyError(401, "SESSION_NOT_FOUND", "session inconnue ou expirée")
        why = s.expired(now)
        if why is not None:
            self.spawn(self.end_session(sid, why))
            raise ProxyError(401, "SESSION_EXPIRED", "session expirée, reconnectez-vous")
        return s

    async def disconnect(self, sid: str, ip: str | None, port: int | None) -> None:
        try:
            s = await self.store.delete(sid)
        except StoreUnavailable as exc:
            raise ProxyError(503, "SESSION_STORE_UNAVAILABLE", "stockage des sessions indisponible") from exc
        if s is None:
            raise ProxyError(401, "SESSION_NOT_FOUND", "session inconnue")
        now = self.clock()
        try:
            await self.trace_now(
                trace(TraceType.DISCONNECT, now=now, national_id=s.national_id, ip=ip, port=port, session=s), now
            )
        except ProxyError:  # the session is gone already: end it everywhere, then say so
            self._forget(sid)
            self.spawn(self._end_remote(s, "disconnect"))
            raise
        self._forget(sid)
        self.metrics.sessions_ended.labels("disconnect").inc()
        await self._end_remote(s, "disconnect")

    async def end_session(self, sid: str, reason: str) -> None:
        """Remove the session (only one caller wins) then revoke its tokens and end it at PSC."""
        try:
            s = await self.store.delete(sid)
        except StoreUnavailable:
            return  # the sweeper retries once the store is back
        self._forget(sid)
        if s is None:
            return
        self.metrics.sessions_ended.labels(reason).inc()
        await self._end_remote(s, reason)

    def _forget(self, sid: str) -> None:
        for svc in self.cfg.services:
            self.hot.pop((sid, svc), None)

    async def _end_remote(self, s: Session, reason: str) -> None:
        client = self.clients.get(s.client_id)
        if client is None:
            return
        for name, tok in s.api_tokens.items():
            svc = self.cfg.services.get(name)
            if svc is None:
                continue
            try:
                await self.exchanger.revoke(client, svc, tok)
            except (Unavailable, OAuthFailure) as exc:
                log.warning("revocation at %s failed for a session (%s): %s", name, reason, exc)
        try:
            await self.psc.end_session(client, s.id_token, s.psc_refresh_token)
        except OAuthFailure as exc:
            log.warning("PSC end-session refused (%s): HTTP %d, %s", reason, exc.status, exc)
        except Unavailable as exc:
            log.warning("PSC end-session failed (%s): %s", reason, exc)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.sessions.sweep_interval)
            with contextlib.suppress(Exception):
                await self.sweep()

    async def sweep(self) -> int:
        """End every expired session (one sweeper at a time across instances)."""
        now = self.clock()
        # Relay contexts whose API token is due are rebuilt on next use anyway: dropping them
        # bounds the cache even for sessions another instance ended.
        for key in [k for k, h in self.hot.items() if h.renew_at < now]:
            del self.hot[key]
        if not await self.store.acquire("sweeper", self.instance, self.cfg.sessions.sweep_interval * 2):
            return 0
        n = 0
        try:
            for sid in await self.store.expired(self.clock(), 200):
                s = await self.store.get(sid)
                if s is None or s.expired(self.clock()):
                    await self.end_session(sid, "expired")
                    n += 1
        finally:
            await self.store.release("sweeper", self.instance)
        return n

    # ------------------------------------------------------------------ tokens
    @contextlib.asynccontextmanager
    async def refresh_lock(self, sid: str) -> AsyncIterator[None]:
        """One refresh at a time per session: an in-process lock (waiters queue without
        polling) plus a lease in the store for other proxy instances."""
        lock = self._locks.get(sid)
        if lock is None:
            lock = self._locks[sid] = asyncio.Lock()
        try:
            async with lock:
                ttl = self.cfg.sessions.refresh_lock_ttl
                deadline = time.monotonic() + ttl
                try:
                    while not await self.store.acquire(f"refresh:{sid}", self.instance, ttl):
                        if time.monotonic() > deadline:
                            raise ProxyError(503, "REFRESH_BUSY", "renouvellement des jetons en cours, réessayez")
                        await asyncio.sleep(0.02)
                except StoreUnavailable as exc:
                    raise ProxyError(503, "SESSION_STORE_UNAVAILABLE", "stockage des sessions indisponible") from exc
                try:
                    yield
                finally:
                    with contextlib.suppress(StoreUnavailable):
                        await self.store.release(f"refresh:{sid}", self.instance)
        finally:
            if not lock.locked() and self._locks.get(sid) is lock:
                del self._locks[sid]

    async def hot_entry(self, session: Session, service: str, now: float, refused: str | None = None) -> Hot:
        """The cached relay context, renewing the API token (and the PSC token) when due.

        ``refused`` is a token the upstream just rejected: it is never reused."""
        svc = self.cfg.services[service]
        margin = self.cfg.sessions.api_token_margin
        tok = session.api_tokens.get(service)
        if tok is None or not tok.usable(now, margin) or tok.access_token == refused:
            tok = await self._renew_api_token(session.id, service, svc, now, refused)
        return self.make_hot(session, service, svc, tok)

    def pool_for(self, client: LpsClient, base_url: str) -> Pool:
        """One keep-alive pool per (origin, outbound certificate): the certificate of the
        session's clientId is the TLS identity the service sees."""
        u = urlsplit(base_url)
        host, port = u.hostname or "127.0.0.1", u.port or 443
        identity = identity_of(client)
        key = (host, port, identity.key_id if identity else "-")
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = Pool(
                host,
                port,
                self.factory.ssl_context(identity),
                host,
                limit=self.cfg.outbound.pool_size,
                connect_timeout=self.cfg.outbound.connect_timeout,
                outbox=self.outbox,
            )
        return pool

    def make_hot(self, session: Session, service: str, svc: ServiceSection, tok: ApiToken) -> Hot:
        client = self.clients[session.client_id]
        u = urlsplit(svc.base_url)
        hot = Hot(
            token=tok.access_token,
            renew_at=tok.expires_at - self.cfg.sessions.api_token_margin,
            base_path=u.path.rstrip("/"),
            head_suffix=f"host: {u.netloc}\r\nauthorization: Bearer {tok.access_token}\r\n".encode("latin-1"),
            pool=self.pool_for(client, svc.base_url),
            timeout=svc.timeout or self.cfg.outbound.upstream_timeout,
            service=service,
            forward=self.forward[service],
        )
        self.hot[(session.id, service)] = hot
        return hot

    async def _renew_api_token(
        self, sid: str, service: str, svc: ServiceSection, now: float, refused: str | None = None
    ) -> ApiToken:
        async with self.refresh_lock(sid):
            now = self.clock()
            try:
                fresh = await self.store.get(sid)
            except StoreUnavailable as exc:
                raise ProxyError(503, "SESSION_STORE_UNAVAILABLE", "stockage des sessions indisponible") from exc
            if fresh is None or fresh.expired(now):
                raise ProxyError(401, "SESSION_EXPIRED", "session expirée, reconnectez-vous")
            tok = fresh.api_tokens.get(service)
            if tok is not None and tok.usable(now, self.cfg.sessions.api_token_margin) and tok.access_token != refused:
                return tok  # another request renewed it while we waited
            work = Session.from_dict(fresh.to_dict())
            version = fresh.version
            client = self.clients[work.client_id]
            if not work.psc_access_usable(now, self.cfg.sessions.psc_token_margin):
                version = await self._refresh_psc(work, client, version, now)
            try:
                try:
                    tok = await self.exchanger.exchange(client, service, svc, work.psc_access_token, self.clock())
                except OAuthFailure as exc:
                    # The AS found the PSC token inactive (expired in flight, or PSC ended it
                    # early): refresh once and exchange again before giving up.
                    # RFC 8693 §2.2.2 answers invalid_request for a bad subject_token.
                    if exc.error not in ("invalid_grant", "invalid_request") or not work.psc_refresh_usable(
                        self.clock()
                    ):
                        raise
                    version = await self._refresh_psc(work, client, version, self.clock())
                    tok = await self.exchanger.exchange(client, service, svc, work.psc_access_token, self.clock())
            except Unavailable as exc:
                self.metrics.refreshes.labels("api_exchange", "unavailable").inc()
                raise ProxyError(
                    504 if exc.timeout else 503, "AS_UNAVAILABLE", f"serveur d'autorisation de {service} indisponible"
                ) from exc
            except OAuthFailure as exc:
                self.metrics.refreshes.labels("api_exchange", "refused").inc()
                raise ProxyError(
                    502, "TOKEN_EXCHANGE_REFUSED", f"échange de jeton refusé par {service}: {exc.error}"
                ) from exc
            self.metrics.refreshes.labels("api_exchange", "ok").inc()
            old = work.api_tokens.get(service)
            work.api_tokens[service] = tok
            await self._save(work, version)
            if old is not None:
                self.spawn(self._revoke_quietly(client, svc, old))
            return tok

    async def _refresh_psc(self, work: Session, client: LpsClient, version: int, now: float) -> int:
        if not work.psc_refresh_usable(now):
            self.metrics.refreshes.labels("psc", "expired").inc()
            self.spawn(self.end_session(work.id, "refresh_expired"))
            raise ProxyError(401, "SESSION_EXPIRED", "session PSC expirée, reconnectez-vous")
        assert work.psc_refresh_token is not None
        try:
            tokens = await self.psc.refresh(client, work.psc_refresh_token)
        except Unavailable as exc:
            self.metrics.refreshes.labels("psc", "unavailable").inc()
            raise ProxyError(503, "PSC_UNAVAILABLE", "Pro Santé Connect est indisponible") from exc
        except OAuthFailure as exc:
            self.metrics.refreshes.labels("psc", "refused").inc()
            self.spawn(self.end_session(work.id, "refresh_refused"))
            raise ProxyError(401, "SESSION_EXPIRED", "session PSC terminée, reconnectez-vous") from exc
        apply_psc_refresh(work, tokens, self.clock())
        self.metrics.refreshes.labels("psc", "ok").inc()
        # Persist the rotated refresh token at once: the old one is now dead at PSC.
        await self._save(work, version)
        return work.version

    async def _save(self, work: Session, version: int) -> None:
        try:
            ok = await self.store.save(work, version)
        except StoreUnavailable as exc:
            raise ProxyError(503, "SESSION_STORE_UNAVAILABLE", "stockage des sessions indisponible") from exc
        if not ok:
            # Deleted meanwhile (disconnect or expiry): the tokens we hold must not outlive it.
            raise ProxyError(401, "SESSION_NOT_FOUND", "session terminée pendant le renouvellement")

    async def _revoke_quietly(self, client: LpsClient, svc: ServiceSection, tok: ApiToken) -> None:
        with contextlib.suppress(Unavailable, OAuthFailure):
            await self.exchanger.revoke(client, svc, tok)

    def drop_api_token(self, sid: str, service: str, token: str) -> None:
        """Forget a cached token the upstream refused, so the next call exchanges again."""
        hot = self.hot.get((sid, service))
        if hot is not None and hot.token == token:
            del self.hot[(sid, service)]


def _connect_error(exc: OAuthFailure) -> tuple[int, str, str]:
    if exc.error == "unknown_user_id":
        return 404, "USER_NOT_FOUND", "identifiant national inconnu de Pro Santé Connect"
    if exc.error == "access_denied":
        return 400, "ACCESS_DENIED", "authentification refusée par l'utilisateur sur e-CPS"
    if exc.error == "expired_token":
        return 400, "AUTHENTICATION_TIMEOUT", "l'utilisateur n'a pas validé l'authentification à temps"
    if exc.error in ("invalid_client", "unauthorized_client"):
        # PSC's own reason (e.g. the missing habilitation in the trust space) is what the
        # editor needs to act on; it describes the client, never the user or a token.
        reason = f" : {exc.description[:500]}" if exc.description else ""
        return 400, "CLIENT_REFUSED", f"Pro Santé Connect refuse ce clientId (identifiants du logiciel){reason}"
    if exc.error == "invalid_id_token":
        return 400, "INVALID_ID_TOKEN", f"jeton d'identité PSC refusé: {exc.description}"
    return 400, "CONNECT_FAILED", f"échec de l'authentification PSC: {exc.error}"
