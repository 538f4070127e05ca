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
clients_app = typer.Typer(help="Clients LPS confiés au proxy pendant qu'il tourne.", no_args_is_help=True)
app.add_typer(clients_app, name="clients")
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
    from .serve import build_server, run

    run(build_server(cfg), [sock])


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
    from confiance.core.config import ConfigError

    from .config import LpsClient, load_clients_file, save_clients_file

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
    if client_id in {c.client_id for c in existing} | {c.client_id for c in _load(config).lps_clients}:
        console.print(f"[red]clientId déjà connu du proxy : {client_id}[/red]")
        raise typer.Exit(2)
    save_clients_file(path, [*existing, client])
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
    from .config import load_clients_file, save_clients_file

    path = _clients_file(config)
    existing = load_clients_file(path)
    kept = [c for c in existing if c.client_id != client_id]
    if len(kept) == len(existing):
        console.print(f"[red]client LPS ajouté inconnu : {client_id}[/red]")
        raise typer.Exit(2)
    save_clients_file(path, kept)
    console.print(f"client LPS {client_id} retiré")
