"""Validation of the PSC access token presented as ``subject_token`` (I/O edge).

Two modes, chosen in configuration:

* ``introspection`` (default): ask PSC (RFC 7662). This is the only mode that sees a PSC
  session ended at PSC (logout, revocation). Answers are cached per token for at most
  ``cache_seconds`` and never beyond the token's ``exp``, which bounds the window in which
  an ended session can still be exchanged and keeps PSC out of the hot path when a proxy
  exchanges one PSC token for several services. Concurrent checks of one token share one
  introspection call.
* ``jwks``: verify the JWT signature with PSC's published keys. No network call per token,
  but a session ended at PSC stays exchangeable until the token expires (≈ 2 min).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any

import aiohttp
import httpx

from confiance.core.http import ClientFactory
from confiance.core.jose import TokenError, verify_jwt
from confiance.core.oauth_errors import InvalidRequestError, OAuthError, TemporarilyUnavailableError
from confiance.core.tls import ClientIdentity

from .config import PscValidation
from .domain import Subject, subject_from_claims

log = logging.getLogger("confiance.api.psc")


class TtlCache:
    """A bounded map whose entries carry their own expiry.

    When full, the oldest insertion goes first (O(1) with OrderedDict): every entry lives at
    most ``cache_seconds``, so the oldest is also about the first to expire, and a flood of
    distinct tokens cannot make each insertion scan the whole cache.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str, now: float) -> Any | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= now:
            self._data.pop(key, None)
            return None
        return item[1]

    def put(self, key: str, value: Any, expires_at: float, now: float) -> None:
        if expires_at <= now:
            return
        self._data.pop(key, None)
        while len(self._data) >= self.max_entries:
            self._data.popitem(last=False)
        self._data[key] = (expires_at, value)

    def prune(self, now: float) -> None:
        for k, (e, _) in list(self._data.items()):
            if e <= now:
                self._data.pop(k, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class PscTokenChecker:
    """Turns a PSC access token into a :class:`Subject` or an OAuth error."""

    def __init__(self, cfg: PscValidation, clients: ClientFactory) -> None:
        self.cfg = cfg
        self.clients = clients
        self.identity = (
            ClientIdentity(cfg.client_cert, cfg.client_key) if cfg.client_cert is not None else ClientIdentity()
        )
        self.cache = TtlCache(cfg.cache_max_entries)
        self._inflight: dict[str, asyncio.Future[Subject | OAuthError]] = {}
        self._jwks: dict[str, Any] | None = None
        self._jwks_fetched = 0.0
        self.introspections = 0  # calls made to PSC (tests and metrics)
        self._registered = cfg.sandbox_admin_url is None
        self._register_lock = asyncio.Lock()

    async def check(self, token: str) -> Subject:
        now = time.time()
        if self.cfg.mode == "jwks":
            return await self._check_jwt(token, now)
        key = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        cached = self.cache.get(key, now)
        if cached is None:
            task = self._inflight.get(key)
            if task is None:
                # One task per token, awaited through shield(): a caller that goes away
                # (client disconnect) does not cancel the PSC call the others wait for.
                task = asyncio.ensure_future(self._introspect_result(token, key))
                self._inflight[key] = task
                task.add_done_callback(functools.partial(self._done, key))
            cached = await asyncio.shield(task)
        if isinstance(cached, OAuthError):
            raise cached
        assert isinstance(cached, Subject)
        if cached.exp <= now:
            raise InvalidRequestError("subject_token expiré")
        return cached

    def _done(self, key: str, _task: asyncio.Future[Subject | OAuthError]) -> None:
        self._inflight.pop(key, None)

    async def _introspect_result(self, token: str, key: str) -> Subject | OAuthError:
        claims = await self._introspect(token)
        now = time.time()
        limit = now + self.cfg.cache_seconds
        try:
            subject = subject_from_claims(claims, self.cfg.issuer, now)
        except OAuthError as exc:
            # A refused token never becomes acceptable: caching the refusal protects PSC
            # from being used as an amplifier by a client replaying garbage.
            self.cache.put(key, exc, limit, now)
            return exc
        self.cache.put(key, subject, min(limit, subject.exp), now)
        return subject

    async def _ensure_registered(self) -> None:
        """Sandbox only: create our introspection client at PSC (409 = already there)."""
        if self._registered:
            return
        async with self._register_lock:
            await self._register()

    async def _register(self) -> None:
        if not self._registered:
            cfg = self.cfg
            body: dict[str, Any] = {"client_id": cfg.client_id, "name": "Serveur d'autorisation API PSC"}
            if cfg.client_secret is not None:
                body["secret"] = cfg.client_secret
            if cfg.client_dn is not None:
                body["tls_client_auth_subject_dn"] = cfg.client_dn
                body["espace_de_confiance"] = cfg.client_secret is None
            client = self.clients.httpx_async(self.identity)
            try:
                resp = await client.post(
                    f"{cfg.sandbox_admin_url}/clients",
                    json=body,
                    headers={"Authorization": f"Bearer {cfg.sandbox_admin_token}"},
                    timeout=cfg.timeout_seconds,
                )
            except httpx.HTTPError as exc:
                raise TemporarilyUnavailableError("bac à sable PSC injoignable") from exc
            if resp.status_code not in (201, 409):
                log.warning("PSC sandbox client registration answered %s", resp.status_code)
                raise TemporarilyUnavailableError("enregistrement auprès du bac à sable PSC refusé")
            self._registered = True

    async def _introspect(self, token: str) -> dict[str, Any]:
        await self._ensure_registered()
        form = {"token": token, "token_type_hint": "access_token"}
        auth: tuple[str, str] | None = None
        if self.cfg.client_secret is not None and self.cfg.client_id is not None:
            auth = (self.cfg.client_id, self.cfg.client_secret)
        elif self.cfg.client_id is not None:
            form["client_id"] = self.cfg.client_id
        # aiohttp, not httpx: with the cache off or cold this call is on the exchange's hot
        # path, and httpx costs several times more CPU per request here (see DESIGN.md).
        session = self.clients.aiohttp(self.identity)
        self.introspections += 1
        try:
            async with session.post(
                self.cfg.introspection_url,
                data=form,
                auth=aiohttp.BasicAuth(*auth) if auth else None,
                timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_seconds),
            ) as resp:
                status = resp.status
                raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("PSC introspection unreachable: %s", type(exc).__name__)
            raise TemporarilyUnavailableError("Pro Santé Connect injoignable (introspection)") from exc
        if status != 200:
            log.warning("PSC introspection answered %s", status)
            raise TemporarilyUnavailableError(f"introspection PSC en erreur ({status})")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise TemporarilyUnavailableError("réponse d'introspection PSC illisible") from exc
        if not isinstance(data, dict):
            raise TemporarilyUnavailableError("réponse d'introspection PSC illisible")
        return data

    async def _keys(self, refresh: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        if self._jwks is None or (refresh and now - self._jwks_fetched > 10):
            client = self.clients.httpx_async(self.identity)
            try:
                resp = await client.get(self.cfg.jwks_url, timeout=self.cfg.timeout_seconds)
                resp.raise_for_status()
                jwks = resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                if self._jwks is None:
                    raise TemporarilyUnavailableError("JWKS de Pro Santé Connect injoignable") from exc
                return self._jwks
            self._jwks = jwks
            self._jwks_fetched = now
        return self._jwks

    async def _check_jwt(self, token: str, now: float) -> Subject:
        keys = await self._keys()
        for attempt in (0, 1):
            try:
                claims = verify_jwt(token, keys, issuer=self.cfg.issuer, now=now)
                break
            except TokenError as exc:
                if attempt == 0 and "kid" in str(exc):
                    keys = await self._keys(refresh=True)  # PSC may have rotated its keys
                    continue
                raise InvalidRequestError(f"subject_token refusé : {exc}") from exc
        return subject_from_claims(claims, self.cfg.issuer, now)
