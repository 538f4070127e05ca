"""SIGHUP: reload the server certificate, the LPS credentials and the client list, without
dropping a connection.

Why: certificates are rotated (IGC-Santé certificates last a few years, test ones days)
and LPS are onboarded while professionals are connected; a restart would cut every
keep-alive connection and, with the in-memory store, every session. What SIGHUP does:

* re-reads the configuration file; if it is invalid, or a new certificate or key fails
  the checks of ``check-config``, the reload is refused (logged) and everything in use is
  kept;
* the server certificate and key: new TLS handshakes use them (the SNI callback, run for
  every ClientHello, hands the handshake the current context); connections already open
  keep theirs;
* LPS credentials: the ``lps_clients`` of the file replace the old ones, the onboarded
  file is re-read, and outbound connections and TLS contexts are dropped so the next
  request to PSC, an AS or a service presents the certificate now on disk (/send
  requests in flight finish on the connection they have; a call to PSC or an AS in flight
  at that instant may fail and is answered as such).

Other settings (ports, stores, services, limits) need a restart; a reload says so when
they changed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confiance.core.tls import ClientAuth, ServerTLS, server_context

from . import checkconfig
from .config import ProxyConfig, load

if TYPE_CHECKING:
    from .core import ProxyCore
    from .http1.server import Http1Server

log = logging.getLogger("confiance.proxy.reload")


def _server_tls(cfg: ProxyConfig) -> ServerTLS:
    s = cfg.server
    return ServerTLS(cert=s.cert, key=s.key, ca_bundle=s.ca_bundle, crl=s.crl, client_auth=ClientAuth(s.client_auth))


class ReloadableTLS:
    """The context the listening socket was created with, whose SNI callback hands each new
    handshake the context in force (swapped by :meth:`reload`)."""

    def __init__(self, tls: ServerTLS) -> None:
        self.current = server_context(tls)
        self.context = server_context(tls)
        self.context.sni_callback = self._on_hello

    def _on_hello(self, sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        ctx = self.current
        sslobj.context = ctx
        inner = ctx.sni_callback  # core.tls: follows the CRL file when clients authenticate
        if inner is not None:
            inner(sslobj, server_name or "", ctx)

    def reload(self, tls: ServerTLS) -> None:
        self.current = server_context(tls)  # raises on a bad pair: the old context stays


class Reloader:
    def __init__(self, config_path: Path, core: ProxyCore, tls: ReloadableTLS) -> None:
        self.path = config_path
        self.core = core
        self.tls = tls
        self.reloads = 0  # successful reloads (tests wait on it)
        self._running: asyncio.Task[bool] | None = None

    def install(self) -> None:
        """Handle SIGHUP on the running loop (main thread only, as signals are)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._on_signal)

    def _on_signal(self) -> None:
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self.reload(), name="sighup-reload")

    async def reload(self) -> bool:
        """Apply the file as it is now; False (and nothing changed) if it cannot be used."""
        try:
            cfg = await asyncio.to_thread(load, self.path, False)
        except Exception as exc:
            log.error("reload refused: configuration unusable", extra={"config": str(self.path), "error": str(exc)})
            return False
        problems = await asyncio.to_thread(checkconfig.check, cfg, checkconfig.utc_now, False)
        errs = checkconfig.errors(problems)
        if errs:
            log.error(
                "reload refused: %d problem(s), previous certificates and clients kept",
                len(errs),
                extra={"config": str(self.path), "problems": [str(p) for p in errs]},
            )
            return False
        try:
            self.tls.reload(_server_tls(cfg))
        except (ssl.SSLError, OSError) as exc:
            log.error("reload refused: server certificate unusable", extra={"error": str(exc)})
            return False
        old = self.core.cfg
        restart = [
            name
            for name in ("outbound", "psc", "services", "sessions", "traces")
            if getattr(old, name) != getattr(cfg, name)
        ]
        if (old.server.host, old.server.port, old.server.workers) != (
            cfg.server.host,
            cfg.server.port,
            cfg.server.workers,
        ):
            restart.append("server (host/port/workers)")
        old.server.cert, old.server.key = cfg.server.cert, cfg.server.key
        old.lps_clients_file = cfg.lps_clients_file
        await self.core.reload_clients(cfg.lps_clients)
        self.reloads += 1
        log.info(
            "reloaded: server certificate, LPS credentials and clients",
            extra={
                "server_cert": str(cfg.server.cert),
                "server_cert_not_after": _not_after(cfg.server.cert),
                "lps_clients": sorted(self.core.clients),
                "needs_restart": restart,
            },
        )
        return True


def _not_after(path: Path) -> str | None:
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.isoformat()
    except (OSError, ValueError):
        return None


def build_reloadable(cfg: ProxyConfig, config_path: Path, store: Any = None) -> tuple[Http1Server, Reloader]:
    """The proxy's server as ``serve.build_server`` makes it, with a TLS context and a
    client list that SIGHUP reloads."""
    from .core import ProxyCore
    from .serve import make_server

    tls = ReloadableTLS(_server_tls(cfg))
    core = ProxyCore(cfg, store=store)
    return make_server(core, tls.context), Reloader(config_path, core, tls)
