"""`confiance lps connect|send|disconnect`: a demo LPS using the running proxy.

By default it reads ``endpoints.json`` of `confiance up` (proxy URL, CA bundle, demo LPS
clients, identities), so after `make up` no option is needed.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console

from confiance.core import endpoints
from confiance.core.cli_config import EXIT_UNREACHABLE, fail

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
        fail("URL du proxy inconnue : --proxy ou lancez `confiance up`")
    bundle = ca or env.get("ca_bundle")
    try:
        return LpsClient(url, bundle, state_dir / "lps-session.json")
    except (OSError, ssl.SSLError) as exc:
        fail(f"bundle CA inutilisable : {bundle} ({getattr(exc, 'strerror', None) or exc})")
    except (httpx.InvalidURL, ValueError) as exc:
        fail(f"URL du proxy invalide : {url} ({exc})")


@contextlib.contextmanager
def _talking_to(lps: LpsClient) -> Iterator[None]:
    """Turn a proxy that cannot be reached into one line naming it (exit 3), not a traceback."""
    try:
        yield
    except httpx.TimeoutException:
        fail(f"le proxy {lps.proxy_url} ne répond pas (délai dépassé)", EXIT_UNREACHABLE)
    except httpx.ConnectError as exc:
        fail(f"proxy injoignable : {lps.proxy_url} ({_reason(exc)})", EXIT_UNREACHABLE)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        fail(f"URL du proxy invalide : {lps.proxy_url} ({exc})")
    except httpx.HTTPError as exc:
        fail(f"échange avec le proxy {lps.proxy_url} interrompu : {_reason(exc)}", EXIT_UNREACHABLE)
    except ValueError as exc:  # a session file that is not ours
        fail(f"fichier de session illisible {lps.session_file} : {exc} (supprimez-le)")


def _reason(exc: Exception) -> str:
    """The innermost cause, which names the actual problem (refused, certificate, DNS)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        nxt = exc.__cause__ or exc.__context__
        if not isinstance(nxt, Exception):
            break
        exc = nxt
    text = str(exc)
    if isinstance(exc, ConnectionRefusedError) or "Connection refused" in text:
        return "connexion refusée : le proxy est-il démarré ?"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificat du proxy refusé ({exc.verify_message}) : vérifiez --ca"
    return text or type(exc).__name__


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
        fail("--national-id et --client-id requis (pas d'endpoints.json)")
    with _client(state_dir, proxy, ca) as lps, _talking_to(lps):
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
    body: Any = None
    if data:
        try:
            body = json.loads(data)
        except ValueError as exc:
            fail(f"corps JSON invalide (--data) : {exc}")
    with _client(state_dir, proxy, ca) as lps, _talking_to(lps):
        if sign_session:
            s = lps.saved_session()
            if s is None:
                fail("aucune session : `confiance lps connect` d'abord")
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
    with _client(state_dir, proxy, ca) as lps, _talking_to(lps):
        ans = lps.disconnect()
    _print(ans)
    raise typer.Exit(0 if ans.status == 200 else 1)
