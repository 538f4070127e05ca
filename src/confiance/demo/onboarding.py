"""The operator-side actions of the demo, done as an operator would on this machine.

Registering a new LPS in the trust space means three things: the PSC sandbox learns the
client (admin API), the API authorization server learns its certificate DN and scopes
(`confiance api clients add`), and the proxy receives the credentials it will present for
that clientId (`confiance proxy clients add`). The CLI commands are run as subprocesses so
the demo exercises exactly what the documentation tells operators to type.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from confiance.core.tls import ClientIdentity


class OnboardingError(RuntimeError):
    pass


def _cli(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "confiance", *args], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise OnboardingError(f"`confiance {' '.join(args[:3])}` a échoué : {(r.stdout + r.stderr).strip()[-500:]}")
    return r.stdout


def _ca(endpoints: dict[str, Any]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=endpoints["ca_bundle"])


def register_lps(endpoints: dict[str, Any], client_id: str, dn: str, cert: Path, key: Path) -> None:
    services = endpoints["services"]
    psc = services["psc"]
    r = httpx.post(
        psc["url"].rstrip("/") + "/sandbox/admin/clients",
        json={
            "client_id": client_id,
            "name": f"LPS de démonstration {client_id}",
            "tls_client_auth_subject_dn": dn,
            "espace_de_confiance": True,
            "trust_list_required": True,
        },
        headers={"Authorization": f"Bearer {psc['admin_token']}"},
        verify=_ca(endpoints),
        timeout=10,
    )
    if r.status_code != 201:
        raise OnboardingError(f"enregistrement PSC refusé : {r.status_code} {r.text}")
    _cli(
        "api", "clients", "add", "--config", services["api_as"]["config"], "--client-id", client_id, "--cert", str(cert)
    )
    _cli(
        "proxy",
        "clients",
        "add",
        "--config",
        services["proxy"]["config"],
        "--client-id",
        client_id,
        "--cert",
        str(cert),
        "--key",
        str(key),
    )


def run_conformity(
    endpoints: dict[str, Any], client_id: str, cert: Path, key: Path, report: Path, html: Path, console: Console
) -> dict[str, Any]:
    """Run the conformity tool against the running proxy for the new LPS; return the report."""
    from confiance.conformity.cli import run_and_write
    from confiance.conformity.config import from_endpoints

    cfg = from_endpoints(endpoints, client_id=client_id, client_cert=cert, api_identity=ClientIdentity(cert, key))
    return run_and_write(cfg, Path(endpoints["state_dir"]), report, html, None, console)


def insi_lookup(lps: Any) -> dict[str, Any]:
    """Ask the INSi-like service for the INS of a fictitious patient, through the proxy."""
    traits = {"nomNaissance": "MARTIN-TEST", "prenom": "Claire", "sexe": "F", "dateNaissance": "1985-03-14"}
    answer = lps.send("POST", "insi", "rechercher", body=traits)
    if answer.status != 200 or not isinstance(answer.body, dict) or answer.body.get("code") != "00":
        raise OnboardingError(f"INSi : {answer.status} {answer.body}")
    ident = answer.body["identite"]
    return {
        "ins": ident["matriculeINS"]["valeur"],
        "oid": ident["matriculeINS"]["oid"],
        "summary": f"{ident['nomNaissance']} {ident['premierPrenom']}, née le {ident['dateNaissance']} "
        f"— INS {ident['matriculeINS']['valeur']} ({answer.body['libelle']})",
    }


def dmp_documents(lps: Any, patient: dict[str, Any]) -> list[dict[str, str]]:
    """FHIR R4 DocumentReference search by the patient's INS, through the proxy."""
    identifier = f"urn:oid:{patient['oid']}|{patient['ins']}"
    answer = lps.send("GET", "dmp", "fhir/DocumentReference", params={"patient.identifier": identifier})
    if answer.status != 200 or not isinstance(answer.body, dict):
        raise OnboardingError(f"DMP : {answer.status} {answer.body}")
    out = []
    for entry in answer.body.get("entry", []):
        res = entry["resource"]
        out.append(
            {
                "date": str(res.get("date", ""))[:10],
                "type": res.get("type", {}).get("coding", [{}])[0].get("display", ""),
                "title": res.get("description", ""),
            }
        )
    return out


def read_traces(endpoints: dict[str, Any], client_id: str, since: datetime) -> list[dict[str, Any]]:
    """The proxy's traces since ``since`` for this LPS (GET /traces?start=…&end=…, admin token)."""
    proxy = endpoints["services"]["proxy"]
    now = datetime.now(UTC) + timedelta(seconds=5)
    r = httpx.get(
        proxy["url"].rstrip("/") + "/traces",
        params={"start": since.isoformat(timespec="seconds"), "end": now.isoformat(timespec="seconds")},
        headers={"Authorization": proxy["traces_auth"]["value"]},
        verify=_ca(endpoints),
        timeout=10,
    )
    if r.status_code != 200:
        raise OnboardingError(f"/traces : {r.status_code} {r.text[:200]}")
    return [t for t in r.json() if t.get("clientId") in (client_id, None)]


def verify_traces(endpoints: dict[str, Any]) -> str:
    out = _cli("proxy", "traces", "verify", "--config", endpoints["services"]["proxy"]["config"])
    return " ".join(out.split())[-200:]
