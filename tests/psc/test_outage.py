"""The admin outage switch over real HTTPS: the protocol endpoints answer 503 for a bounded
time (injected clock) or until ``DELETE``; the admin API and health stay up; every worker
sharing the store sees it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confiance.pki import IssuedCertificate, Pki
from tests.fixtures_psc import PscHandle, build_psc
from tests.psc.conftest import Clock

CIBA = "urn:openid:params:grant-type:ciba"


def _admin(psc: PscHandle) -> dict[str, str]:
    return {"Authorization": f"Bearer {psc.admin_token}"}


def _protocol_statuses(psc: PscHandle) -> dict[str, int]:
    """What a relying party gets from each endpoint the proxy calls."""
    form = {"scope": "openid", "login_hint": psc.national_id, "binding_message": "12"}
    with psc.client("secret") as http:
        auth = psc.client_auth("secret")
        return {
            "discovery": http.get(psc.discovery_url).status_code,
            "ciba": http.post(psc.ciba_endpoint, data={**form, **auth}).status_code,
            "token": http.post(psc.token_endpoint, data={"grant_type": CIBA, "auth_req_id": "x", **auth}).status_code,
            "introspect": http.post(psc.token_endpoint + "/introspect", data={"token": "x", **auth}).status_code,
            "logout": http.post(psc.issuer + "/protocol/openid-connect/logout", data={}).status_code,
        }


@pytest.fixture
def clocked(psc_sandbox_factory: Callable[..., PscHandle]) -> tuple[PscHandle, Clock]:
    clock = Clock()
    return psc_sandbox_factory(clock=clock), clock


def test_outage_answers_503_on_protocol_endpoints_until_it_expires(clocked: tuple[PscHandle, Clock]) -> None:
    psc, clock = clocked
    before = _protocol_statuses(psc)
    assert 503 not in before.values(), before
    with psc.client("none") as http:
        on = http.post(psc.url + "/sandbox/admin/outage", json={"seconds": 30}, headers=_admin(psc))
        assert on.status_code == 200 and on.json() == {"active": True, "mode": "503", "remaining_seconds": 30.0}
        during = _protocol_statuses(psc)
        assert set(during.values()) == {503}, during
        r = http.post(psc.token_endpoint, data={})
        assert r.json()["error"] == "temporarily_unavailable" and r.headers["retry-after"] == "1"
        # the admin API, the e-CPS page and health stay up: the tool can still end the outage
        assert http.get(psc.url + "/sandbox/admin/identities", headers=_admin(psc)).status_code == 200
        assert http.get(psc.ecps_url).status_code == 200
        assert http.get(psc.url + "/health").status_code == 200
        clock.advance(29.9)
        assert http.get(psc.discovery_url).status_code == 503
        clock.advance(0.2)  # bounded: it ends by itself
        assert http.get(psc.url + "/sandbox/admin/outage", headers=_admin(psc)).json() == {"active": False}
    assert _protocol_statuses(psc) == before


def test_delete_ends_the_outage(clocked: tuple[PscHandle, Clock]) -> None:
    psc, _ = clocked
    with psc.client("none") as http:
        http.post(psc.url + "/sandbox/admin/outage", json={"seconds": 600, "mode": "503"}, headers=_admin(psc))
        assert http.get(psc.discovery_url).status_code == 503
        assert http.delete(psc.url + "/sandbox/admin/outage", headers=_admin(psc)).json() == {"active": False}
        assert http.get(psc.discovery_url).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"seconds": 0},
        {"seconds": -5},
        {"seconds": 601},
        {"seconds": "10"},
        {"seconds": True},
        [],
        {"seconds": 5, "mode": "close"},
    ],
)
def test_outage_request_is_validated(clocked: tuple[PscHandle, Clock], body: Any) -> None:
    psc, _ = clocked
    with psc.client("none") as http:
        r = http.post(psc.url + "/sandbox/admin/outage", json=body, headers=_admin(psc))
        assert r.status_code == 400, r.text
        assert http.get(psc.discovery_url).status_code == 200


def test_outage_needs_the_admin_token(clocked: tuple[PscHandle, Clock]) -> None:
    psc, _ = clocked
    with psc.client("none") as http:
        for method in ("GET", "POST", "DELETE"):
            r = http.request(method, psc.url + "/sandbox/admin/outage", json={"seconds": 30})
            assert r.status_code == 401
            r = http.request(
                method,
                psc.url + "/sandbox/admin/outage",
                json={"seconds": 30},
                headers={"Authorization": "Bearer " + "x" * 32},
            )
            assert r.status_code == 401
        assert http.get(psc.discovery_url).status_code == 200


def test_every_worker_sharing_the_store_sees_the_outage(
    pki: Pki, server_cert: IssuedCertificate, tmp_path: Path
) -> None:
    clock = Clock()
    store = f"sqlite:///{tmp_path / 'psc.sqlite3'}"
    a = build_psc(pki, server_cert, clock=clock, store=store)
    b = build_psc(pki, server_cert, clock=clock, store=store, admin_token=a.admin_token)
    b.sandbox.shared.interval = 0.0  # no reload throttle: the test does not wait on wall time
    try:
        with a.client("none") as http:
            http.post(a.url + "/sandbox/admin/outage", json={"seconds": 30}, headers=_admin(a))
            assert http.get(b.url + a.discovery_url.removeprefix(a.url)).status_code == 503
            http.delete(a.url + "/sandbox/admin/outage", headers=_admin(a))
            assert http.get(b.url + a.discovery_url.removeprefix(a.url)).status_code == 200
    finally:
        a.stop()
        b.stop()
