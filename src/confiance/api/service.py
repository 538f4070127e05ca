"""Assembly: the AS app and the resource-services app around one ``ApiRuntime``, served together.

Both servers run in one process (two HTTPS listeners on one event loop), like an AS and
its resource servers shipped by one vendor. They share, in memory, the AS's public keys
and the revocation list: a token revoked at the AS is refused by the next resource
request, with no polling window and no extra network hop on the resource hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette

from confiance.core.server import ServiceConfig, bind_socket, make_server
from confiance.core.tls import ClientAuth, ServerTLS

from .auth_server import AuthorizationServerApp
from .config import ApiConfig
from .resources import ResourceServerApp
from .runtime import ApiRuntime, build_runtime

__all__ = ["ApiRuntime", "build_apps", "build_runtime", "serve", "server_tls"]

log = logging.getLogger("confiance.api")


def _lifespan(rt: ApiRuntime, owner: bool) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = None
        if owner and rt.trust is not None:
            # first fetch off the loop; a guichet not up yet is retried by the refresh thread
            await asyncio.to_thread(rt.trust.start)
        if owner:

            async def loop() -> None:
                while True:
                    await asyncio.sleep(1.0)
                    try:
                        rt.housekeeping()
                    except Exception:  # one failed round must not stop pruning and log flushing
                        log.exception("housekeeping failed")

            task = asyncio.create_task(loop())
        try:
            yield
        finally:
            if owner and rt.trust is not None:
                rt.trust.stop()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if owner:
                rt.housekeeping()
                await rt.http.aclose()

    return lifespan


def build_apps(rt: ApiRuntime) -> tuple[Starlette, Starlette]:
    """The AS app and the RS app; the AS owns housekeeping (pruning, log flushing)."""
    as_app = AuthorizationServerApp(rt).app
    rs_app = ResourceServerApp(rt).app
    as_app.router.lifespan_context = _lifespan(rt, owner=True)
    rs_app.router.lifespan_context = _lifespan(rt, owner=False)
    rs_app.state.rt = rt
    as_app.state.rt = rt
    return as_app, rs_app


def server_tls(cfg: ApiConfig) -> ServerTLS:
    # OPTIONAL at the TLS layer so health probes connect without a certificate; every other
    # route refuses a request without one (invalid_client / 401).
    return ServerTLS(
        cert=cfg.tls.cert,
        key=cfg.tls.key,
        ca_bundle=cfg.tls.ca_bundle,
        crl=cfg.tls.crl,
        client_auth=ClientAuth.OPTIONAL,
    )


def serve(cfg: ApiConfig) -> None:
    """Run both servers in the foreground until SIGINT/SIGTERM."""
    import uvloop

    rt = build_runtime(cfg)
    as_app, rs_app = build_apps(rt)
    tls = server_tls(cfg)
    a, r = cfg.authorization_server, cfg.resource_server
    as_sock = bind_socket(a.host, a.port)
    rs_sock = bind_socket(r.host, r.port)
    rt.set_urls(f"https://{a.host}:{as_sock.getsockname()[1]}", f"https://{r.host}:{rs_sock.getsockname()[1]}")
    as_srv = make_server(as_app, ServiceConfig(host=a.host, port=a.port, tls=tls))
    rs_srv = make_server(rs_app, ServiceConfig(host=r.host, port=r.port, tls=tls))

    async def main() -> None:
        rs_task = asyncio.create_task(rs_srv.serve(sockets=[rs_sock]))
        as_task = asyncio.create_task(as_srv.serve(sockets=[as_sock]))
        done, _ = await asyncio.wait({as_task, rs_task}, return_when=asyncio.FIRST_COMPLETED)
        # One server stopping (signal or failure) stops the other.
        as_srv.should_exit = rs_srv.should_exit = True
        await asyncio.gather(as_task, rs_task, return_exceptions=True)
        for t in done:
            t.result()

    log.info("API AS on %s, resource services on %s", rt.as_url, rt.rs_url)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
