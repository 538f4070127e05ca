"""The guichet's JSON API as each actor of the demo uses it (editor, operator, verifier, college).

Nothing here bypasses the guichet's rules: every call is an HTTP request a real user's
software could make, and every refusal surfaces as ``GuichetRefusal`` with the guichet's
French message.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from confiance.guichet.domain.identifiers import luhn_ok
from confiance.guichet.domain.pentest import RESULT_ELIGIBLE

from .pentest_report import PASSI_DEMO, one_page_pdf

COMMITMENTS = {"respect_referentiels_cgu": True, "exactitude_informations": True, "acceptation_audits": True}
EDITOR_STEPS = ("isc_account", "psc_api_access", "authenticated_space", "bas_connection", "test_mie")
PASSI_PROVIDER = PASSI_DEMO


class GuichetRefusal(RuntimeError):
    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else str(body)
        details = body.get("problems") or body.get("errors") if isinstance(body, dict) else None
        super().__init__(f"guichet : {status} {message}" + (f" {details}" if details else ""))
        self.status = status
        self.body = body


def fictitious_siren() -> str:
    """A random Luhn-valid SIREN, so every demo run files for a new company."""
    base = "9" + "".join(str(secrets.randbelow(10)) for _ in range(7))
    return next(base + d for d in "0123456789" if luhn_ok(base + d))


@dataclass
class Actor:
    """One signed-in account talking to the guichet API."""

    http: httpx.Client
    token: str | None = None
    email: str = ""

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def call(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200, 201)) -> Any:
        payload = body if body is not None or method == "GET" else {}
        r = self.http.request(method, path, json=payload, headers=self._headers())
        data: Any = (
            r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else r.text
        )
        if r.status_code not in expect:
            raise GuichetRefusal(r.status_code, data)
        return data

    def upload(self, content: bytes, content_type: str) -> dict[str, Any]:
        r = self.http.post("/api/files", content=content, headers={**self._headers(), "Content-Type": content_type})
        if r.status_code != 201:
            raise GuichetRefusal(r.status_code, r.json())
        data: dict[str, Any] = r.json()
        return data


class Guichet:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=30.0)

    def close(self) -> None:
        self.http.close()

    def sign_in(self, email: str, password: str) -> Actor:
        actor = Actor(self.http, email=email)
        tok = actor.call("POST", "/api/auth/token", {"email": email, "password": password})
        actor.token = tok["access_token"]
        return actor

    def register_company(self, name: str, email: str, password: str, verifier: Actor) -> Actor:
        """A mandataire registers the company; ANS validates the account; the mandataire signs in."""
        acc = Actor(self.http).call(
            "POST",
            "/api/auth/register",
            {
                "email": email,
                "name": f"Mandataire {name}",
                "password": password,
                "organisation": {"name": name, "country": "FR", "siren": fictitious_siren()},
            },
        )
        verifier.call("POST", f"/api/accounts/{acc['id']}/validate")
        return self.sign_in(email, password)


def pentest(name: str, version: str, medium_ko: int = 0) -> dict[str, Any]:
    """A structured pentest report as the auditor's first page states it."""
    criteria = [{"id": f"M{i}", "severity": "moyenne", "result": "KO"} for i in range(medium_ko)]
    criteria += [
        {"id": f"C{i}", "severity": s, "result": "OK"} for i, s in enumerate(["haute", "moyenne", "faible"] * 4)
    ]
    return {
        "provider": PASSI_PROVIDER,
        "auditor": "Camille Martin (auditrice fictive)",
        "report_date": (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=20)).isoformat(),
        "application_name": name,
        "application_version": version,
        "application_type": "application_web",
        "criteria": criteria,
        "summary": {
            "application_name": name,
            "application_version": version,
            "description": "Test d'intrusion de démonstration",
            "application_type": "application_web",
            "result": RESULT_ELIGIBLE,
        },
    }


def deposit_evidence(
    company: Actor,
    cid: int,
    *,
    pentest_data: dict[str, Any] | None = None,
    pentest_pdf: bytes | None = None,
    conformity_report: str | None = None,
) -> None:
    """Deposit what every chapter of the candidature expects, as the candidate would.

    ``pentest_pdf``: the auditor's signed report (``pentest_report.signed_report``) backing
    ``pentest_data``."""
    detail = company.call("GET", f"/api/candidatures/{cid}")
    requirements = {r["id"]: r for r in company.call("GET", "/api/referentiel")["requirements"]}
    cnda_pdf = one_page_pdf(["Attestation CNDA (démonstration)", "N° CNDA-DEMO-0001", f"Candidature {cid}"])
    cnda = company.upload(cnda_pdf, "application/pdf")
    report = company.upload(pentest_pdf, "application/pdf") if pentest_pdf is not None else None
    for chapter in detail["chapters"]:
        for rid in chapter["requirement_ids"]:
            for kind in requirements[rid]["evidence"]:
                body: dict[str, Any] = {"requirement_id": rid, "kind": kind}
                if kind == "document":
                    body["description"] = f"Démonstration : {requirements[rid]['text'][:120]}"
                elif kind == "test_intrusion" and pentest_data is not None and report is not None:
                    body.update(pentest=pentest_data, file_sha256=report["sha256"])
                elif kind == "rapport_conformite" and conformity_report is not None:
                    body["conformity_report"] = conformity_report
                elif kind == "attestation_cnda":
                    body.update(
                        cnda={"number": "CNDA-DEMO-0001", "issued_on": "2026-01-15"}, file_sha256=cnda["sha256"]
                    )
                else:
                    continue  # certificates are recorded by the platform when ordered
                company.call("POST", f"/api/candidatures/{cid}/evidence", body)


def submit_and_accept_chapters(company: Actor, verifier: Actor, cid: int) -> int:
    detail = company.call("GET", f"/api/candidatures/{cid}")
    for chapter in detail["chapters"]:
        company.call("POST", f"/api/candidatures/{cid}/chapters/{chapter['chapter_id']}/submit")
        verifier.call(
            "POST", f"/api/candidatures/{cid}/chapters/{chapter['chapter_id']}/review", {"decision": "accepter"}
        )
    return len(detail["chapters"])


def complete_parcours(company: Actor, cid: int) -> None:
    """Declare, in order, the parcours steps the college waits for (those before the grant)."""
    for step in company.call("GET", f"/api/candidatures/{cid}/parcours"):
        if step["status"] != "fait" and not step["by_platform"] and not step.get("after_grant"):
            company.call("POST", f"/api/candidatures/{cid}/parcours/{step['id']}")


def new_csr(common_name: str) -> tuple[str, str]:
    """An operator's own key pair and certificate request (PEM): the key stays here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode()


def grant(college: Actor, company: Actor, cid: int) -> Any:
    """The college grants the candidature (once its parcours allows it); return the
    habilitation as its holder sees it."""
    complete_parcours(company, cid)
    college.call("POST", f"/api/candidatures/{cid}/decision", {"decision": "accorder", "reason": "conforme"})
    detail = company.call("GET", f"/api/candidatures/{cid}")
    return company.call("GET", f"/api/habilitations/{detail['habilitation_id']}")
