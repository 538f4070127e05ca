"""`confiance lps connect|send|disconnect`: a demo LPS using the running proxy.

By default it reads ``endpoints.json`` of `confiance up` (proxy URL, CA bundle, demo LPS
clients, identities), so after `make up` no option is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from confiance.core import endpoints

from .client import Answer, LpsClient

app = typer.Typer(
    help="LPS de démonstration : utilise le Proxy e-Santé comme le ferait un logiciel.", no_args_is_help=True
)
console = Console()

StateOpt = typer.Option(Path(".confiance"), "--state-dir", help="Répertoire d'état de `confiance up`.")
ProxyOpt = typer.Option(None, "--proxy", help="URL du proxy (sinon endpoints.json).")
CaOpt = typer.Option(None, "--ca", help="Bundle CA (sinon endpoints.json).")


def _env(state_dir: Path) -> dict[str, Any]:
    try:
        return endpoints.read(state_dir)
    except FileNotFoundError:
        return {}


def _client(state_dir: Path, proxy: str | None, ca: Path | None) -> LpsClient:
    env = _env(state_dir)
    url = proxy or env.get("services", {}).get("proxy", {}).get("url")
    if not url:
        console.print("[red]URL du proxy inconnue : --proxy ou lancez `confiance up`[/red]")
        raise typer.Exit(2)
    bundle = ca or env.get("ca_bundle")
    return LpsClient(url, bundle, state_dir / "lps-session.json")


def _print(ans: Answer) -> None:
    color = "green" if ans.status < 300 else ("yellow" if ans.status < 400 else "red")
    console.print(f"[{color}]HTTP {ans.status}[/{color}]")
    if ans.body is not None:
        console.print_json(json.dumps(ans.body, ensure_ascii=False)) if not isinstance(
            ans.body, str
        ) else console.print(ans.body)


@app.command()
def connect(
    national_id: str | None = typer.Option(
        None, "--national-id", "-n", help="Identifiant national (défaut : 1re identité)."
    ),
    client_id: str | None = typer.Option(None, "--client-id", help="clientId PSC du logiciel (défaut : client mTLS)."),
    channel: str = typer.Option("CARD", "--channel", help="CARD ou MOBILE."),
    state_dir: Path = StateOpt,
    proxy: str | None = ProxyOpt,
    ca: Path | None = CaOpt,
) -> None:
    """Connecte un professionnel (CIBA) : validez le code affiché sur l'e-CPS."""
    env = _env(state_dir)
    nid = national_id or next((i["national_id"] for i in env.get("identities", [])), None)
    cid = client_id or next((c["client_id"] for c in env.get("lps_clients", []) if c.get("cert")), None)
    if not nid or not cid:
        console.print("[red]--national-id et --client-id requis (pas d'endpoints.json)[/red]")
        raise typer.Exit(2)
    with _client(state_dir, proxy, ca) as lps:
        binding = lps.binding_message()
        console.print(f"Code à comparer sur l'e-CPS : [bold]{binding}[/bold] (professionnel {nid}, logiciel {cid})")
        ans = lps.connect(nid, cid, channel, binding)
    _print(ans)
    if ans.status == 304:
        console.print("Session déjà active pour ce professionnel et ce logiciel.")
    raise typer.Exit(0 if ans.status in (200, 304) else 1)


@app.command()
def send(
    service: str = typer.Argument(..., help="Service configuré sur le proxy (signsessiondata, insi, dmp…)."),
    path: str = typer.Argument("", help="Chemin sur le service."),
    method: str = typer.Option("GET", "--method", "-X"),
    data: str | None = typer.Option(None, "--data", "-d", help="Corps JSON."),
    sign_session: bool = typer.Option(False, "--sign-session", help="Corps signsessiondata rempli depuis la session."),
    state_dir: Path = StateOpt,
    proxy: str | None = ProxyOpt,
    ca: Path | None = CaOpt,
) -> None:
    """Envoie une requête au service via le proxy, avec la session enregistrée."""
    with _client(state_dir, proxy, ca) as lps:
        body: Any = json.loads(data) if data else None
        if sign_session:
            s = lps.saved_session()
            if s is None:
                console.print("[red]aucune session : `confiance lps connect` d'abord[/red]")
                raise typer.Exit(2)
            body = {
                "nationalId": s["national_id"],
                "clientID": s["client_id"],
                "proxy_session_id": s["proxy_session_id"],
                "session_state": s["session_state"],
            }
            method = "POST"
        ans = lps.send(method, service, path, body)
    _print(ans)
    raise typer.Exit(0 if ans.status < 400 else 1)


@app.command()
def disconnect(state_dir: Path = StateOpt, proxy: str | None = ProxyOpt, ca: Path | None = CaOpt) -> None:
    """Termine la session (le proxy révoque les jetons et ferme la session PSC)."""
    with _client(state_dir, proxy, ca) as lps:
        ans = lps.disconnect()
    _print(ans)
    raise typer.Exit(0 if ans.status == 200 else 1)
