"""/healthz and /readyz on the API AS and resource services, over real HTTPS without a client certificate."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from confiance.core.trustlist import TrustListSettings
from tests.fixtures_api import ApiHandle
from tests.support import TrustListServer, habilitation


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_live_and_ready_without_client_certificate(api_services: ApiHandle) -> None:
    with api_services.client(None) as http:
        for base, component in ((api_services.as_url, "api-as"), (api_services.rs_url, "api-rs")):
            for path in ("/healthz", "/health"):
                r = http.get(base + path)
                assert r.status_code == 200 and r.json() == {"status": "ok", "component": component}
            r = http.get(base + "/readyz")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["status"] == "ok"
            assert body["checks"]["signing_key"]["ok"] is True
            assert "kid=" in body["checks"]["signing_key"]["detail"]
            assert r.headers["cache-control"] == "no-store"
        assert http.get(api_services.rs_url + "/readyz").json()["checks"]["as_keys"]["ok"] is True


@pytest.fixture
def guichet() -> Iterator[TrustListServer]:
    g = TrustListServer().start()
    yield g
    g.stop()


def test_as_not_ready_while_it_has_no_trust_list_and_says_why(api_services_factory, guichet: TrustListServer) -> None:
    guichet.up = False
    api: ApiHandle = api_services_factory(
        trust_list=TrustListSettings(
            url=guichet.url + "/trust-list",
            jwks_url=guichet.url + "/trust-list/jwks",
            issuer="guichet",
            refresh_seconds=0.3,
        )
    )
    with api.client(None) as http:
        r = http.get(api.as_url + "/readyz")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["trust_list"]["ok"] is False
        assert "liste de confiance" in body["checks"]["trust_list"]["detail"]
        assert body["checks"]["signing_key"]["ok"] is True
        assert http.get(api.as_url + "/healthz").status_code == 200  # alive all the same
        guichet.habilitations = [habilitation(1, "ELP", "BAS", "X")]
        guichet.up = True
        assert _wait(lambda: http.get(api.as_url + "/readyz").status_code == 200)
        assert "1 habilitation" in http.get(api.as_url + "/readyz").json()["checks"]["trust_list"]["detail"]
