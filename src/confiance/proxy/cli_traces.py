"""`confiance proxy traces …`: verify the chain against its signed checkpoints, export a
window with its proof, check an export offline, print the checkpoint public key.

Exit codes: 0 intact, 1 anything an auditor must look at (broken, missing, empty or
rewound store, no checkpoint, bad signature, tampered export), 2 usage error. Nothing here
creates a database, a schema or a key: a store that vanished must not come back empty.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from confiance.core.config import ConfigError

app = typer.Typer(help="Traces chaînées du proxy et leurs points de contrôle signés.", no_args_is_help=True)
console = Console(soft_wrap=True)

ConfigOpt = typer.Option(None, "--config", "-c", help="Fichier TOML du proxy.")
UrlOpt = typer.Option(None, "--url", help="URL de la base des traces (sinon celle du fichier).")
WitnessOpt = typer.Option(None, "--witness", help="Fichier témoin des points de contrôle (sinon celui du fichier).")
KeyOpt = typer.Option(None, "--key", help="Clé publique (JWKS) ou fichier de clé du proxy (sinon celui du fichier).")


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]{message}[/red]")
    return typer.Exit(code)


def _settings(config: Path | None, url: str | None, witness: Path | None, key: Path | None):  # type: ignore[no-untyped-def]
    """(url, witness path, key path, checkpoint settings or None) from the config and flags."""
    from .checkpoint import CheckpointError, CheckpointSettings, settings_for
    from .config import TraceSection, load

    section: TraceSection | None = None
    if config is not None:
        try:
            section = load(config).traces
        except ConfigError as exc:
            raise _fail(str(exc), 2) from None
    url = url or (section.url if section is not None else None)
    if url is None:
        raise _fail("--config ou --url requis", 2)
    settings: CheckpointSettings | None = None
    try:
        settings = settings_for(section or TraceSection.model_validate({"url": url}))
    except (CheckpointError, ValueError):
        settings = None
    witness = witness or (Path(settings.witness) if settings and settings.witness else None)
    key = key or (Path(settings.key) if settings else None)
    return url, witness, key, settings


def _jwks(key: Path | None) -> dict[str, object]:
    from .checkpoint import CheckpointError, load_jwks

    if key is None:
        raise _fail("--key requis (clé publique des points de contrôle)", 2)
    if not key.is_file():
        raise _fail(f"clé des points de contrôle introuvable : {key}", 2)
    try:
        return load_jwks(key)
    except (CheckpointError, ValueError, KeyError) as exc:
        raise _fail(f"clé des points de contrôle illisible : {exc}", 2) from None


def _checkpoints(witness: Path | None, jwks: dict[str, object]):  # type: ignore[no-untyped-def]
    from .checkpoint import CheckpointError, FileWitness, read_witness

    if witness is None:
        raise _fail("--witness requis (fichier témoin des points de contrôle)", 2)
    if not witness.is_file():
        raise _fail(f"témoin des points de contrôle introuvable : {witness}")
    try:
        return read_witness(FileWitness(witness).lines(), jwks)
    except (CheckpointError, UnicodeDecodeError) as exc:
        raise _fail(str(exc)) from None


def _open_store(url: str):  # type: ignore[no-untyped-def]
    from .traces import TraceStore, TraceStoreMissing

    try:
        return TraceStore(url, create=False)
    except TraceStoreMissing as exc:
        raise _fail(str(exc)) from None


@app.command("verify")
def verify(
    config: Path | None = ConfigOpt,
    url: str | None = UrlOpt,
    witness: Path | None = WitnessOpt,
    key: Path | None = KeyOpt,
    export_file: Path | None = typer.Option(
        None, "--export", help="Vérifier un export (hors ligne) au lieu de la base."
    ),
) -> None:
    """Vérifie la chaîne des traces contre les points de contrôle signés du témoin."""
    from .traceaudit import verify_export, verify_store

    if export_file is not None:
        if key is None and config is not None:
            key = _settings(config, url, witness, key)[2]
        jwks = _jwks(key)
        if not export_file.is_file():
            raise _fail(f"export introuvable : {export_file}")
        with export_file.open("rb") as fh:
            audit = verify_export(fh, jwks)
    else:
        url, witness, key, _ = _settings(config, url, witness, key)
        jwks = _jwks(key)
        checkpoints = _checkpoints(witness, jwks)
        store = _open_store(url)
        try:
            audit = verify_store(store, checkpoints)
        finally:
            store.close()
    if not audit.ok:
        raise _fail(audit.message)
    detail = f"{audit.traces} trace(s) vérifiée(s)"
    if audit.checkpoint is not None:
        detail += f", point de contrôle signé au bloc {audit.checkpoint.seq}"
    if audit.uncovered_blocks:
        detail += f" ({audit.uncovered_blocks} bloc(s) plus récent(s), pas encore signés)"
    console.print(f"[green]{audit.message}[/green] : {detail}")


@app.command("export")
def export(
    start: str = typer.Option(..., "--start", help="Début de la fenêtre (ISO 8601)."),
    end: str = typer.Option(..., "--end", help="Fin de la fenêtre (ISO 8601)."),
    out: Path = typer.Option(..., "--out", "-o", help="Fichier JSON lines à écrire (0600)."),
    config: Path | None = ConfigOpt,
    url: str | None = UrlOpt,
    witness: Path | None = WitnessOpt,
    key: Path | None = KeyOpt,
) -> None:
    """Exporte les traces d'une fenêtre avec leur preuve (blocs et point de contrôle signé)."""
    from .domain import parse_iso
    from .traceaudit import export as do_export

    try:
        t0, t1 = parse_iso(start), parse_iso(end)
    except ValueError:
        raise _fail("date ISO 8601 invalide", 2) from None
    if t1 < t0:
        raise _fail("--end est antérieur à --start", 2)
    url, witness, key, settings = _settings(config, url, witness, key)
    jwks = _jwks(key)
    checkpoints = _checkpoints(witness, jwks)
    signer = None
    if settings is not None and config is not None and Path(settings.key).is_file():
        signer = settings.checkpointer()  # signs a covering checkpoint when none exists yet
    store = _open_store(url)
    try:
        audit = do_export(store, checkpoints, t0, t1, out, signer)
    finally:
        store.close()
    if not audit.ok:
        raise _fail(audit.message)
    console.print(f"[green]{audit.message}[/green] → {out}")


@app.command("public-key")
def public_key(config: Path | None = ConfigOpt, key: Path | None = KeyOpt) -> None:
    """Affiche la clé publique (JWKS) des points de contrôle, à remettre aux auditeurs."""
    if key is None:
        if config is None:
            raise _fail("--config ou --key requis", 2)
        key = _settings(config, None, None, None)[2]
    print(json.dumps(_jwks(key), indent=2))
