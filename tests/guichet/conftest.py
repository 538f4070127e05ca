"""Guichet fixtures: a migrated service on a temp SQLite file, served over real HTTPS."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher

from confiance.core.jose import KeyStore
from confiance.core.tls import ClientAuth
from confiance.guichet.api import create_app
from confiance.guichet.db import Database
from confiance.guichet.domain.model import AnsRole
from confiance.guichet.files import FileStore
from confiance.guichet.services import GuichetService, JwksReportVerifier, ServiceSettings
from confiance.pki import IssuedCertificate, Pki
from tests.support import start_https

from .helpers import Client, Guichet


@pytest.fixture(scope="session")
def conformity_keys() -> KeyStore:
    """The conformity tool's signing keys (its JWKS is what the guichet trusts)."""
    return KeyStore(None, algs=("ES256",))


def make_service(url: str, root: Path, pki: Pki, conformity_keys: KeyStore) -> GuichetService:
    svc = GuichetService(
        Database(url),
        FileStore(root / "files"),
        KeyStore(root / "keys.json", algs=("ES256",)),
        settings=ServiceSettings(issuer="https://guichet.test", max_upload_bytes=64 * 1024),
        pki=pki,
        conformity_verifier=JwksReportVerifier(conformity_keys.jwks()),
        # argon2id still, with test-sized cost (production keeps the library defaults)
        password_hasher=PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1),
    )
    svc.initialize()
    return svc


@pytest.fixture
def guichet_service(tmp_path: Path, pki: Pki, conformity_keys: KeyStore) -> Iterator[GuichetService]:
    svc = make_service(f"sqlite:///{tmp_path / 'guichet.db'}", tmp_path, pki, conformity_keys)
    yield svc
    svc.db.dispose()


@pytest.fixture
def guichet_server(guichet_service: GuichetService, pki: Pki, server_cert: IssuedCertificate) -> Iterator[str]:
    server = start_https(create_app(guichet_service), pki, server_cert, ClientAuth.NONE)
    yield server.url
    server.stop()


def open_guichet(service: GuichetService, url: str, pki: Pki, conformity_keys: KeyStore) -> Guichet:
    """A Guichet driver on a running server, with one ANS account per role."""
    http = httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=str(pki.ca_bundle)), timeout=30)
    staff = {}
    for who, role in (("verificateur", AnsRole.VERIFIER), ("college", AnsRole.COLLEGE), ("admin", AnsRole.ADMIN)):
        service.bootstrap_account(f"{who}@ans.example", who, "mot-de-passe-solide", [role])
        staff[who] = Client(http, service.issue_token_for(f"{who}@ans.example").access_token)
    return Guichet(
        http, staff["verificateur"], staff["college"], staff["admin"], conformity_keys, clock=lambda: service.clock()
    )


@pytest.fixture
def guichet(
    guichet_service: GuichetService, guichet_server: str, pki: Pki, conformity_keys: KeyStore
) -> Iterator[Guichet]:
    g = open_guichet(guichet_service, guichet_server, pki, conformity_keys)
    yield g
    g.http.close()
