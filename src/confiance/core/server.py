"""Serve an ASGI app over HTTPS and hand it the verified client certificate.

uvicorn does not pass the TLS peer certificate to the app. We subclass its httptools
protocol: on connection the peer certificate (already verified by OpenSSL against the
bundle and CRL) is read once, and every request scope of that connection gets it under
``scope["extensions"]["tls"]`` (ASGI TLS extension keys, plus ``client_cert_der``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import ConfianceError
from .tls import ServerTLS, server_context

log = logging.getLogger("confiance.server")


def tls_extension(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension of a connection (None without TLS); read once per connection.

    The peer certificate was already verified by OpenSSL against the bundle and CRL.
    """
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    der = sslobj.getpeercert(binary_form=True)
    return {
        "tls_version": sslobj.version(),
        "cipher_suite": (sslobj.cipher() or (None,))[0],
        "client_cert_der": der,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_error": None,
    }


class TLSExposingProtocol(HttpToolsProtocol):
    """httptools protocol that adds the TLS extension to each request scope."""

    _tls_ext: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._tls_ext = tls_extension(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls_ext is not None:
            self.scope["extensions"] = {"tls": self._tls_ext}  # type: ignore[dict-item]


@dataclass
class ServiceConfig:
    """Where and how one service listens."""

    host: str = "127.0.0.1"
    port: int = 0
    tls: ServerTLS | None = None
    log_level: str = "warning"
    limit_concurrency: int | None = None
    timeout_keep_alive: int = 30


class BindError(ConfianceError, OSError):
    """The listening address cannot be had; the message names ``host:port`` and why."""

    code = "bind_failed"


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before starting so port 0 gives a known port (tests) and failures are immediate.

    A failure is a ``BindError`` naming the address (still an ``OSError``), so a busy port
    is one line at start-up rather than a traceback ending in ``[Errno 98]``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "déjà utilisé" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise BindError(f"impossible d'écouter sur {host}:{port} : {why}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def make_server(app: Any, cfg: ServiceConfig) -> uvicorn.Server:
    kwargs: dict[str, Any] = {}
    if cfg.tls is not None:
        tls = cfg.tls
        kwargs["ssl_context_factory"] = lambda _config, _default: server_context(tls)
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        http=TLSExposingProtocol,
        loop="uvloop",
        lifespan="auto",
        log_level=cfg.log_level,
        access_log=False,
        server_header=False,
        # Never rewrite the peer address from X-Forwarded-For: each service decides whom it
        # trusts (core.clientcert, proxy trusted_proxies); uvicorn's default trusts 127.0.0.1.
        proxy_headers=False,
        date_header=True,
        limit_concurrency=cfg.limit_concurrency,
        timeout_keep_alive=cfg.timeout_keep_alive,
        **kwargs,
    )
    return uvicorn.Server(config)


def serve(app: Any, cfg: ServiceConfig) -> None:
    """Run a service in the foreground until SIGINT/SIGTERM (uvicorn handles both)."""
    sock = bind_socket(cfg.host, cfg.port)
    server = make_server(app, cfg)
    server.run(sockets=[sock])


class ServerThread:
    """A service running in a background thread with its own event loop.

    Tests start real components this way: real sockets, real TLS, no mocks, and a port
    chosen by the kernel so parallel runs never collide.
    """

    def __init__(self, app: Any, cfg: ServiceConfig, server: Any = None) -> None:
        """``server``: anything with uvicorn.Server's ``serve(sockets)``, ``started`` and
        ``should_exit`` (the proxy's own server); by default uvicorn serving ``app``."""
        self.cfg = cfg
        self.sock = bind_socket(cfg.host, cfg.port)
        self.port: int = self.sock.getsockname()[1]
        self.server = server if server is not None else make_server(app, cfg)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"server-{self.port}")

    @property
    def url(self) -> str:
        scheme = "https" if self.cfg.tls else "http"
        return f"{scheme}://{self.cfg.host}:{self.port}"

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=_uvloop_factory()) as runner:
            runner.run(self.server.serve(sockets=[self.sock]))

    def start(self, timeout: float = 15.0) -> ServerThread:
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("server thread died during startup")
            deadline.wait(0.02)
            waited += 0.02
            if waited > timeout:
                raise TimeoutError("server did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _uvloop_factory() -> Any:
    import uvloop

    return uvloop.new_event_loop


@contextlib.contextmanager
def running(app: Any, cfg: ServiceConfig) -> Iterator[ServerThread]:
    with ServerThread(app, cfg) as st:
        yield st
