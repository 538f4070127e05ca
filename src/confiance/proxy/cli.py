"""`confiance proxy …`: serve the Proxy e-Santé, check its config, verify its traces."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from confiance.core.config import ConfigError

from . import cli_traces as traces_cli

app = typer.Typer(help="Proxy e-Santé : connexion PSC, relais vers les API, traces.", no_args_is_help=True)
app.add_typer(traces_cli.app, name="traces")  # verify, export, public-key: cli_traces.py
clients_app = typer.Typer(help="Clients LPS confiés au proxy pendant qu'il tourne.", no_args_is_help=True)
app.add_typer(clients_app, name="clients")
console = Console()

ConfigOpt = typer.Option(..., "--config", "-c", help="Fichier TOML du proxy.")


def _fail(message: str, code: int = 2) -> typer.Exit:
    """An error for the operator: on stderr, as written (no markup, no wrapping), no traceback."""
    typer.echo(message, err=True)
    return typer.Exit(code)


def _load(path: Path, check: bool = True) -> Any:
    from confiance.core.cli_config import load_cli_config

    from .config import load

    return load_cli_config(path, lambda p: load(p, check=check))


@app.command()
def serve(config: Path = ConfigOpt) -> None:
    """Démarre le proxy (HTTPS) selon le fichier de configuration.

    Vérifie d'abord tout ce que `check-config` vérifie : une erreur arrête le démarrage
    (un écran, sans trace d'appel), un avertissement est journalisé."""
    import logging
    import os

    from confiance.core import logs

    from . import checkconfig, startup

    # Whatever the proxy creates (trace and session databases with national ids, metrics
    # snapshots) is readable by its own user only.
    os.umask(0o077)
    cfg = _load(config, check=False)
    logs.setup(cfg.server.log_level, cfg.server.log_format)
    problems = checkconfig.check(cfg)
    for p in problems:
        if p.severity == "warning":
            logging.getLogger("confiance.proxy").warning("configuration: %s", p, extra={"key": p.key})
    if checkconfig.errors(problems):
        raise _fail(
            f"confiance proxy serve : démarrage impossible ({config})\n"
            + checkconfig.report(checkconfig.errors(problems))
        )
    admin = cfg.server.admin_address()  # /readyz, /metrics apart from the LPS port
    try:
        sock = startup.bind(cfg.server.host, cfg.server.port)
        admin_socks = [startup.bind(admin[0], admin[1], "server.admin_listen")] if admin else []
    except startup.StartupError as exc:
        raise _fail(f"confiance proxy serve : démarrage impossible ({config})\n  - erreur {exc}") from None
    startup.log_started(cfg, [sock], admin_socks)
    if cfg.server.workers == 1:
        raise typer.Exit(_serve_one(cfg, sock, admin_socks, config))
    raise typer.Exit(_supervise(cfg, sock, admin_socks, config))


def _serve_one(cfg: Any, sock: Any, admin_socks: list[Any], config: Path) -> int:
    """One process: build the app *here* (after any fork) so no loop, thread or DB handle
    is shared. A failure is one screen on stderr (known causes) or one log line."""
    import logging

    from . import startup
    from .reload import build_reloadable
    from .serve import run

    try:
        server, reloader = build_reloadable(cfg, config)
        run(server, [sock], admin_socks, on_started=reloader.install)
    except Exception as exc:
        why = startup.explain(exc, cfg)
        if why is None:
            logging.getLogger("confiance.proxy").exception("proxy stopped on an unexpected error")
        else:
            typer.echo(f"confiance proxy serve : arrêt ({config})\n  - erreur {why}", err=True)
        return 1
    return 0


def _supervise(cfg: Any, sock: Any, admin_socks: list[Any], config: Path) -> int:
    """N forked workers on one listening socket; SIGTERM/SIGINT/SIGHUP are forwarded; if a
    worker dies the others are stopped and the exit code says so (the caller restarts the
    service). Metrics: a private directory where each worker shares its snapshot
    (metrics.py), removed at exit."""
    import os
    import shutil
    import signal
    import tempfile

    from . import startup
    from .checkpoint import ensure_key, settings_for
    from .metrics import SHARE_DIR_ENV

    # Create the schemas once, before forking: workers racing on CREATE TABLE would fail.
    from .sessions import SqliteStore
    from .traces import TraceStore

    try:
        TraceStore(cfg.traces.url).close()
        ensure_key(settings_for(cfg.traces))  # one checkpoint key, not one per worker
        if cfg.sessions.store == "sqlite":
            SqliteStore(cfg.sessions.url).engine.dispose()
    except Exception as exc:
        why = startup.explain(exc, cfg)
        if why is None:
            raise
        typer.echo(f"confiance proxy serve : démarrage impossible ({config})\n  - erreur {why}", err=True)
        return 2
    share = tempfile.mkdtemp(prefix="confiance-proxy-metrics-")  # 0700
    os.environ[SHARE_DIR_ENV] = share
    children: list[int] = []
    for _ in range(cfg.server.workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                code = _serve_one(cfg, sock, admin_socks, config)
            finally:
                os._exit(code)
        children.append(pid)
    # The workers hold the sockets; the supervisor's copy would keep the kernel accepting
    # connections after every worker stopped listening (SIGTERM: "stop accepting at once").
    for s in [sock, *admin_socks]:
        s.close()
    stopping = False

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        if sig != signal.SIGHUP:
            stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    code = 0
    alive = set(children)
    try:
        while alive:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            alive.discard(pid)
            if not stopping:
                typer.echo(f"worker {pid} arrêté (statut {status}) : arrêt des autres", err=True)
                code = 1
                forward(signal.SIGTERM, None)
    finally:
        shutil.rmtree(share, ignore_errors=True)
    return code


@app.command("check-config")
def check_config(
    config: Path = ConfigOpt,
    offline: bool = typer.Option(False, "--offline", help="Ne pas contacter les bases (sessions, traces)."),
) -> None:
    """Vérifie tout ce que `serve` utilisera (certificats, clés, chaînes, dates, bases) en une passe."""
    from . import checkconfig

    cfg = _load(config, check=False)
    problems = checkconfig.check(cfg, stores=not offline, verify_witness=True)
    errs = checkconfig.errors(problems)
    if errs:
        raise _fail(f"configuration invalide ({config}) : {len(errs)} erreur(s)\n" + checkconfig.report(problems))
    if problems:
        typer.echo(checkconfig.report(problems), err=True)
    console.print(
        f"configuration valide : {len(cfg.lps_clients)} client(s) LPS, services : {', '.join(cfg.services) or 'aucun'}",
        markup=False,
    )


def _clients_file(config: Path) -> Path:
    path: Path | None = _load(config).lps_clients_file
    if path is None:
        console.print("[red]lps_clients_file absent de la configuration du proxy[/red]")
        raise typer.Exit(2)
    return path


@clients_app.command("add")
def clients_add(
    client_id: str = typer.Option(..., "--client-id", help="clientId PSC du LPS."),
    cert: Path | None = typer.Option(None, "--cert", help="Certificat ORG AUTH_CLI (mTLS)."),
    key: Path | None = typer.Option(None, "--key", help="Clé privée du certificat."),
    secret: str | None = typer.Option(None, "--secret", help="Secret client (niveau Communauté)."),
    as_client_id: str | None = typer.Option(None, "--as-client-id", help="Client_ID_AS (défaut : clientId)."),
    config: Path = ConfigOpt,
) -> None:
    """Confie au proxy les identifiants d'un nouveau LPS ; le proxy en cours le prend en compte."""
    from confiance.core.clients_file import save_clients

    from .config import LpsClient, load_clients_file

    path = _clients_file(config)
    try:
        client = LpsClient(
            client_id=client_id,
            auth="secret" if secret and not cert else "mtls",
            cert=cert.resolve() if cert else None,
            key=key.resolve() if key else None,
            secret=secret,
            as_client_id=as_client_id,
        )
        for p in (client.cert, client.key):
            if p is not None and not p.is_file():
                raise ValueError(f"fichier introuvable : {p}")
        existing = load_clients_file(path)
    except (ValueError, ConfigError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    cfg = _load(config)
    if client_id in {c.client_id for c in existing} | {c.client_id for c in cfg.lps_clients}:
        console.print(f"[red]clientId déjà connu du proxy : {client_id}[/red]")
        raise typer.Exit(2)
    # The checks `serve` and `check-config` apply: a key that does not match its certificate
    # was accepted here, then /connect answered 500.
    import datetime as dt

    from . import checkconfig

    bundle_problems: list[checkconfig.Problem] = []
    bundle = checkconfig.load_bundle(cfg.outbound.ca_bundle, "outbound.ca_bundle", bundle_problems)
    problems = bundle_problems + checkconfig.check_lps_client(client, "--cert/--key", bundle, dt.datetime.now(dt.UTC))
    if checkconfig.errors(problems):
        raise _fail(f"client LPS {client_id} refusé :\n" + checkconfig.report(problems))
    if problems:
        typer.echo(checkconfig.report(problems), err=True)
    save_clients(path, [*existing, client])
    console.print(f"client LPS [bold]{client_id}[/bold] ajouté ({client.auth}) dans {path}")


@clients_app.command("list")
def clients_list(config: Path = ConfigOpt) -> None:
    """Liste les clients LPS (configuration puis ajoutés)."""
    from .config import load_clients_file

    cfg = _load(config)
    extra = load_clients_file(cfg.lps_clients_file) if cfg.lps_clients_file else []
    for c in cfg.lps_clients:
        console.print(f"{c.client_id}\t{c.auth}\tconfiguration")
    for c in extra:
        console.print(f"{c.client_id}\t{c.auth}\tajouté")


@clients_app.command("remove")
def clients_remove(client_id: str = typer.Option(..., "--client-id"), config: Path = ConfigOpt) -> None:
    """Retire un client LPS ajouté (les sessions existantes expirent normalement)."""
    from confiance.core.clients_file import save_clients

    from .config import load_clients_file

    path = _clients_file(config)
    existing = load_clients_file(path)
    kept = [c for c in existing if c.client_id != client_id]
    if len(kept) == len(existing):
        console.print(f"[red]client LPS ajouté inconnu : {client_id}[/red]")
        raise typer.Exit(2)
    save_clients(path, kept)
    console.print(f"client LPS {client_id} retiré")
