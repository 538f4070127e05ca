"""Test helpers for the guichet: valid identifiers, evidence payloads, a scripted API client."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from confiance.core.jose import KeyStore
from confiance.demo.pentest_report import one_page_pdf
from confiance.guichet.domain.identifiers import luhn_ok

PDF = b"%PDF-1.4\n% rapport de test d'intrusion\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"
_counter = [10_000_000]


def luhn_complete(prefix: str) -> str:
    """Append the digit that makes ``prefix`` Luhn-valid."""
    for d in "0123456789":
        if luhn_ok(prefix + d):
            return prefix + d
    raise AssertionError("unreachable")


def new_siren() -> str:
    _counter[0] += 7
    return luhn_complete(str(_counter[0])[:8])


def report_pdf(lines: list[str], *, signed: bool = True) -> bytes:
    """A one-page PDF whose first page states ``lines``; ``signed``: with a signature field
    that holds no signature (its presence only: what a forger would add)."""
    return one_page_pdf(lines, empty_signature_field=signed)


def new_csr(cn: str = "service") -> tuple[ec.EllipticCurvePrivateKey, str]:
    """An operator's own key pair and its PKCS#10 request (PEM): the key never leaves here."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def pentest_payload(
    name: str,
    version: str,
    *,
    medium_ko: int = 0,
    high_ko: int = 0,
    age_days: int = 30,
    provider: str = "Audit Sécurité Démo",
    result: str | None = None,
    today: dt.date | None = None,
) -> dict[str, Any]:
    """A typed pentest report dated ``age_days`` before ``today`` (the service's clock
    when the caller has one; the real date only for tests that never move it)."""
    today = today or dt.datetime.now(dt.UTC).date()
    criteria = [{"id": f"M{i}", "severity": "moyenne", "result": "KO"} for i in range(medium_ko)]
    criteria += [{"id": f"H{i}", "severity": "haute", "result": "KO"} for i in range(high_ko)]
    criteria += [
        {"id": f"OK{i}", "severity": s, "result": "OK"} for i, s in enumerate(["haute", "moyenne", "faible"] * 3)
    ]
    if result is None:
        result = "L'application peut être référencée"
    return {
        "provider": provider,
        "auditor": "Camille Martin",
        "report_date": (today - dt.timedelta(days=age_days)).isoformat(),
        "application_name": name,
        "application_version": version,
        "application_type": "application_web",
        "criteria": criteria,
        "summary": {
            "application_name": name,
            "application_version": version,
            "description": "démo",
            "application_type": "application_web",
            "result": result,
        },
    }


