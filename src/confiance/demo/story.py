"""`confiance demo`: the whole story of the trust space, narrated, against the running services.

An editor obtains ELP and ELU habilitations (the conformity report is produced live by the
conformity tool against the running proxy), an operator obtains OSP and OSU, a fictitious
doctor authenticates by CIBA and the demo LPS works through the proxy, the traces are
verified, then the ELP habilitation is withdrawn and the next connection is refused by the
trust space, with the reason. Every step is a real HTTP(S) exchange with a running
service; the demo is an assembly point (like the CLI), never a shortcut around a rule.

Each run files for a new company with fresh names, so running it again succeeds.
"""

from __future__ import annotations

import json
import secrets
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from confiance.core.tls import ClientIdentity

from .guichet_client import (
    COMMITMENTS,
    EDITOR_STEPS,
    Actor,
    Guichet,
    GuichetRefusal,
    deposit_evidence,
    grant,
    new_csr,
    pentest,
    submit_and_accept_chapters,
)
from .onboarding import OnboardingError

DEMO_PASSWORD = "demo-guichet-2025"  # the guichet's seeded demo ANS accounts (docs/guichet.md)
COMPANY_PASSWORD = "mot-de-passe-demo-solide"


class DemoFailure(RuntimeError):
    """A step did not produce what the story expects; the message says what and where to look."""


