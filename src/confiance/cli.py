"""The `confiance` command: one sub-command group per component, plus `up`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from confiance import __version__
from confiance.api.cli import app as api_app
from confiance.conformity.cli import app as conformity_app
from confiance.core.cli_config import EXIT_FAILURE, EXIT_INTERNAL, fail, load_cli_config, stderr
from confiance.core.errors import ConfianceError
from confiance.guichet.cli import app as guichet_app
from confiance.lps.cli import app as lps_app
from confiance.pki.cli import app as pki_app
from confiance.proxy.cli import app as proxy_app
from confiance.psc.cli import app as psc_app

app = typer.Typer(
    help="Confiance : l'Espace de Confiance Pro Santé Connect sur votre machine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(pki_app, name="pki")
app.add_typer(psc_app, name="psc")
app.add_typer(api_app, name="api")
app.add_typer(proxy_app, name="proxy")
app.add_typer(lps_app, name="lps")
app.add_typer(conformity_app, name="conformity")
app.add_typer(guichet_app, name="guichet")
console = Console()


def _version(value: bool) -> None:
    if value:
        print(f"confiance {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    _version_flag: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Affiche la version et quitte."
    ),
) -> None:
    """Confiance : l'Espace de Confiance Pro Santé Connect sur votre machine."""


@app.command()
def version() -> None:
    """Affiche la version."""
    console.print(__version__)


@app.command()
def up(
    state_dir: Path = typer.Option(Path(".confiance"), "--state-dir", help="Répertoire d'état."),
    config: Path | None = typer.Option(None, "--config", help="Fichier TOML (ports, options)."),
) -> None:
    """Démarre tout l'Espace de Confiance sur 127.0.0.1 et écrit endpoints.json."""
    from confiance import up as up_mod
    from confiance.core import endpoints

    cfg = load_cli_config(config, up_mod.UpConfig.load) if config is not None else up_mod.UpConfig()
    try:
        with console.status("Préparation de la PKI de test et des configurations…"):
            ctx, launches = up_mod.prepare(state_dir, cfg)
    except (ConfianceError, OSError) as exc:
        fail(f"préparation impossible dans {state_dir} : {exc}", EXIT_FAILURE)
    sup = up_mod.Supervisor(ctx, launches)
    code = 0
    try:
        with console.status(f"Démarrage de {len(launches)} service(s)…"):
            sup.start()
        ctx.endpoints["processes"] = [
            {
                "name": launch.name,
                "url": launch.url,
                "health": launch.health_url,
                "pid": sup.procs[launch.name].pid,
                "log": str(ctx.state_dir / "logs" / f"{launch.name}.log"),
            }
            for launch in launches
        ]
        path = endpoints.write(ctx.state_dir, ctx.endpoints)
        table = Table("service", "URL", title="Espace de Confiance démarré")
        for name, svc in ctx.endpoints["services"].items():
            table.add_row(name, str(svc.get("url", "")))
        console.print(table)
        console.print(f"Points d'accès : [bold]{path}[/bold] — CA : {ctx.ca_bundle}")
        console.print("Ctrl-C pour arrêter.")
        sys.stdout.flush()
        code = sup.wait()
    except (RuntimeError, TimeoutError) as exc:
        stderr.print(Text(str(exc), style="red"))
        code = EXIT_FAILURE
    finally:
        sup.stop()
        console.print("Services arrêtés.")
    raise typer.Exit(code)


@app.command()
def demo(
    state_dir: Path = typer.Option(Path(".confiance"), "--state-dir", help="Répertoire d'état de `confiance up`."),
) -> None:
    """Raconte toute l'histoire de l'Espace de Confiance contre les services démarrés par `make up`."""
    from confiance.demo.story import main as demo_main

    raise typer.Exit(demo_main(state_dir, console))


def main() -> None:
    """Entry point: whatever escapes a command is one line on stderr, not a traceback.

    Commands handle the errors they expect (bad input, unreachable services) with a
    message and an exit status; this is the net for the rest. ``CONFIANCE_DEBUG=1``
    shows the traceback for a bug report.
    """
    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except ConfianceError as exc:
        stderr.print(Text(str(exc), style="red"))
        raise SystemExit(EXIT_FAILURE) from None
    except Exception as exc:
        if os.environ.get("CONFIANCE_DEBUG"):
            raise
        stderr.print(
            Text(f"erreur inattendue : {type(exc).__name__}: {exc}", style="red"),
            Text("(CONFIANCE_DEBUG=1 affiche la trace complète)", style="dim"),
            sep="\n",
        )
        raise SystemExit(EXIT_INTERNAL) from None


if __name__ == "__main__":
    main()
