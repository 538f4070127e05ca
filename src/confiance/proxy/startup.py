"""Start-up of ``confiance proxy serve``: the listening socket, the start-up line, and
failures explained on one screen.

Why: an operator starting the proxy on a busy port, or with PostgreSQL down, got a
40-line traceback; what they need is the key, file, URL or ``host:port`` to fix. Errors
seen before serving are :class:`StartupError` (message only); anything unexpected is
logged as one line (JSON keeps the traceback on it) and the exit code says so.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
from typing import Any

from confiance import __version__
from confiance.core.logs import redact_url

from .config import ProxyConfig

log = logging.getLogger("confiance.proxy")


class StartupError(Exception):
    """A start-up failure whose message says what to fix (no traceback shown)."""


_BIND_REASONS = {
    errno.EADDRINUSE: "port déjà utilisé par un autre programme",
    errno.EACCES: "permission refusée (port < 1024 sans privilège ?)",
    errno.EADDRNOTAVAIL: "adresse absente de cette machine",
}


def bind(host: str, port: int, key: str = "server.host/server.port") -> socket.socket:
    """The listening socket, not inherited by child processes.

    Why not inheritable: the trace keeper (a child process) would otherwise hold the
    listening socket open after the proxy closed it on SIGTERM, so new connections were
    still accepted by the kernel, then hung and were reset. Forked workers share it anyway
    (fork copies every descriptor)."""
    from confiance.core.server import bind_socket

    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        reason = _BIND_REASONS.get(exc.errno or 0, exc.strerror or str(exc))
        raise StartupError(f"{key} : impossible d'écouter sur {host}:{port} ({reason})") from None
    sock.set_inheritable(False)
    return sock


def addresses(sockets: list[socket.socket]) -> list[str]:
    out = []
    for s in sockets:
        host, port = s.getsockname()[:2]
        out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return out


def started_fields(
    cfg: ProxyConfig, sockets: list[socket.socket], admin_sockets: list[socket.socket] | None = None
) -> dict[str, Any]:
    """What the start-up line says: enough to tell, from the logs alone, what is running."""
    s = cfg.sessions
    return {
        "version": __version__,
        "proxy_id": cfg.server.proxy_id,
        "listen": addresses(sockets),
        "admin_listen": addresses(admin_sockets or []),
        "tls_client_auth": cfg.server.client_auth,
        "workers": cfg.server.workers,
        "pid": os.getpid(),
        "session_store": s.store if not s.url else f"{s.store} {redact_url(s.url)}",
        "trace_store": redact_url(cfg.traces.url),
        "trace_writer": cfg.traces.writer,
        "services": sorted(cfg.services),
        "lps_clients": len(cfg.lps_clients),
        "trusted_proxies": cfg.server.trusted_proxies,
    }


def log_started(
    cfg: ProxyConfig, sockets: list[socket.socket], admin_sockets: list[socket.socket] | None = None
) -> None:
    fields = started_fields(cfg, sockets, admin_sockets)
    log.info("proxy starting: version %s listening on %s", __version__, ", ".join(fields["listen"]), extra=fields)


def explain(exc: BaseException, cfg: ProxyConfig) -> str | None:
    """A one-screen explanation of a failure while building the proxy, or None."""
    if isinstance(exc, StartupError):
        return str(exc)
    if isinstance(exc, ssl.SSLError):
        return f"server.cert/server.key : {cfg.server.cert} ou {cfg.server.key} inutilisable ({exc.reason or exc})"
    try:
        import sqlalchemy as sa

        if isinstance(exc, sa.exc.SQLAlchemyError):
            orig = getattr(exc, "orig", None) or exc
            first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
            return f"traces.url / sessions.url : base injoignable à {redact_url(cfg.traces.url)} ({first})"
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        pass
    if isinstance(exc, OSError) and exc.filename:
        return f"fichier {exc.filename} : {exc.strerror}"
    return None