def conformity_report(
    keys: KeyStore, version: str, *, failed: int = 0, age_days: int = 1, now: dt.datetime | None = None
) -> str:
    """A signed conformity report dated ``age_days`` before ``now`` (see ``pentest_payload``)."""
    now = now or dt.datetime.now(dt.UTC)
    checks = [
        {"id": f"C{i}", "name": f"contrôle {i}", "requirement": "TOK-02", "passed": i >= failed, "evidence": "ok"}
        for i in range(5)
    ]
    payload = {
        "tool": {"name": "confiance-conformite", "version": "1.0"},
        "proxy": {"url": "https://127.0.0.1:8443", "version": version},
        "date": (now - dt.timedelta(days=age_days)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "checks": checks,
        "summary": {"passed": 5 - failed, "failed": failed},
    }
    return keys.sign_bytes(json.dumps(payload).encode(), alg="ES256")


@dataclass
class Client:
    http: httpx.Client
    token: str | None = None

    def _h(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, headers=self._h(), **kw)

    def post(self, path: str, json_body: Any = None, **kw: Any) -> httpx.Response:
        return self.http.post(
            path, json=json_body if json_body is not None else {}, headers={**self._h(), **kw.pop("headers", {})}, **kw
        )

    def patch(self, path: str, json_body: Any) -> httpx.Response:
        return self.http.patch(path, json=json_body, headers=self._h())

    def ok(self, r: httpx.Response, status: int = 200) -> Any:
        assert r.status_code == status, (r.status_code, r.text)
        return r.json() if r.content else None


EDITOR_STEPS = ["isc_account", "psc_api_access", "authenticated_space", "bas_connection", "test_mie"]


@dataclass
class Guichet:
    """Drives the API as each actor would (company accounts, verifier, college, admin)."""

    http: httpx.Client
    verifier: Client
    college: Client
    admin: Client
    conformity_keys: KeyStore
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    """The service's clock: evidence is dated from it, so a test that moves it stays coherent."""
    orgs: dict[str, Client] = field(default_factory=dict)

    def company(self, name: str) -> Client:
        if name in self.orgs:
            return self.orgs[name]
        email = f"mandataire@{name.lower().replace(' ', '-')}.example"
        c = Client(self.http)
        acc = c.ok(
            c.post(
                "/api/auth/register",
                {
                    "email": email,
                    "name": "Mandataire " + name,
                    "password": "mot-de-passe-solide",
                    "organisation": {"name": name, "country": "FR", "siren": new_siren()},
                },
            ),
            201,
        )
        self.verifier.ok(self.verifier.post(f"/api/accounts/{acc['id']}/validate"))
        tok = c.ok(c.post("/api/auth/token", {"email": email, "password": "mot-de-passe-solide"}))
        c.token = tok["access_token"]
        self.orgs[name] = c
        return c

    def solution(self, company: Client, name: str, kind: str) -> dict[str, Any]:
        comps = (
            [{"kind": "PROXY", "name": name + "-proxy"}]
            if kind == "proxy"
            else [{"kind": "LPS", "name": name + "-lps"}]
        )
        return company.ok(company.post("/api/solutions", {"name": name, "kind": kind, "components": comps}), 201)

    def candidature(
        self, company: Client, role: str, solution: dict[str, Any], version: str = "2.1.0", **extra: Any
    ) -> httpx.Response:
        return company.post(
            "/api/candidatures",
            {
                "role": role,
                "solution_id": solution["id"],
                "software_name": solution["name"],
                "software_version": version,
                **extra,
            },
        )

    def to_evidence(self, company: Client, cand: dict[str, Any]) -> dict[str, Any]:
        cid = cand["id"]
        company.ok(
            company.post(
                f"/api/candidatures/{cid}/submit",
                {"respect_referentiels_cgu": True, "exactitude_informations": True, "acceptation_audits": True},
            )
        )
        self.verifier.ok(self.verifier.post(f"/api/candidatures/{cid}/validate", {}))
        return dict(company.ok(company.get(f"/api/candidatures/{cid}")))

    def deposit_all(self, company: Client, cid: int, *, pentest: dict[str, Any] | None = None) -> dict[str, Any]:
        """Deposit every expected piece of evidence (documents, pentest, conformity, certificates)."""
        detail = company.ok(company.get(f"/api/candidatures/{cid}"))
        role = detail["role"]
        if role in ("ELU", "ELP"):
            for step in EDITOR_STEPS:
                company.ok(company.post(f"/api/candidatures/{cid}/parcours/{step}"))
            sol = company.ok(company.get(f"/api/solutions/{detail['solution_id']}"))
            for comp in sol["components"]:
                company.ok(company.post(f"/api/candidatures/{cid}/certificates", {"component_id": comp["id"]}), 201)
        ref = {r["id"]: r for r in company.ok(company.get("/api/referentiel"))["requirements"]}
        pdf = company.ok(
            company.http.post(
                "/api/files",
                content=PDF + str(cid).encode(),
                headers={**company._h(), "Content-Type": "application/pdf"},
            ),
            201,
        )
        for ch in detail["chapters"]:
            for rid in ch["requirement_ids"]:
                for kind in ref[rid]["evidence"]:
                    body: dict[str, Any] = {"requirement_id": rid, "kind": kind}
                    if kind == "document":
                        body["description"] = f"preuve pour {rid}"
                    elif kind == "test_intrusion":
                        body["pentest"] = pentest or pentest_payload(
                            detail["software_name"], detail["software_version"], today=self.clock().date()
                        )
                        body["file_sha256"] = pdf["sha256"]
                    elif kind == "rapport_conformite":
                        body["conformity_report"] = conformity_report(
                            self.conformity_keys, detail["software_version"], now=self.clock()
                        )
                    elif kind == "attestation_cnda":
                        body["cnda"] = {
                            "number": "CNDA-2025-001",
                            "issued_on": (self.clock().date() - dt.timedelta(days=180)).isoformat(),
                        }
                        body["file_sha256"] = pdf["sha256"]
                    else:
                        continue  # certificates: issued above
                    company.ok(company.post(f"/api/candidatures/{cid}/evidence", body), 201)
        return dict(company.ok(company.get(f"/api/candidatures/{cid}")))

    def review_all(self, company: Client, cid: int) -> dict[str, Any]:
        detail = company.ok(company.get(f"/api/candidatures/{cid}"))
        for ch in detail["chapters"]:
            company.ok(company.post(f"/api/candidatures/{cid}/chapters/{ch['chapter_id']}/submit"))
            self.verifier.ok(
                self.verifier.post(
                    f"/api/candidatures/{cid}/chapters/{ch['chapter_id']}/review", {"decision": "accepter"}
                )
            )
        return dict(company.ok(company.get(f"/api/candidatures/{cid}")))

    def complete_parcours(self, company: Client, cid: int) -> None:
        """Declare, in order, every step the candidate declares itself before the grant."""
        for step in company.ok(company.get(f"/api/candidatures/{cid}/parcours")):
            if step["status"] != "fait" and not step["by_platform"] and not step["after_grant"]:
                company.ok(company.post(f"/api/candidatures/{cid}/parcours/{step['id']}"))

    def grant(self, company: Client, cid: int) -> dict[str, Any]:
        self.complete_parcours(company, cid)
        self.college.ok(self.college.post(f"/api/candidatures/{cid}/decision", {"decision": "accorder"}))
        detail = company.ok(company.get(f"/api/candidatures/{cid}"))
        return dict(company.ok(company.get(f"/api/habilitations/{detail['habilitation_id']}")))

    def habilitate(self, company: Client, role: str, solution: dict[str, Any], **extra: Any) -> dict[str, Any]:
        cand = company.ok(self.candidature(company, role, solution, **extra), 201)
        self.to_evidence(company, cand)
        self.deposit_all(company, cand["id"])
        self.review_all(company, cand["id"])
        return self.grant(company, cand["id"])
