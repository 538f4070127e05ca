"""`confiance pki …`: the test IGC-Santé from the command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from confiance.core.cli_config import EXIT_FAILURE, fail
from confiance.core.files import write_atomic

from .ca import Pki, PkiError, describe

app = typer.Typer(help="IGC-Santé de test : autorités, certificats serveur et ORG AUTH_CLI, LCR.", no_args_is_help=True)
console = Console()

DirOpt = typer.Option(Path(".confiance/pki"), "--dir", help="Répertoire de la PKI.")


def _open(directory: Path) -> Pki:
    try:
        return Pki(directory)
    except PkiError as exc:
        fail(str(exc))


def _print_issued(title: str, issued: object) -> None:
    table = Table(title=title, show_header=False)
    for k, v in vars(issued).items():
        table.add_row(k, str(v))
    console.print(table)


@app.command()
def init(directory: Path = DirOpt) -> None:
    """Crée la chaîne de test (racine + intermédiaire) si elle n'existe pas."""
    pki = Pki.init(directory)
    console.print(f"PKI de test prête dans [bold]{pki.dir}[/bold]; bundle: {pki.ca_bundle}")


@app.command("issue-server")
def issue_server(
    name: str = typer.Argument(..., help="Nom du certificat (fichiers issued/NAME.*)."),
    dns: list[str] = typer.Option(["localhost"], "--dns"),
    ip: list[str] = typer.Option(["127.0.0.1"], "--ip"),
    days: int = typer.Option(825, "--days"),
    directory: Path = DirOpt,
) -> None:
    """Émet un certificat serveur TLS."""
    try:
        issued = _open(directory).issue_server(name, dns=dns, ips=ip, days=days)
    except PkiError as exc:
        fail(str(exc))
    _print_issued("Certificat serveur émis", issued)


@app.command("issue-client")
def issue_client(
    struct_id: str = typer.Option(..., "--struct-id", help="Identifiant de structure (préfixe + SIRET/FINESS)."),
    cn: str = typer.Option(..., "--cn", help="Nom du service (CN)."),
    org: str | None = typer.Option(None, "--org", help="Raison sociale (O)."),
    name: str | None = typer.Option(None, "--name"),
    days: int = typer.Option(3 * 365, "--days"),
    directory: Path = DirOpt,
) -> None:
    """Émet un certificat client ORG AUTH_CLI (OU = struct_IdNat, CN = service)."""
    try:
        issued = _open(directory).issue_client(struct_id, cn, organization=org, name=name, days=days)
    except PkiError as exc:
        fail(str(exc))
    _print_issued("Certificat client ORG AUTH_CLI émis", issued)


@app.command()
def revoke(
    what: str = typer.Argument(..., help="Nom, numéro de série ou chemin du certificat."),
    reason: str = typer.Option("unspecified", "--reason"),
    directory: Path = DirOpt,
) -> None:
    """Révoque un certificat et régénère la LCR."""
    try:
        issued = _open(directory).revoke(what, reason)
    except PkiError as exc:
        fail(str(exc))
    console.print(f"Certificat [bold]{issued.name}[/bold] ({hex(issued.serial)}) révoqué; LCR mise à jour.")


@app.command("list")
def list_(directory: Path = DirOpt) -> None:
    """Liste les certificats émis."""
    table = Table("nom", "type", "sujet", "expire", "révoqué")
    for c in _open(directory).issued():
        table.add_row(c.name, c.kind, c.subject_dn, c.not_after[:10], c.revoked_at or "")
    console.print(table)


@app.command()
def show(cert: Path = typer.Argument(..., exists=True, readable=True)) -> None:
    """Affiche sujet, émetteur, validité et empreinte x5t#S256 d'un certificat PEM."""
    try:
        info = describe(cert.read_bytes())
    except ValueError as exc:
        fail(f"certificat illisible : {cert} ({exc})")
    table = Table(show_header=False)
    for k, v in info.items():
        table.add_row(k, v)
    console.print(table)


@app.command("export-p12")
def export_p12(
    name: str,
    out: Path = typer.Option(..., "--out"),
    password: str | None = typer.Option(None, "--password"),
    directory: Path = DirOpt,
) -> None:
    """Exporte certificat + clé + chaîne en PKCS#12."""
    try:
        data = _open(directory).export_pkcs12(name, password)
    except PkiError as exc:
        fail(str(exc))
    try:
        write_atomic(out, data, mode=0o600)  # a private key: never readable by others, not even briefly
    except OSError as exc:
        fail(f"écriture impossible : {out} ({exc.strerror or exc})", EXIT_FAILURE)
    console.print(f"PKCS#12 écrit dans {out}")
