"""Outbound HTTP: one pooled client per TLS identity.

The proxy presents a different certificate per LPS clientId, and TLS identity is fixed per
connection, so pools are keyed by identity. aiohttp serves the hot path (measured ≈ 13×
httpx for a relay here, see DESIGN.md); httpx serves the CLI, tests and low-rate calls.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

from .tls import ClientIdentity, client_context


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    total: float = 30.0


@dataclass
class ClientFactory:
    """Caches SSL contexts and clients per identity; close() releases every pool."""

    ca_bundle: Path | None
    timeouts: Timeouts = field(default_factory=Timeouts)
    pool_size: int = 100
    _contexts: dict[str, ssl.SSLContext] = field(default_factory=dict)
    _aiohttp: dict[str, aiohttp.ClientSession] = field(default_factory=dict)
    _httpx_async: dict[str, httpx.AsyncClient] = field(default_factory=dict)
    _httpx_sync: dict[str, httpx.Client] = field(default_factory=dict)

    def ssl_context(self, identity: ClientIdentity | None = None) -> ssl.SSLContext:
        key = identity.key_id if identity else "-"
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = client_context(self.ca_bundle, identity)
            self._contexts[key] = ctx
        return ctx

    def aiohttp(self, identity: ClientIdentity | None = None) -> aiohttp.ClientSession:
        """A pooled aiohttp session; must be called from within the running event loop."""
        key = identity.key_id if identity else "-"
        session = self._aiohttp.get(key)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self.ssl_context(identity),
                limit=self.pool_size,
                ttl_dns_cache=300,
                enable_cleanup_closed=True,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeouts.total, connect=self.timeouts.connect),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
            self._aiohttp[key] = session
        return session

    def httpx_async(self, identity: ClientIdentity | None = None) -> httpx.AsyncClient:
        key = identity.key_id if identity else "-"
        client = self._httpx_async.get(key)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(
                verify=self.ssl_context(identity),
                timeout=httpx.Timeout(self.timeouts.total, connect=self.timeouts.connect),
                limits=httpx.Limits(max_connections=self.pool_size),
            )
            self._httpx_async[key] = client
        return client

    def httpx_sync(self, identity: ClientIdentity | None = None) -> httpx.Client:
        key = identity.key_id if identity else "-"
        client = self._httpx_sync.get(key)
        if client is None or client.is_closed:
            client = httpx.Client(
                verify=self.ssl_context(identity),
                timeout=httpx.Timeout(self.timeouts.total, connect=self.timeouts.connect),
            )
            self._httpx_sync[key] = client
        return client

    async def reload(self) -> None:
        """Forget every client and TLS context: certificate files are read again on next use
        (the proxy's SIGHUP). Calls in flight on these clients may fail."""
        await self.aclose()
        self._contexts.clear()

    async def aclose(self) -> None:
        await asyncio.gather(*(s.close() for s in self._aiohttp.values()), return_exceptions=True)
        await asyncio.gather(*(c.aclose() for c in self._httpx_async.values()), return_exceptions=True)
        for c in self._httpx_sync.values():
            c.close()
        self._aiohttp.clear()
        self._httpx_async.clear()
        self._httpx_sync.clear()
