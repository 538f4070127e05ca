"""`confiance psc …`: run the sandbox, and drive a running one through its admin API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import typer
import yaml
from rich.console import Console
from rich.table import Table

from confiance.core.cli_config import EXIT_FAILURE, fail, load_cli_config
from confiance.core.config import ConfigError

from .config import PscConfig

app = typer.Typer(help="Bac à sable Pro Santé Connect (OpenID Connect, CIBA, e-CPS simulée).", no_args_is_help=True)
identities_app = typer.Typer(help="Identités de test (MIE fictives).", no_args_is_help=True)
clients_app = typer.Typer(help="Clients (LPS) enregistrés.", no_args_is_help=True)
app.add_typer(identities_app, name="identities")
app.add_typer(clients_app, name="clients")
console = Console()
DEFAULT_CONFIG = Path(".confiance/psc.toml")
ConfigOpt = typer.Option(DEFAULT_CONFIG, "--config", "-c", help="Fichier de configuration du bac à sable.")


def _load(config: Path) -> PscConfig:
    return load_cli_config(config, PscConfig)


@app.command()
def serve(
    config: Path = ConfigOpt,
    workers: int | None = typer.Option(
        None,
        "--workers",
        "-w",
        min=1,
        max=64,
        help="Processus workers (partagent le store ; défaut : workers du fichier).",
    ),
) -> None:
    """Démarre le bac à sable (HTTPS si la section tls est configurée)."""
    from confiance.core import logs

    from .serve import serve as run

    cfg = _load(config)
    logs.setup()
    try:
        run(cfg, config, workers if workers is not None else cfg.workers)
    except ConfigError as exc:
        fail(str(exc))


@app.command(hidden=True)
def worker(config: Path = ConfigOpt, fd: int = typer.Option(..., "--fd")) -> None:
    """Un worker de `serve --workers N` (socket d'écoute hérité du parent)."""
    from confiance.core import logs

    from .serve import run_worker, worker_socket

    cfg = _load(config)
    logs.setup()
    run_worker(cfg, worker_socket(fd))


class Admin:
    """A small client of the admin API, configured from the sandbox config file."""

    def __init__(self, config: Path) -> None:
        cfg = _load(config)
        if not cfg.admin_token:
            fail("admin_token absent de la configuration : API d'administration désactivée")
        self.base = cfg.issuer_base()
        from confiance.core.tls import client_context

        ctx: Any = client_context(cfg.tls.ca_bundle) if cfg.tls and cfg.tls.ca_bundle else True
        self.http = httpx.Client(verify=ctx, timeout=10, headers={"Authorization": f"Bearer {cfg.admin_token}"})

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            r = self.http.request(method, self.base + "/sandbox/admin" + path, json=body)
        except httpx.HTTPError as exc:
            fail(f"bac à sable injoignable ({self.base}) : {exc}", EXIT_FAILURE)
        data = r.json() if r.content else None
        if r.status_code >= 400:
            msg = data.get("error_description", r.text) if isinstance(data, dict) else r.text
            fail(f"erreur {r.status_code} : {msg}", EXIT_FAILURE)
        return data


@identities_app.command("list")
def identities_list(config: Path = ConfigOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """Liste les identités de test du bac à sable en cours d'exécution."""
    rows = Admin(config).call("GET", "/identities")
    if as_json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    table = Table("identifiant national", "prénom", "nom", "profession", title="Identités de test (fictives)")
    for r in rows:
        table.add_row(r["national_id"], r["given_name"], r["family_name"], r["profession"])
    console.print(table)


@identities_app.command("create")
def identities_create(
    file: Path = typer.Argument(..., help="Fichier YAML ou JSON : une identité ou une liste."),
    config: Path = ConfigOpt,
) -> None:
    """Crée une ou plusieurs identités (même format que le fichier d'identités)."""
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        fail(f"lecture impossible de {file} : {exc}")
    admin = Admin(config)
    for item in data if isinstance(data, list) else [data]:
        created = admin.call("POST", "/identities", item)
        console.print(f"identité créée : {created['national_id']} {created['given_name']} {created['family_name']}")


@clients_app.command("list")
def clients_list(config: Path = ConfigOpt) -> None:
    """Liste les clients enregistrés."""
    rows = Admin(config).call("GET", "/clients")
    table = Table("client_id", "nom", "authentification", "DN du certificat")
    for r in rows:
        auth = "mTLS (Espace de Confiance)" if r["espace_de_confiance"] else ("secret" if r["has_secret"] else "mTLS")
        table.add_row(r["client_id"], r["name"], auth, r["tls_client_auth_subject_dn"] or "")
    console.print(table)


@clients_app.command("create")
def clients_create(
    client_id: str = typer.Argument(...),
    secret: str | None = typer.Option(None, "--secret"),
    dn: str | None = typer.Option(None, "--dn", help="DN du certificat client (tls_client_auth)."),
    espace_de_confiance: bool = typer.Option(False, "--espace-de-confiance", help="mTLS obligatoire."),
    redirect_uri: list[str] = typer.Option([], "--redirect-uri"),
    config: Path = ConfigOpt,
) -> None:
    """Enregistre un client (LPS) dans le bac à sable en cours d'exécution."""
    body = {
        "client_id": client_id,
        "secret": secret,
        "tls_client_auth_subject_dn": dn,
        "espace_de_confiance": espace_de_confiance,
        "redirect_uris": redirect_uri,
    }
    created = Admin(config).call("POST", "/clients", body)
    console.print(f"client enregistré : {created['client_id']}")


@app.command()
def pending(config: Path = ConfigOpt) -> None:
    """Affiche les demandes CIBA en attente (code de liaison et canal)."""
    rows = Admin(config).call("GET", "/ciba")
    if not rows:
        console.print("Aucune demande en attente.")
        return
    table = Table("professionnel", "code", "canal", "client")
    table.add_column("auth_req_id", no_wrap=True)
    for r in rows:
        table.add_row(
            r["auth_req_id"], r["name"] or r["national_id"], r["binding_message"], r["channel"], r["client_id"]
        )
    console.print(table)


def _decide(rid: str, action: str, config: Path) -> None:
    result = Admin(config).call("POST", f"/ciba/{rid}/{action}")
    word = "approuvée" if result["decision"] == "approved" else "refusée"
    console.print(f"demande {result['auth_req_id']} {word}")


@app.command()
def approve(auth_req_id: str, config: Path = ConfigOpt) -> None:
    """Approuve une demande CIBA en attente (comme l'app e-CPS)."""
    _decide(auth_req_id, "approve", config)


@app.command()
def deny(auth_req_id: str, config: Path = ConfigOpt) -> None:
    """Refuse une demande CIBA en attente."""
    _decide(auth_req_id, "deny", config)


@app.command("rotate-keys")
def rotate_keys(config: Path = ConfigOpt) -> None:
    """Nouvelles clés de signature ; les anciennes restent publiées jusqu'à expiration des jetons."""
    result = Admin(config).call("POST", "/keys/rotate")
    console.print(f"clés publiées : {', '.join(result['keys'])}")


@app.command()
def ecps(
    mode: str = typer.Argument(..., help="approve | deny | never | manual"),
    delay_ms: int = typer.Option(0, "--delay-ms"),
    national_id: str | None = typer.Option(None, "--national-id", help="Politique d'une seule identité."),
    config: Path = ConfigOpt,
) -> None:
    """Change la politique de l'e-CPS simulée (toutes les identités ou une seule)."""
    path = f"/identities/{national_id}/ecps" if national_id else "/ecps"
    result = Admin(config).call("PUT", path, {"mode": mode, "delay_ms": delay_ms})
    console.print(f"politique e-CPS : {result['mode']} ({result['delay_ms']} ms)")
