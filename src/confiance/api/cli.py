"""`confiance api …`: run the API Pro Santé Connectée and administer its clients."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from cryptography import x509
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from confiance.core import logs
from confiance.core.cli_config import EXIT_FAILURE, fail, load_cli_config
from confiance.core.config import ConfigError, format_validation_error
from confiance.core.errors import ConfianceError

from .audit import AccessLog
from .config import SERVICE_NAMES, ApiClient, ApiConfig, clients_file, merge_clients
from .domain import generate_secret

app = typer.Typer(
    help="API Pro Santé Connectée : serveur d'autorisation (échange de jetons) et services.", no_args_is_help=True
)
clients_app = typer.Typer(help="Clients de l'API (Client_ID_AS ↔ DN du certificat ↔ scopes).", no_args_is_help=True)
log_app = typer.Typer(help="Journal d'accès des services.", no_args_is_help=True)
app.add_typer(clients_app, name="clients")
app.add_typer(log_app, name="log")
console = Console()

ConfigOpt = typer.Option(..., "--config", "-c", help="Fichier de configuration TOML.")


def _load(config: Path) -> ApiConfig:
    return load_cli_config(config, ApiConfig)


@app.command()
def serve(config: Path = ConfigOpt, log_level: str = typer.Option("info", "--log-level")) -> None:
    """Démarre le serveur d'autorisation et les services (deux ports HTTPS)."""
    from .service import serve as run

    cfg = _load(config)
    logs.setup(log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per PSC call is noise
    try:
        run(cfg)
    except ConfigError as exc:  # a file the config names cannot be used (keys, clients, access log)
        fail(str(exc))
    except ConfianceError as exc:  # BindError: the address is taken
        fail(str(exc), EXIT_FAILURE)


def _read_clients(path: Path) -> list[ApiClient]:
    try:
        return clients_file(path).load()
    except ConfigError as exc:
        fail(str(exc))


def _clients_file(cfg: ApiConfig) -> Path:
    path = cfg.authorization_server.clients_file
    if path is None:
        fail("authorization_server.clients_file absent de la configuration")
    return path


@clients_app.command("list")
def clients_list(config: Path = ConfigOpt) -> None:
    """Liste les clients enregistrés (configuration + fichier de clients)."""
    cfg = _load(config)
    path = cfg.authorization_server.clients_file
    extra = _read_clients(path) if path else []
    table = Table("client_id", "DN", "scopes", "niveau", "origine")
    registered = {c.client_id for c in extra}
    for c in merge_clients(cfg.clients, extra):
        origin = "fichier" if c.client_id in registered else "configuration"
        table.add_row(c.client_id, c.dn, " ".join(c.scopes), c.level, origin)
    console.print(table)


@clients_app.command("add")
def clients_add(
    client_id: str = typer.Option(..., "--client-id", help="Client_ID_AS."),
    dn: str | None = typer.Option(None, "--dn", help="DN du certificat (RFC 4514)."),
    cert: Path | None = typer.Option(None, "--cert", help="…ou le certificat PEM dont prendre le DN."),
    scope: list[str] = typer.Option(list(SERVICE_NAMES), "--scope", help="Scope autorisé (répétable)."),
    sandbox: bool = typer.Option(False, "--sandbox", help="Niveau « sandbox » : génère un secret client."),
    trust_list_required: bool = typer.Option(
        False, "--trust-list-required", help="Exiger une habilitation valide (liste de confiance du guichet)."
    ),
    config: Path = ConfigOpt,
) -> None:
    """Enregistre (ou remplace) un client ; pris en compte sans redémarrage."""
    cfg = _load(config)
    path = _clients_file(cfg)
    if (dn is None) == (cert is None):
        fail("indiquez --dn ou --cert (l'un des deux)")
    if cert is not None:
        try:
            dn = x509.load_pem_x509_certificate(cert.read_bytes()).subject.rfc4514_string()
        except (OSError, ValueError) as exc:
            fail(f"certificat illisible : {cert} ({getattr(exc, 'strerror', None) or exc})")
    secret = digest = None
    if sandbox:
        secret, digest = generate_secret()
    try:
        client = ApiClient.model_validate(
            {
                "client_id": client_id,
                "dn": dn,
                "scopes": scope,
                "level": "sandbox" if sandbox else "espace_confiance",
                "trust_list_required": trust_list_required,
                **({"secret_sha256": digest} if digest else {}),
            }
        )
    except ValidationError as exc:
        fail(format_validation_error(exc, "client"))
    clients = [c for c in _read_clients(path) if c.client_id != client_id]
    clients_file(path).save([*clients, client])
    console.print(f"Client [bold]{client_id}[/bold] enregistré ({client.dn}; scopes : {' '.join(client.scopes)}).")
    if secret:
        console.print(f"Secret client (affiché une seule fois) : [bold]{secret}[/bold]")


@clients_app.command("remove")
def clients_remove(client_id: str = typer.Argument(...), config: Path = ConfigOpt) -> None:
    """Retire un client du fichier de clients."""
    cfg = _load(config)
    path = _clients_file(cfg)
    clients = _read_clients(path)
    kept = [c for c in clients if c.client_id != client_id]
    if len(kept) == len(clients):
        fail(f"client inconnu dans {path} : {client_id}", EXIT_FAILURE)
    clients_file(path).save(kept)
    console.print(f"Client [bold]{client_id}[/bold] retiré.")


@log_app.command("verify")
def log_verify(path: Path = typer.Argument(..., help="Journal d'accès (JSON lines).")) -> None:
    """Vérifie le chaînage du journal d'accès (ligne modifiée, insérée ou supprimée)."""
    try:
        result = AccessLog.verify(path)
    except OSError as exc:
        fail(f"journal illisible : {path} ({exc.strerror or exc})")
    if result.ok:
        console.print(f"[green]Journal intègre[/green] : {result.checked} enregistrement(s).")
        return
    console.print(f"[red]Journal altéré[/red] à la ligne {(result.first_bad or 0) + 1} : {result.reason}")
    raise typer.Exit(1)
