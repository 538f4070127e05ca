"""`confiance conformity run|verify|jwks`: certify a proxy, verify a signed report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from confiance.core import endpoints as endpoints_mod
from confiance.core.files import write_atomic
from confiance.core.tls import ClientIdentity

from .checks import CheckDef
from .config import RunConfig, from_endpoints
from .html import render_html
from .model import STATUS_LABELS_FR, CheckResult, Status
from .report import ReportError, build_report, load_keys, read_jwks, sign_report, verify_detached, verify_report
from .runner import run, selected

app = typer.Typer(help="Outil de conformité : certifie un Proxy e-Santé et signe le rapport.", no_args_is_help=True)
console = Console()

_COLORS = {Status.PASS: "green", Status.FAIL: "red", Status.UNVERIFIABLE: "yellow", Status.NOT_APPLICABLE: "dim"}


def _endpoints(path: Path | None) -> dict[str, Any]:
    if path is None:
        default = Path(".confiance") / endpoints_mod.FILENAME
        return endpoints_mod.read(default.parent) if default.exists() else {}
    return endpoints_mod.read(path.parent) if path.name == endpoints_mod.FILENAME else _load_json(path)


def _load_json(path: Path) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads(path.read_text())
    return data


@app.command("run")
def run_cmd(
    proxy: str | None = typer.Option(None, "--proxy", help="URL du proxy à certifier (https://…)."),
    client_id: str | None = typer.Option(None, "--client-id", help="clientId du LPS (client PSC)."),
    national_id: str | None = typer.Option(None, "--national-id", help="Identité de test (nationalId)."),
    traces_auth: str | None = typer.Option(
        None, "--traces-auth", help="En-tête Authorization pour /traces (p. ex. « Bearer JETON »)."
    ),
    endpoints_path: Path | None = typer.Option(
        None, "--endpoints", help="endpoints.json écrit par `confiance up` (défaut : .confiance/endpoints.json)."
    ),
    report_path: Path = typer.Option(Path("conformite.json"), "--report", help="Rapport JSON (signé : <rapport>.jws)."),
    html_path: Path | None = typer.Option(None, "--html", help="Rapport HTML lisible."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="Répertoire de la clé de l'outil."),
    psc_url: str | None = typer.Option(None, "--psc-url", help="URL du bac à sable PSC."),
    psc_admin_token: str | None = typer.Option(
        None, "--psc-admin-token", help="Jeton d'administration du bac à sable."
    ),
    api_jwks: str | None = typer.Option(None, "--api-jwks", help="URL du JWKS de signsessiondata."),
    service: str | None = typer.Option(None, "--service", help="Nom du service signsessiondata sur le proxy."),
    client_cert: Path | None = typer.Option(None, "--client-cert", help="Certificat (public) du clientId."),
    idle_timeout: float | None = typer.Option(
        None, "--idle-timeout", help="Délai d'inactivité court configuré sur le proxy pour la campagne (s)."
    ),
    absolute_timeout: float | None = typer.Option(
        None, "--absolute-timeout", help="Durée de vie absolue courte configurée sur le proxy pour la campagne (s)."
    ),
    traces_open: bool = typer.Option(
        False, "--traces-open", help="Déclare /traces ouvert à tous pendant la campagne (mode conformité)."
    ),
    only: list[str] | None = typer.Option(None, "--only", help="N'exécuter que ces vérifications (id)."),
    other_client_id: str | None = typer.Option(
        None, "--other-client-id", help="Second LPS servi par le proxy (sessions distinctes par LPS)."
    ),
    fault_service: list[str] | None = typer.Option(
        None, "--fault-service", help="Service de panne du proxy : down=NOM, timeout=NOM ou broken=NOM (répétable)."
    ),
    fault_port: list[str] | None = typer.Option(
        None, "--fault-port", help="Port d'écoute de l'outil pour timeout=PORT et broken=PORT (répétable)."
    ),
    fault_cert: Path | None = typer.Option(None, "--fault-cert", help="Certificat TLS des écouteurs de panne."),
    fault_key: Path | None = typer.Option(None, "--fault-key", help="Clé du certificat des écouteurs de panne."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Certificat client présenté au proxy."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Clé du certificat client présenté au proxy."),
    proxy_version: str | None = typer.Option(
        None, "--proxy-version", help="Version déclarée du proxy (sinon lue sur /version ou /healthz)."
    ),
) -> None:
    """Exécute tous les scénarios contre le proxy et écrit le rapport signé."""
    try:
        eps = _endpoints(endpoints_path)
        cfg = from_endpoints(
            eps,
            proxy_url=proxy,
            client_id=client_id,
            national_id=national_id,
            traces_auth=traces_auth,
            psc_url=psc_url,
            psc_admin_token=psc_admin_token,
            api_jwks_url=api_jwks,
            service=service,
            client_cert=client_cert,
            idle_timeout=idle_timeout,
            absolute_timeout=absolute_timeout,
            traces_open=traces_open or None,
            only=set(only) if only else None,
            other_client_id=other_client_id,
            fault_services=_pairs(fault_service, str) or None,
            fault_ports=_pairs(fault_port, int) or None,
            fault_tls=(fault_cert, fault_key) if fault_cert and fault_key else None,
            proxy_identity=ClientIdentity(tls_cert, tls_key) if tls_cert else None,
        )
    except (ValueError, OSError, KeyError) as exc:
        console.print(f"[red]Configuration incomplète : {exc}[/red]")
        raise typer.Exit(2) from None
    state = state_dir or Path(eps.get("state_dir") or ".confiance")
    report = run_and_write(cfg, state, report_path, html_path, proxy_version, console)
    _summary(report)
    if report["proxy"]["version"] is None:
        console.print(
            "[yellow]Version du proxy non communiquée : le guichet l'exige, relancez avec --proxy-version.[/yellow]"
        )
    jws_path = report_path.with_name(report_path.name + ".jws")
    console.print(f"Rapport : {report_path} — signé : {jws_path}" + (f" — HTML : {html_path}" if html_path else ""))
    raise typer.Exit(0 if report["conforme"] else 1)


def _pairs(values: list[str] | None, cast: type) -> dict[str, Any]:
    """``["down=panne", "timeout=lent"]`` → ``{"down": "panne", "timeout": "lent"}``."""
    out: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"attendu CLE=VALEUR : {item!r}")
        out[key.strip()] = cast(value.strip())
    return out


def run_and_write(
    cfg: RunConfig,
    state: Path,
    report_path: Path,
    html_path: Path | None,
    proxy_version: str | None,
    console: Console,
) -> dict[str, Any]:
    """Run every selected check with progress, then write the JSON report, its JWS and the HTML page.

    Shared by `confiance conformity run` and `confiance demo` (which deposits the signed report).
    """
    keys = load_keys(state)
    console.print(
        f"Proxy certifié : [bold]{cfg.proxy_url}[/bold] — clientId {cfg.client_id}, nationalId {cfg.national_id}"
    )
    checks = selected(cfg)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("Vérifications", total=len(checks))

        def on_progress(defn: CheckDef, result: CheckResult | None) -> None:
            if result is None:
                progress.update(task, description=defn.name)
                return
            color = _COLORS[result.status]
            progress.console.print(f"[{color}]{STATUS_LABELS_FR[result.status]:>15}[/{color}]  {defn.name}")
            progress.advance(task)

        outcome = run(cfg, on_progress)
    report = build_report(
        outcome.results,
        proxy_url=cfg.proxy_url,
        proxy_version=proxy_version or outcome.version,
        preconditions=outcome.preconditions,
        context={"clientId": cfg.client_id, "nationalId": cfg.national_id, "service": cfg.service},
    )
    payload, jws = sign_report(report, keys)
    for target in (report_path, html_path):
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: a guichet or a person never reads half a report.
    write_atomic(report_path, payload)
    write_atomic(report_path.with_name(report_path.name + ".jws"), jws)
    if html_path is not None:
        write_atomic(html_path, render_html(report))
    return report


def _summary(report: dict[str, Any]) -> None:
    table = Table("vérification", "résultat", "constat", title="Conformité")
    for c in report["checks"]:
        status = Status(c["status"])
        color = _COLORS[status]
        table.add_row(c["name"], f"[{color}]{STATUS_LABELS_FR[status]}[/{color}]", c.get("reason", ""))
    console.print(table)
    s = report["summary"]
    console.print(
        f"{s['passed']}/{s['total']} réussies, {s['failed']} échouées, {s['unverifiable']} non vérifiables, "
        f"{s['not_applicable']} non applicables"
    )


@app.command("verify")
def verify_cmd(
    report_file: Path = typer.Argument(..., help="Rapport signé (.jws) ou rapport JSON (avec son .jws à côté)."),
    jwks_path: Path | None = typer.Option(
        None, "--jwks", help="JWKS de l'outil (défaut : <état>/conformity/jwks.json)."
    ),
    state_dir: Path = typer.Option(Path(".confiance"), "--state-dir", help="Répertoire d'état."),
) -> None:
    """Vérifie la signature d'un rapport : toute modification d'un octet est détectée."""
    jwks = read_jwks(jwks_path or state_dir / "conformity" / "jwks.json")
    try:
        raw = report_file.read_bytes()
        if raw.lstrip().startswith(b"{"):
            jws_file = report_file.with_name(report_file.name + ".jws")
            report = verify_detached(raw, jws_file.read_text(), jwks)
        else:
            report = verify_report(raw.decode("ascii"), jwks)
    except (ReportError, UnicodeDecodeError, OSError) as exc:
        console.print(f"[red]Rapport NON authentique : {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"[green]Signature valide[/green] : rapport du {report['date']} pour {report['proxy']['url']}")
    _summary(report)


@app.command("jwks")
def jwks_cmd(state_dir: Path = typer.Option(Path(".confiance"), "--state-dir", help="Répertoire d'état.")) -> None:
    """Affiche le JWKS public de l'outil (à publier pour le guichet)."""
    import json

    console.print_json(json.dumps(load_keys(state_dir).jwks()))
