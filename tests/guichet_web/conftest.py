"""Fixtures for the guichet web UI: a migrated service, the web routes over real HTTPS,
accounts for every role, and Debian's Chromium driven by Playwright.

The browser is never downloaded: /usr/bin/chromium (the project's install steps put it
there) or skip — except under CI=true, where its absence fails the run.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette

from confiance.core.jose import KeyStore
from confiance.core.server import ServerThread
from confiance.core.tls import ClientAuth
from confiance.guichet import schemas as sc
from confiance.guichet.db import Database
from confiance.guichet.domain.model import AnsRole, OrgRole
from confiance.guichet.files import FileStore
from confiance.guichet.services import GuichetService, JwksReportVerifier, ServiceSettings
from confiance.guichet.web import WebSettings, web_routes
from confiance.pki import IssuedCertificate, Pki
from tests.support import start_https

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
PASSWORD = "mot-de-passe-très-solide"
LUHN_SIRENS = ["732829320", "552100554", "542065479", "443061841"]


@dataclass
class Site:
    url: str
    service: GuichetService
    conformity_keys: KeyStore
    accounts: dict[str, str]  # who -> email
    spki: str


def _spki_b64(cert_path: str) -> str:
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def build_service(url: str, root: Path, pki: Pki, keys: KeyStore) -> GuichetService:
    svc = GuichetService(
        Database(url),
        FileStore(root / "files"),
        KeyStore(root / "keys.json", algs=("ES256",)),
        settings=ServiceSettings(issuer="https://guichet.test", max_upload_bytes=256 * 1024),
        pki=pki,
        conformity_verifier=JwksReportVerifier(keys.jwks()),
    )
    svc.initialize()
    return svc


def seed_accounts(svc: GuichetService) -> dict[str, str]:
    """Staff for each ANS role, and two companies (A: mandataire + salarié, B: mandataire + salarié)."""
    acc = {}
    for who, role in (("verificateur", AnsRole.VERIFIER), ("college", AnsRole.COLLEGE), ("admin", AnsRole.ADMIN)):
        email = f"{who}@ans.example"
        svc.bootstrap_account(email, who.capitalize() + " ANS", PASSWORD, [role])
        acc[who] = email
    for key, org_name, siren in (("a", "Proxytech SAS", LUHN_SIRENS[0]), ("b", "Logisanté SARL", LUHN_SIRENS[1])):
        org = sc.OrganisationIn(name=org_name, country="FR", siren=siren)
        email = f"mandataire@{key}.example"
        svc.bootstrap_account(email, f"Mandataire {key.upper()}", PASSWORD, org=org, org_role=OrgRole.MANDATAIRE)
        acc[f"mandataire_{key}"] = email
        salarie = f"salarie@{key}.example"
        svc.bootstrap_account(salarie, f"Salarié {key.upper()}", PASSWORD, org=org, org_role=OrgRole.SALARIE)
        acc[f"salarie_{key}"] = salarie
    return acc


def make_app(svc: GuichetService, **settings: Any) -> Starlette:
    return Starlette(routes=web_routes(svc, WebSettings(secret_key="cle-de-test-" + "x" * 20, **settings)))


@pytest.fixture(scope="module")
def conformity_keys() -> KeyStore:
    return KeyStore(None, algs=("ES256",))


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, server_cert: IssuedCertificate, conformity_keys: KeyStore
) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("guichet-web")
    svc = build_service(f"sqlite:///{root / 'guichet.db'}", root, pki, conformity_keys)
    accounts = seed_accounts(svc)
    server: ServerThread = start_https(make_app(svc), pki, server_cert, ClientAuth.NONE)
    yield Site(server.url, svc, conformity_keys, accounts, _spki_b64(server_cert.cert_path))
    server.stop()
    svc.db.dispose()


@pytest.fixture(scope="module")
def browser(server_cert: IssuedCertificate) -> Iterator[Any]:
    """One Chromium per test module; each test user gets its own context (cookies).

    Not session-scoped: Playwright's sync API keeps an event loop running in the main
    thread while it is open, which would break every later test module of the same
    worker that calls ``asyncio.run``.
    """
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail("/usr/bin/chromium absent (CI=true : le navigateur est obligatoire)")
        pytest.skip("/usr/bin/chromium absent : tests navigateur ignorés (installez le paquet Debian chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                # Trust exactly the test server's key (pinned SPKI), not "any certificate".
                f"--ignore-certificate-errors-spki-list={_spki_b64(server_cert.cert_path)}",
            ],
        )
        yield b
        b.close()


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def login(browser: Any, site: Site, who: str) -> Any:
    """A fresh browser context (its own cookies) signed in as ``who``; returns the page."""
    ctx = browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(10_000)
    page = ctx.new_page()
    page.goto(site.url + "/connexion")
    page.get_by_label("Adresse électronique").fill(site.accounts[who])
    page.get_by_label("Mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Se connecter").click()
    page.wait_for_load_state()
    assert "/connexion" not in page.url, page.content()[:2000]
    return page
