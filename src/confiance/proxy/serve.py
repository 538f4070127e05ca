"""Wires the proxy: its core, the relay, the ASGI app, and the HTTP/1.1 server.

The server (``http1/``) knows nothing of the proxy; here it gets ``/send/`` as its fast
route (:meth:`Relay.handle`, and :meth:`Relay.admit` to judge a caller from the head
before reading a body), the ASGI app for everything else, ANS's error shape for its
own refusals, the core's start and drain, and the core's outbox (one per process, shared
with the upstream pools: ``http1/outbox.py``).
"""

from __future__ import annotations

import asyncio
import gc
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .access_log import ObservedApp
from .app import ProxyApp
from .core import ProxyCore
from .edge import http_error_answer
from .http1.server import Http1Server
from .relay import SEND_PREFIX, Relay

if TYPE_CHECKING:
    from .config import ProxyConfig


def make_server(core: ProxyCore, tls: ssl.SSLContext | None) -> Http1Server:
    """The proxy's HTTP server over an existing core."""
    relay = Relay(core)
    app = ObservedApp(ProxyApp(core, relay), core.access, core.metrics)  # access lines + route metrics
    return Http1Server(
        app,
        tls,
        core.cfg.server,
        outbox=core.outbox,
        fast_prefix=SEND_PREFIX,
        fast=relay.handle,
        admit=relay.admit,
        render_error=http_error_answer,
        on_start=core.start,
        on_stop=core.stop,
    )


def build_server(cfg: ProxyConfig, store: Any = None, clock: Callable[[], float] | None = None) -> Http1Server:
    """The proxy app and its server, from a validated configuration."""
    from confiance.core.tls import ClientAuth, ServerTLS, server_context

    s = cfg.server
    tls = ServerTLS(cert=s.cert, key=s.key, ca_bundle=s.ca_bundle, crl=s.crl, client_auth=ClientAuth(s.client_auth))
    core = ProxyCore(cfg, store=store) if clock is None else ProxyCore(cfg, store=store, clock=clock)
    return make_server(core, server_context(tls))


GC_GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the relay's back, once the process is set up.

    Why: with CPython's defaults (a collection every 700 new container objects) the
    collector cost the /send hot path ≈ 4 of ≈ 18 µs per request (bench/proxy/hotpath.py:
    ``gc.disable()`` saved as much as this does). A relayed request allocates a dozen
    short-lived tuples and lists that reference counting frees at once; a collection every
    ≈ 50 requests instead scans whatever is alive at that moment (requests in flight, queued
    traces), and the older generations it promotes them to hold every module, class and
    config object loaded at start, which their collections walk again. So: what exists once
    started is frozen (never scanned again), and young collections run every 10,000
    container allocations instead of 700. Cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def run(
    server: Http1Server,
    sockets: list[socket.socket],
    admin_sockets: list[socket.socket] | None = None,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Serve in the foreground on uvloop until SIGINT/SIGTERM (``admin_sockets``: the
    ``server.admin_listen`` listener, for /readyz and /metrics; ``on_started``: e.g. the
    SIGHUP handler of reload.py, installed once listening)."""
    import uvloop

    server.admin_sockets = admin_sockets or []

    def started() -> None:
        tune_gc()  # once the app has started (stores, trace writer, keeper)
        if on_started is not None:
            on_started()

    server.on_started = started
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(server.serve(sockets))