@dataclass
class Story:
    endpoints: dict[str, Any]
    console: Console = field(default_factory=Console)
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    step_no: int = 0
    facts: dict[str, Any] = field(default_factory=dict)
    started: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(seconds=5))

    # ------------------------------------------------------------------ plumbing
    @property
    def services(self) -> dict[str, Any]:
        services: dict[str, Any] = self.endpoints["services"]
        return services

    @property
    def ca(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.endpoints["ca_bundle"])

    def step(self, title: str, where: str | None = None) -> None:
        self.step_no += 1
        self.console.rule(f"[bold cyan]Étape {self.step_no} — {title}")
        if where:
            self.console.print(f"[dim]Où regarder : {where}[/dim]")

    def say(self, text: str) -> None:
        self.console.print("  " + text)

    def ok(self, text: str) -> None:
        self.console.print(f"  [green]✔[/green] {text}")

    def guichet_page(self, path: str) -> str:
        return str(self.services["guichet"]["url"]).rstrip("/") + path

    # ------------------------------------------------------------------ the story
    def run(self) -> None:
        steps: list[Callable[[], None]] = [
            self.check_services,
            self.editor_files,
            self.connect_editor_lps,
            self.conformity_and_elp,
            self.elu_granted,
            self.operator_habilitations,
            self.doctor_connects,
            self.lps_works,
            self.traces_verified,
            self.doctor_disconnects,
            self.withdrawal_refused,
        ]
        self.console.print(
            Panel.fit(
                "Démonstration de l'Espace de Confiance Pro Santé Connect\n"
                "Tout est fictif : structures, professionnels, patients et certificats de TEST.",
                title="Confiance",
            )
        )
        for fn in steps:
            fn()
        self.console.print(Panel.fit("[bold green]Démonstration terminée : toutes les étapes ont réussi.[/bold green]"))

    def check_services(self) -> None:
        self.step("Les services de l'Espace de Confiance répondent")
        table = Table("service", "URL", "état")
        for proc in self.endpoints.get("processes", []):
            try:
                status = httpx.get(proc["health"], verify=self.ca, timeout=5).status_code
            except httpx.HTTPError as exc:
                raise DemoFailure(f"{proc['name']} ne répond pas ({exc}) : lancez `make up`") from exc
            table.add_row(proc["name"], proc["url"], "[green]OK[/green]" if status < 500 else f"[red]{status}[/red]")
        self.console.print(table)

    def editor_files(self) -> None:
        self.step(
            "Un éditeur dépose ses candidatures ELP (Proxy e-Santé) et ELU (logiciel)",
            self.guichet_page("/connexion")
            + " (compte mandataire ci-dessous, mot de passe « "
            + COMPANY_PASSWORD
            + " ») puis /tableau-de-bord",
        )
        g = Guichet(self.services["guichet"]["url"])
        self.facts["guichet"] = g
        verifier = g.sign_in("verificateur@ans.demo", DEMO_PASSWORD)
        college = g.sign_in("college@ans.demo", DEMO_PASSWORD)
        self.facts.update(verifier=verifier, college=college)
        editor_email = f"mandataire-{self.run_id}@editeur.demo"
        editor = g.register_company(f"Éditions Santé Démo {self.run_id}", editor_email, COMPANY_PASSWORD, verifier)
        self.ok(f"structure enregistrée, compte mandataire {editor_email} validé par l'ANS")
        proxy_version = self._proxy_version()
        proxy_sol = editor.call(
            "POST",
            "/api/solutions",
            {"name": f"Proxy Démo {self.run_id}", "kind": "proxy", "components": [{"kind": "PROXY", "name": "proxy"}]},
        )
        lps_sol = editor.call(
            "POST",
            "/api/solutions",
            {
                "name": f"Cabinet Démo {self.run_id}",
                "kind": "logiciel_utilisateur",
                "components": [{"kind": "LPS", "name": f"lps-{self.run_id}"}],
            },
        )
        elp = self._file(editor, verifier, "ELP", proxy_sol, proxy_version)
        elu = self._file(editor, verifier, "ELU", lps_sol, "3.2.0", proxy_solution_id=proxy_sol["id"])
        self.ok(f"candidature ELP n° {elp['id']} (proxy version {proxy_version}) : formulaire validé")
        self.ok(f"candidature ELU n° {elu['id']} s'appuyant sur ce proxy : formulaire validé")
        certs = {}
        for cand, sol in ((elp, proxy_sol), (elu, lps_sol)):
            for step in EDITOR_STEPS:
                editor.call("POST", f"/api/candidatures/{cand['id']}/parcours/{step}")
            comp = sol["components"][0]
            certs[cand["role"]] = editor.call(
                "POST", f"/api/candidatures/{cand['id']}/certificates", {"component_id": comp["id"]}
            )
            self.ok(
                f"certificat de test IGC-Santé émis pour {cand['role']} : {certs[cand['role']]['subject_dn']} "
                f"(x5t#S256 {certs[cand['role']]['x5t_s256'][:16]}…)"
            )
        self.facts.update(editor=editor, elp=elp, elu=elu, proxy_sol=proxy_sol, lps_sol=lps_sol, certs=certs)

    def _file(self, company: Actor, verifier: Actor, role: str, sol: dict[str, Any], version: str, **extra: Any) -> Any:
        cand = company.call(
            "POST",
            "/api/candidatures",
            {
                "role": role,
                "solution_id": sol["id"],
                "software_name": sol["name"],
                "software_version": version,
                **extra,
            },
        )
        company.call("POST", f"/api/candidatures/{cand['id']}/submit", COMMITMENTS)
        verifier.call("POST", f"/api/candidatures/{cand['id']}/validate", {})
        return cand

    def _proxy_version(self) -> str:
        r = httpx.get(self.services["proxy"]["url"] + "/healthz", verify=self.ca, timeout=5)
        version = r.json().get("version") if r.headers.get("content-type", "").startswith("application/json") else None
        return str(version or "0.1.0")

    def connect_editor_lps(self) -> None:
        self.step(
            "Raccordement en BAS du logiciel de l'éditeur avec son certificat de test",
            self.services["psc"]["url"] + "/sandbox/ecps",
        )
        cert = self.facts["certs"]["ELU"]
        workdir = Path(self.endpoints["state_dir"]) / "demo" / self.run_id
        workdir.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = workdir / "lps.cert.pem", workdir / "lps.key.pem"
        cert_path.write_text(cert["cert_pem"])
        key_path.touch(mode=0o600)
        key_path.write_text(cert["key_pem"])
        client_id = f"lps-editeur-{self.run_id}"
        from . import onboarding

        onboarding.register_lps(self.endpoints, client_id, cert["subject_dn"], cert_path, key_path)
        self.facts.update(client_id=client_id, lps_cert=cert_path, lps_key=key_path, workdir=workdir)
        self.ok(f"client PSC « Espace de Confiance » {client_id} (mTLS, DN {cert['subject_dn']})")
        self.ok("client de l'API (Client_ID_AS ↔ DN ↔ scopes) et identifiants confiés au Proxy e-Santé")
        refresh = float(self.services["psc"].get("trust_list_refresh_seconds") or 5)
        self.say(
            "Le bac à sable et le serveur d'autorisation admettent ce certificat de test tant que la candidature "
            f"est en instruction (liste de confiance du guichet, relue toutes les {refresh:g} s)."
        )
        waited = self._wait_admitted()
        self.ok(f"certificat admis par PSC et par le serveur d'autorisation (après {waited:.0f} s de propagation)")

    def conformity_and_elp(self) -> None:
        self.step(
            "L'outil de conformité certifie le proxy ; le vérificateur et le collège accordent l'ELP",
            self.guichet_page(f"/candidatures/{self.facts['elp']['id']}")
            + " (éditeur) et "
            + self.guichet_page("/ans/instruction")
            + " (verificateur@ans.demo)",
        )
        from . import onboarding

        report_path = self.facts["workdir"] / "conformite.json"
        html_path = self.facts["workdir"] / "conformite.html"
        report = onboarding.run_conformity(
            self.endpoints,
            self.facts["client_id"],
            self.facts["lps_cert"],
            self.facts["lps_key"],
            report_path,
            html_path,
            self.console,
        )
        summary = report["summary"]
        self.ok(f"rapport signé : {summary['passed']} contrôles réussis, {summary['failed']} en échec — {html_path}")
        if not report.get("conforme"):
            raise DemoFailure(f"le proxy n'est pas déclaré conforme par l'outil : voir {html_path}")
        editor, verifier, college = self.facts["editor"], self.facts["verifier"], self.facts["college"]
        elp = self.facts["elp"]
        proxy_name = self.facts["proxy_sol"]["name"]
        deposit_evidence(
            editor,
            elp["id"],
            pentest_data=pentest(proxy_name, elp["software_version"], medium_ko=0),
            pentest_pdf=self._pentest_report(proxy_name, elp["software_version"]),
            conformity_report=report_path.with_name(report_path.name + ".jws").read_text().strip(),
        )
        self.ok(self._pentest_findings(verifier, elp["id"]))
        n = submit_and_accept_chapters(editor, verifier, elp["id"])
        self.ok(f"preuves déposées (test d'intrusion PASSI, rapport de conformité…), {n} chapitres acceptés")
        hab = grant(college, editor, elp["id"])
        self.facts["elp_hab"] = hab
        self.ok(f"habilitation ELP n° {hab['id']} accordée en BAS, valable jusqu'au {hab['valid_until'][:10]}")

    def elu_granted(self) -> None:
        self.step("L'ELU est instruite et accordée (test d'intrusion avec 3 critères moyens KO : toléré pour un LPS)")
        editor, verifier, college = self.facts["editor"], self.facts["verifier"], self.facts["college"]
        elu = self.facts["elu"]
        lps_name = self.facts["lps_sol"]["name"]
        deposit_evidence(
            editor,
            elu["id"],
            pentest_data=pentest(lps_name, "3.2.0", medium_ko=3),
            pentest_pdf=self._pentest_report(lps_name, "3.2.0"),
        )
        submit_and_accept_chapters(editor, verifier, elu["id"])
        hab = grant(college, editor, elu["id"])
        self.facts["elu_hab"] = hab
        self.ok(f"habilitation ELU n° {hab['id']} accordée, s'appuie sur l'ELP n° {self.facts['elp_hab']['id']}")

    def operator_habilitations(self) -> None:
        self.step(
            "Un opérateur obtient l'OSP puis l'OSU, avec ses certificats de production",
            self.guichet_page("/habilitations")
            + " (graphe des dépendances) et "
            + self.guichet_page("/habilitations-publiques"),
        )
        g: Guichet = self.facts["guichet"]
        verifier, college = self.facts["verifier"], self.facts["college"]
        email = f"mandataire-{self.run_id}@operateur.demo"
        op = g.register_company(f"Hébergeur Santé Démo {self.run_id}", email, COMPANY_PASSWORD, verifier)
        proxy_sol, lps_sol = self.facts["proxy_sol"], self.facts["lps_sol"]
        osp = self._file(op, verifier, "OSP", proxy_sol, self.facts["elp"]["software_version"])
        osp_hab = self._grant_operator(op, verifier, college, osp, proxy_sol)
        osu = self._file(op, verifier, "OSU", lps_sol, "3.2.0", osp_habilitation_id=osp_hab["id"])
        osu_hab = self._grant_operator(op, verifier, college, osu, lps_sol)
        self.ok(f"OSP n° {osp_hab['id']} et OSU n° {osu_hab['id']} accordées en production")
        table = Table("n°", "rôle", "environnement", "valable jusqu'au", "s'appuie sur")
        for hab in (self.facts["elp_hab"], self.facts["elu_hab"], osp_hab, osu_hab):
            table.add_row(
                str(hab["id"]),
                hab["role"],
                hab["environment"],
                hab["valid_until"][:10],
                ", ".join(str(x) for x in hab.get("relies_on", [])),
            )
        self.console.print(table)

    def _pentest_report(self, name: str, version: str) -> bytes:
        """The PASSI auditor's signed report, by a certificate of the local test PKI (the one
        the guichet trusts for pentest signatures), stating ``name`` and ``version``."""
        from confiance.pki import Pki

        from .pentest_report import signed_report

        state = Path(self.endpoints["state_dir"])
        return signed_report(Pki(state / "pki"), state / "demo" / self.run_id / "pentest", name, version)

    def _pentest_findings(self, reader: Actor, cid: int) -> str:
        """What the guichet found reading the deposited report (first page, signature)."""
        evidence = reader.call("GET", f"/api/candidatures/{cid}")["evidence"]
        checks = next((e.get("checks") or {} for e in evidence if e.get("kind") == "test_intrusion"), {})
        pdf = checks.get("pdf") or {}
        if not pdf.get("signature_valide") or checks.get("problems"):
            raise DemoFailure(f"rapport de test d'intrusion non reconnu par le guichet : {checks}")
        return (
            f"rapport de test d'intrusion lu par le guichet : signé par « {pdf.get('signataire')} », signature valide"
        )

    def _grant_operator(
        self, op: Actor, verifier: Actor, college: Actor, cand: dict[str, Any], sol: dict[str, Any]
    ) -> Any:
        deposit_evidence(
            op,
            cand["id"],
            pentest_data=pentest(sol["name"], cand["software_version"], medium_ko=0),
            pentest_pdf=self._pentest_report(sol["name"], cand["software_version"]),
        )
        submit_and_accept_chapters(op, verifier, cand["id"])
        hab = grant(college, op, cand["id"])  # declares the parcours steps the college waits for
        _key_pem, csr_pem = new_csr(sol["components"][0]["name"])  # the production key stays with the operator
        cert = op.call(
            "POST",
            f"/api/candidatures/{cand['id']}/certificates",
            {"component_id": sol["components"][0]["id"], "csr_pem": csr_pem},
        )
        op.call("POST", f"/api/candidatures/{cand['id']}/parcours/homologation_declaration")
        self.ok(f"certificat de production {cert['subject_dn']} pour {cand['role']}")
        return hab

    # ------------------------------------------------------------------ care
    def _lps(self) -> Any:
        from confiance.lps.client import LpsClient

        return LpsClient(
            self.services["proxy"]["url"],
            self.endpoints["ca_bundle"],
            self.facts["workdir"] / "lps-session.json",
            ClientIdentity(self.facts["lps_cert"], self.facts["lps_key"]),
        )

    def _wait_admitted(self) -> float:
        """Wait until PSC and the API AS both admit the LPS certificate; return the seconds waited.

        The trust list propagates: each server re-reads it every refresh period and keeps its
        last good copy while the guichet is slow to answer. A connection plus one
        signsessiondata call through the proxy proves both servers admit the certificate.
        """
        refresh = float(self.services["psc"].get("trust_list_refresh_seconds") or 5)
        start = time.monotonic()
        deadline = start + max(30.0, 6 * refresh)
        last: Any = None
        nid = self._doctor()["national_id"]
        while time.monotonic() < deadline:
            with self._lps() as lps:
                answer = lps.connect(nid, self.facts["client_id"], channel="MOBILE")
                if answer.status in (200, 304):
                    session = lps.saved_session() or {}
                    body = {
                        "nationalId": nid,
                        "clientID": self.facts["client_id"],
                        "proxy_session_id": session.get("proxy_session_id", ""),
                        "session_state": session.get("session_state", ""),
                    }
                    signed = lps.send("POST", "signsessiondata", "signsessiondata", body=body)
                    lps.disconnect()
                    if signed.status == 200:
                        return time.monotonic() - start
                    last = signed.body
                else:
                    last = answer.body
            time.sleep(min(1.0, refresh))
        raise DemoFailure(f"certificat toujours refusé après propagation de la liste de confiance : {last}")

    def doctor_connects(self) -> None:
        self.step(
            "Une médecin fictive s'authentifie par CIBA sur l'e-CPS simulée",
            self.services["psc"]["url"] + "/sandbox/ecps",
        )
        doctor = self._doctor()
        self._wait_admitted()  # the ELU grant has reached PSC and the AS
        with self._lps() as lps:
            binding = lps.binding_message()
            self.say(f"Code affiché sur le logiciel et sur l'e-CPS : [bold]{binding}[/bold]")
            answer = lps.connect(doctor["national_id"], self.facts["client_id"], channel="MOBILE", binding=binding)
        if answer.status != 200:
            raise DemoFailure(f"connexion refusée ({answer.status}) : {answer.body}")
        self.facts["doctor"] = doctor
        self.ok(
            f"Dr {doctor['given_name']} {doctor['family_name']} ({doctor['national_id']}) connectée ; "
            f"session proxy {answer.body['proxy_session_id'][:12]}…, session PSC {answer.body['session_state'][:12]}…"
        )

    def _doctor(self) -> dict[str, Any]:
        identities = self.endpoints.get("identities", [])
        for ident in identities:
            if "méd" in json.dumps(ident, ensure_ascii=False).lower():
                return dict(ident)
        if not identities:
            raise DemoFailure("aucune identité de test publiée dans endpoints.json")
        return dict(identities[0])

    def lps_works(self) -> None:
        self.step("Le logiciel recherche une patiente dans l'INSi et liste ses documents dans le DMP (via le proxy)")
        from . import onboarding

        with self._lps() as lps:
            found = onboarding.insi_lookup(lps)
            self.ok(f"INSi : {found['summary']}")
            docs = onboarding.dmp_documents(lps, found)
            table = Table("date", "type", "titre")
            for d in docs:
                table.add_row(d["date"], d["type"], d["title"])
            self.console.print(table)
            self.ok(f"DMP : {len(docs)} document(s) pour cette patiente")

    def traces_verified(self) -> None:
        self.step("Les traces du proxy sont lues et leur chaînage vérifié")
        from . import onboarding

        traces = onboarding.read_traces(self.endpoints, self.facts["client_id"], self.started)
        table = Table("horodatage", "type", "IdRPPS", "apiRequest")
        for t in traces[-8:]:
            api = t.get("apiRequest") or {}
            table.add_row(
                str(t.get("timestamp", ""))[:19],
                t["type"],
                str(t.get("IdRPPS", "")),
                f"{api.get('methode', '')} {api.get('nomApiPsc', '')} {api.get('path', '')}".strip(),
            )
        self.console.print(table)
        verdict = onboarding.verify_traces(self.endpoints)
        self.ok(f"chaîne de traces vérifiée : {verdict}")

    def doctor_disconnects(self) -> None:
        self.step("La médecin se déconnecte (jetons d'API révoqués, session PSC terminée)")
        with self._lps() as lps:
            answer = lps.disconnect()
        if answer.status != 200:
            raise DemoFailure(f"déconnexion : {answer.status} {answer.body}")
        self.ok("déconnectée")

    def withdrawal_refused(self) -> None:
        self.step(
            "L'ANS retire l'habilitation ELP : la connexion suivante est refusée",
            self.guichet_page("/ans/registre") + " (habilitations à risque) et " + self.guichet_page("/ans/audit"),
        )
        college: Actor = self.facts["college"]
        hab = self.facts["elp_hab"]
        college.call("POST", f"/api/habilitations/{hab['id']}/withdraw", {"reason": "faille critique non corrigée"})
        self.ok(f"habilitation ELP n° {hab['id']} retirée ; l'ELU, l'OSP et l'OSU qui s'y appuient sont signalées")
        editor: Actor = self.facts["editor"]
        detail = editor.call("GET", f"/api/candidatures/{self.facts['elp']['id']}")
        for cert in detail.get("certificates", []):
            if cert.get("revoked"):
                self.ok(f"certificat {cert['subject_dn']} révoqué par l'IGC (LCR mise à jour, refusé par les services)")
        refresh = float(self.services["psc"].get("trust_list_refresh_seconds") or 5)
        deadline = time.monotonic() + refresh * 3 + 10
        doctor = self.facts["doctor"]
        while True:
            with self._lps() as lps:
                answer = lps.connect(doctor["national_id"], self.facts["client_id"], channel="MOBILE")
                if answer.status == 200:
                    lps.disconnect()
            if answer.status != 200:
                break
            if time.monotonic() > deadline:
                raise DemoFailure("la connexion est encore acceptée après le retrait de l'habilitation")
            time.sleep(1)
        message = answer.body.get("message") if isinstance(answer.body, dict) else answer.body
        self.ok(f"connexion refusée ({answer.status}) : {message}")
        self.facts["refusal"] = {"status": answer.status, "body": answer.body}


def load_endpoints(state_dir: Path) -> dict[str, Any]:
    from confiance.core import endpoints

    return endpoints.read(state_dir)


def main(state_dir: Path, console: Console | None = None) -> int:
    console = console or Console()
    try:
        data = load_endpoints(state_dir)
    except FileNotFoundError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    story = Story(data, console=console)
    try:
        story.run()
    except (DemoFailure, GuichetRefusal, OnboardingError, httpx.HTTPError) as exc:
        console.print(f"[red]Échec de la démonstration à l'étape {story.step_no} : {exc}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".confiance")))
