"""The web layer's own SQL (sessions, lockout, read models) on PostgreSQL: every list page
with its filters, over real HTTPS (no browser needed for this)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import httpx
import pytest

from confiance.core.jose import KeyStore
from confiance.core.tls import ClientAuth
from confiance.guichet import schemas as sc
from confiance.guichet.domain.model import Role
from confiance.pki import IssuedCertificate, Pki
from tests.support import start_https

from .conftest import PASSWORD, build_service, make_app, seed_accounts
from .factory import principal, solution

pytestmark = [pytest.mark.postgres]


def _login(http: httpx.Client, email: str) -> None:
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', http.get("/connexion").text).group(1)
    r = http.post("/connexion", data={"csrf": token, "email": email, "password": PASSWORD, "next": "/"})
    assert r.status_code == 303, r.text[:300]


def test_list_pages_and_sessions_on_postgresql(
    postgres_schema_url: str, tmp_path: Path, pki: Pki, server_cert: IssuedCertificate
) -> None:
    keys = KeyStore(None, algs=("ES256",))
    svc = build_service(postgres_schema_url, tmp_path, pki, keys)
    acc = seed_accounts(svc)
    a, ver = principal(svc, acc["mandataire_a"]), principal(svc, acc["verificateur"])
    proxy = solution(svc, a, "Proxy PG", proxy=True)
    # Evidence without files: on PostgreSQL the registry's file upload currently fails
    # (audit target "fichier:<sha256>" is 72 chars, audit_log.target is VARCHAR(64)).
    c = svc.create_candidature(
        a, sc.CandidatureIn(role=Role.ELP, solution_id=proxy.id, software_name="Proxy PG", software_version="1.0")
    )
    svc.submit_form(
        a, c.id, sc.CommitmentsIn(respect_referentiels_cgu=True, exactitude_informations=True, acceptation_audits=True)
    )
    svc.validate_form(ver, c.id, sc.ActionIn())
    for rid in ("TLS-01", "MTLS-01"):
        svc.deposit_evidence(
            a, c.id, sc.EvidenceIn(requirement_id=rid, kind="document", description="Configuration TLS")
        )
    svc.submit_chapter(a, c.id, "transport", sc.ActionIn())
    svc.review_chapter(ver, c.id, "transport", sc.ChapterReviewIn(decision="complement", reason="Précisez les suites"))
    svc.deposit_evidence(a, c.id, sc.EvidenceIn(requirement_id="TLS-01", kind="document", description="Suites ANSSI"))
    svc.submit_chapter(a, c.id, "transport", sc.ActionIn())
    server = start_https(make_app(svc), pki, server_cert, ClientAuth.NONE)
    try:
        ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
        with httpx.Client(base_url=server.url, verify=ctx, timeout=30) as http:
            _login(http, acc["college"])
            for path, expect in (
                ("/ans/college", "Aucun dossier"),
                ("/ans/registre", "Aucune habilitation"),
                ("/ans/registre?vue=valides&profil=ELP&q=proxy%20pg", "Aucune habilitation"),
                ("/ans/registre?vue=expirent", "Aucune habilitation"),
                ("/ans/registre?vue=a_risque", "Aucune habilitation"),
                ("/ans/audit", "chapitre.soumettre_chapitre"),
                ("/ans/audit?action=chapitre.&cible=candidature:&acteur=verif", "chapitre.demander_complement"),
                ("/ans/audit?verifier=1", "Chaîne intègre"),
                ("/habilitations-publiques?profil=ELP", "Aucune habilitation en vigueur"),
                ("/ans/registre/graphe", "Aucune habilitation"),
            ):
                r = http.get(path)
                assert r.status_code == 200 and expect in r.text, (path, r.status_code)
        with httpx.Client(base_url=server.url, verify=ctx, timeout=30) as http:
            _login(http, acc["verificateur"])
            for path in (
                "/ans/instruction",
                "/ans/instruction?type=chapitre&profil=ELU&q=x",
                "/ans/instruction?type=formulaire&page=2",
            ):
                assert http.get(path).status_code == 200, path
        with httpx.Client(base_url=server.url, verify=ctx, timeout=30) as http:
            _login(http, acc["mandataire_a"])
            r = http.get("/tableau-de-bord")
            assert r.status_code == 200 and "Proxy PG" in r.text and "34 %" in r.text
            r = http.get(f"/candidatures/{c.id}")
            assert r.status_code == 200 and "soumis à l&#39;ANS" in r.text
    finally:
        server.stop()
        svc.db.dispose()
