"""Shared fixtures: a session PKI, HTTPS test servers, PostgreSQL and Redis URLs.

PostgreSQL/Redis tests take their URLs from the environment. Where a server is absent the
test is skipped with the reason, except under CI=true where absence is a failure, so CI
always exercises both backends.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from confiance.pki import IssuedCertificate, Pki

pytest_plugins = ["tests.fixtures_psc", "tests.fixtures_api"]

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get("CONFIANCE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CONFIANCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _require(url: str, default_port: int, what: str) -> str:
    if _reachable(url, default_port):
        return url
    msg = f"{what} injoignable à {url}"
    if IN_CI:
        pytest.fail(f"{msg} (CI=true : ce serveur est obligatoire)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return _require(POSTGRES_URL, 5432, "PostgreSQL")


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema per test (search_path), dropped afterwards."""
    import sqlalchemy as sa

    from confiance.core.storage import make_engine

    schema = "t_" + uuid.uuid4().hex[:12]
    engine = make_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return _require(REDIS_URL, 6379, "Redis")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.init(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def server_cert(pki: Pki) -> IssuedCertificate:
    return pki.issue_server("test-server")
