"""`confiance guichet …`: serve the guichet, manage accounts, sweep, verify the audit trail."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from confiance.core.config import ConfigError, load_config

from .config import GuichetConfig

app = typer.Typer(help="Guichet EDC PSC : registre des habilitations.", no_args_is_help=True)
admin = typer.Typer(help="Administration du guichet (comptes, jetons, balayage, audit).", no_args_is_help=True)
app.add_typer(admin, name="admin")
console = Console()

ConfigOpt = typer.Option(..., "--config", "-c", help="Fichier de configuration TOML du guichet.")


def _load(config: Path) -> GuichetConfig:
    try:
        return load_config(config, GuichetConfig)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _service(config: Path):  # type: ignore[no-untyped-def]
    from .app import build_service

    return build_service(_load(config))


@app.command()
def serve(config: Path = ConfigOpt) -> None:
    """Démarre le guichet (API JSON, liste de confiance signée, interface web si présente)."""
    from confiance.core import logs
    from confiance.core.server import ServiceConfig
    from confiance.core.server import serve as run
    from confiance.core.tls import ServerTLS

    from .api import create_app
    from .app import build_service

    logs.setup()
    cfg = _load(config)
    service = build_service(cfg)
    if cfg.demo:
        from .demo import seed

        seed(service)
    asgi = create_app(service, sweep_interval=cfg.sweep_interval_seconds)
    if importlib.util.find_spec("confiance.guichet.web.app") is not None:
        from importlib import import_module

        import_module("confiance.guichet.web.app").mount(asgi, service, cfg)
    tls = ServerTLS(cert=cfg.tls.cert, key=cfg.tls.key) if cfg.tls else None
    console.print(f"Guichet EDC PSC sur {cfg.public_url}")
    run(asgi, ServiceConfig(host=cfg.host, port=cfg.port, tls=tls, log_level="info"))


@app.command()
def migrate(config: Path = ConfigOpt) -> None:
    """Met le schéma de la base à jour (Alembic) et initialise le référentiel."""
    _service(config)
    console.print("Base à jour.")


@app.command()
def demo(config: Path = ConfigOpt) -> None:
    """Charge les données de démonstration (idempotent) et affiche les jetons."""
    from .demo import DEMO_PASSWORD, seed

    accounts = seed(_service(config))
    if accounts is None:
        console.print("Données de démonstration déjà présentes.")
        return
    table = Table("compte", "jeton d'API", title=f"Démonstration (mot de passe : {DEMO_PASSWORD})")
    table.add_row("admin@ans.demo", accounts.admin_token)
    table.add_row("verificateur@ans.demo", accounts.verifier_token)
    table.add_row("college@ans.demo", accounts.college_token)
    table.add_row("mandataire@lps.demo", accounts.editor_token)
    console.print(table)


@admin.command("create-user")
def create_user(
    config: Path = ConfigOpt,
    email: str = typer.Option(..., "--email"),
    name: str = typer.Option(..., "--name"),
    role: list[str] = typer.Option(..., "--role", help="verificateur, college, administrateur (ANS) ou mandataire"),
    password: str | None = typer.Option(None, "--password", help="Mot de passe (sinon : jeton seul)."),
    organisation: str | None = typer.Option(None, "--organisation", help="Nom de la structure (mandataire)."),
    siren: str | None = typer.Option(None, "--siren", help="SIREN de la structure (mandataire)."),
) -> None:
    """Crée un compte validé et affiche un jeton d'API pour lui."""
    from . import schemas as sc
    from .domain.model import AnsRole, OrgRole
    from .services import ServiceError

    service = _service(config)
    try:
        if role == ["mandataire"]:
            if not organisation or not siren:
                console.print("[red]un mandataire a besoin de --organisation et --siren[/red]")
                raise typer.Exit(2)
            org = sc.OrganisationIn(name=organisation, country="FR", siren=siren)
            acc = service.bootstrap_account(email, name, password, org=org, org_role=OrgRole.MANDATAIRE)
        else:
            try:
                roles = [AnsRole(r) for r in role]
            except ValueError:
                console.print(
                    f"[red]rôle inconnu parmi {role} (verificateur, college, administrateur, mandataire)[/red]"
                )
                raise typer.Exit(2) from None
            acc = service.bootstrap_account(email, name, password, roles)
        token = service.issue_token_for(acc.email, "cli")
    except ServiceError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    console.print(f"Compte n° {acc.id} créé : {acc.email}")
    console.print(f"Jeton d'API : {token.access_token}")


@admin.command("token")
def token(
    config: Path = ConfigOpt, email: str = typer.Option(..., "--email"), label: str = typer.Option("cli", "--label")
) -> None:
    """Émet un nouveau jeton d'API pour un compte existant."""
    from .services import ServiceError

    try:
        tok = _service(config).issue_token_for(email, label)
    except ServiceError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    console.print(tok.access_token)


def _tick(config: Path, at: str | None) -> None:
    import datetime as dt

    when = None
    if at:
        try:
            when = dt.datetime.fromisoformat(at)
        except ValueError:
            console.print(f"[red]date invalide {at!r} : attendu AAAA-MM-JJ ou AAAA-MM-JJTHH:MM[/red]")
            raise typer.Exit(2) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
    out = _service(config).tick(now=when)
    console.print(
        f"expirées : {out.expired} ; à risque : {out.flagged_at_risk} ; avis : {out.notifications} ; "
        f"rappels de renouvellement : {out.reminders}"
    )


@app.command("tick")
def tick(
    config: Path = ConfigOpt,
    at: str | None = typer.Option(None, "--at", help="Date du passage (AAAA-MM-JJ), par défaut maintenant."),
) -> None:
    """Passage périodique : expirations, avis à 90 et 30 jours, rappels de renouvellement."""
    _tick(config, at)


@admin.command("sweep")
def sweep(
    config: Path = ConfigOpt,
    at: str | None = typer.Option(None, "--at", help="Date du passage (AAAA-MM-JJ), par défaut maintenant."),
) -> None:
    """Ancien nom de « tick »."""
    _tick(config, at)


@admin.command("verify-audit")
def verify_audit(config: Path = ConfigOpt) -> None:
    """Vérifie le chaînage de la piste d'audit (code de sortie 1 si elle a été altérée)."""
    res = _service(config).verify_audit()
    if res.ok:
        console.print(f"Piste d'audit intègre ({res.checked} entrées).")
        return
    console.print(f"[red]Piste d'audit altérée à l'entrée {res.first_bad} : {res.reason}[/red]")
    raise typer.Exit(1)
