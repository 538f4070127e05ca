"""``/healthz`` and ``/readyz`` (core.health) on the sandbox, over TLS: readiness names what fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from confiance.core.trustlist import TrustListSettings
from confiance.pki import IssuedCertificate, Pki
from tests.fixtures_psc import PscHandle, build_psc
from tests.support import TrustListServer


def _get(psc: PscHandle, path: str) -> httpx.Response:
    with psc.client("none") as http:
        return http.get(psc.url + path)


def test_live_and_ready(psc_sandbox: PscHandle) -> None:
    live = _get(psc_sandbox, "/healthz")
    assert live.status_code == 200 and live.json()["status"] == "ok"
    ready = _get(psc_sandbox, "/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert set(checks) == {"store", "signing_key"}
    assert checks["store"] == {"ok": True, "detail": "memory"}
    assert checks["signing_key"]["detail"].startswith("RS256 kid=")
    assert _get(psc_sandbox, "/health").json()["worker"] > 0  # `up` and the worker view still use it


@pytest.fixture
def sqlite_psc(pki: Pki, server_cert: IssuedCertificate, tmp_path: Path) -> Iterator[PscHandle]:
    psc = build_psc(pki, server_cert, store=f"sqlite:///{tmp_path / 'psc.sqlite3'}")
    yield psc
    psc.stop()


def test_unusable_store_makes_the_sandbox_unready(sqlite_psc: PscHandle) -> None:
    assert _get(sqlite_psc, "/readyz").json()["checks"]["store"] == {"ok": True, "detail": "sqlite"}
    sqlite_psc.sandbox.store.close()  # the state database is gone from under the worker
    ready = _get(sqlite_psc, "/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable" and body["checks"]["store"]["ok"] is False
    assert body["checks"]["store"]["detail"]  # says why
    assert body["checks"]["signing_key"]["ok"] is True
    assert _get(sqlite_psc, "/healthz").status_code == 200  # alive, just not ready


def test_unusable_trust_list_makes_the_sandbox_unready(psc_sandbox_factory) -> None:
    guichet = TrustListServer().start()
    try:
        guichet.up = False  # the guichet answers 503: no list was ever fetched
        settings = TrustListSettings(
            url=guichet.url + "/trust-list", jwks_url=guichet.url + "/trust-list/jwks", issuer="guichet"
        )
        psc: PscHandle = psc_sandbox_factory(trust_list=settings)
        ready = _get(psc, "/readyz")
        assert ready.status_code == 503, ready.text
        trust = ready.json()["checks"]["trust_list"]
        assert trust["ok"] is False and trust["detail"]
        assert ready.json()["checks"]["store"]["ok"] is True
    finally:
        guichet.stop()
