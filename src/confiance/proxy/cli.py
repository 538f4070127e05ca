"""`confiance proxy …`: serve the Proxy e-Santé, check its config, verify its traces."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from confiance.core.config import ConfigError

app = typer.Typer(help="Proxy e-Santé : connexion PSC, relais vers les API, traces.", no_args_is_help=True)
traces_app = typer.Typer(help="Traces chaînées du proxy.", no_args_is_help=True)
app.add_typer(traces_app, name="traces")
console = Console()

ConfigOpt = typer.Option(..., "--config", "-c", help="Fichier TOML du proxy.")


def _load(path: Path):  # type: ignore[no-untyped-def]
    from .config import load

    try:
        return load(path)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def serve(config: Path = ConfigOpt) -> None:
    """Démarre le proxy (HTTPS) selon le fichier de configuration."""
    from confiance.core import logs
    from confiance.core.server import bind_socket

    cfg = _load(config)
    logs.setup("INFO" if cfg.server.log_level == "debug" else "WARNING")
    sock = bind_socket(cfg.server.host, cfg.server.port)
    if cfg.server.workers == 1:
        _serve_one(cfg, sock)
        return
    raise typer.Exit(_supervise(cfg, sock))


def _serve_one(cfg: Any, sock: Any) -> None:
    """One process: build the app *here* (after any fork) so no loop, thread or DB handle is shared."""
    from confiance.core.server import ServiceConfig, make_server
    from confiance.core.tls import ClientAuth, ServerTLS

    from .app import ProxyApp
    from .core import ProxyCore

    s = cfg.server
    tls = ServerTLS(cert=s.cert, key=s.key, ca_bundle=s.ca_bundle, crl=s.crl, client_auth=ClientAuth(s.client_auth))
    server = make_server(
        ProxyApp(ProxyCore(cfg)), ServiceConfig(host=s.host, port=s.port, tls=tls, log_level=s.log_level)
    )
    # uvicorn would otherwise rewrite the peer address from X-Forwarded-For sent by 127.0.0.1;
    # the proxy applies its own `trusted_proxies` rule (domain.client_address) instead.
    server.config.proxy_headers = False
    server.run(sockets=[sock])


def _supervise(cfg: Any, sock: Any) -> int:
    """N forked workers on one listening socket; SIGTERM/SIGINT are forwarded; if a worker
    dies the others are stopped and the exit code says so (the caller restarts the service)."""
    import os
    import signal

    # Create the schemas once, before forking: workers racing on CREATE TABLE would fail.
    from .sessions import SqliteStore
    from .traces import TraceStore

    TraceStore(cfg.traces.url).close()
    if cfg.sessions.store == "sqlite":
        SqliteStore(cfg.sessions.url).engine.dispose()
    children: list[int] = []
    for _ in range(cfg.server.workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                _serve_one(cfg, sock)
            except BaseException:
                code = 1
            os._exit(code)
        children.append(pid)
    stopping = False

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    alive = set(children)
    while alive:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        alive.discard(pid)
        if not stopping:
            console.print(f"[red]worker {pid} arrêté (statut {status}) : arrêt des autres[/red]")
            code = 1
            forward(signal.SIGTERM, None)
    return code


@app.command("check-config")
def check_config(config: Path = ConfigOpt) -> None:
    """Valide la configuration sans démarrer."""
    cfg = _load(config)
    console.print(
        f"configuration valide : {len(cfg.lps_clients)} client(s) LPS, services : {', '.join(cfg.services) or 'aucun'}"
    )


@traces_app.command("verify")
def verify(
    config: Path | None = typer.Option(None, "--config", "-c", help="Fichier TOML du proxy."),
    url: str | None = typer.Option(None, "--url", help="URL de la base des traces (sinon celle du fichier)."),
) -> None:
    """Vérifie la chaîne d'empreintes des traces (aucune ligne modifiée, insérée ou supprimée)."""
    from .traces import TraceStore

    if url is None:
        if config is None:
            console.print("[red]--config ou --url requis[/red]")
            raise typer.Exit(2)
        url = _load(config).traces.url
    store = TraceStore(url)
    try:
        check = store.verify()
    finally:
        store.close()
    if check.ok:
        console.print(f"[green]chaîne intègre[/green] : {check.checked} trace(s) vérifiée(s)")
        return
    console.print(f"[red]chaîne rompue[/red] à la trace n°{check.first_bad} : {check.reason}")
    raise typer.Exit(1)
