"""Token lifecycle against the real PSC sandbox (short lifetimes) and the real API AS:
PSC refresh then re-exchange, API-token renewal, one refresh at a time, clean end of
sessions (revocation at the AS, end-session at PSC) on disconnect, expiry, refresh failure.

Every deadline the proxy enforces is read from its injected clock (harness.ManualClock),
which these tests move past the deadline: PSC's tokens live long in real time, so nothing
here depends on how fast a loaded machine runs. Waiting for a background effect (the
sweeper, a revocation) polls the state itself, never a fixed delay."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from confiance.core.tls import client_context
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle
from tests.proxy.harness import ManualClock, RunningProxy, connect_body, proxy_config, start_proxy

PSC_ACCESS = 30.0  # real seconds at PSC; the proxy's clock is moved past it
WAIT = 60.0  # a bound for background effects to show, never a margin a test relies on


@pytest.fixture(scope="module")
def short_psc(psc_sandbox_factory) -> PscHandle:
    return psc_sandbox_factory(lifetimes={"access_token": PSC_ACCESS, "refresh_token": 600})


@pytest.fixture(scope="module")
def short_api(api_services_factory, short_psc) -> ApiHandle:
    return api_services_factory(psc=short_psc, cache_seconds=0, token_lifetime=3600)


def _start(pki, server_cert, psc, api, tmp, clock: ManualClock, **sessions: Any) -> RunningProxy:
    cfg = proxy_config(
        pki, server_cert, psc, api, tmp, sessions={"sweep_interval": 0.2, "psc_token_margin": 0.2, **sessions}
    )
    return start_proxy(cfg, pki, clock=clock)


def _until(done: Any) -> bool:
    """Poll a condition on state (background work: sweeper, revocation) up to WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def proxy(pki, server_cert, short_psc, short_api, tmp_path_factory, clock: ManualClock) -> Iterator[RunningProxy]:
    # API tokens live 1 h; a margin of 1 h - 1.5 s makes them due for renewal 1.5 s after issue.
    p = _start(
        pki, server_cert, short_psc, short_api, tmp_path_factory.mktemp("tok"), clock, api_token_margin=3600 - 1.5
    )
    yield p
    p.stop()


def _sign_body(nid: str, psc: PscHandle, conn: dict[str, str]) -> dict[str, str]:
    return {
        "nationalId": nid,
        "clientID": psc.mtls_client_id,
        "proxy_session_id": conn["proxy_session_id"],
        "session_state": conn["session_state"],
    }


def _counter(p: RunningProxy, kind: str, outcome: str) -> float:
    value: float = p.core.metrics.refreshes.labels(kind, outcome)._value.get()
    return value


def _session(p: RunningProxy, sid: str) -> Any:
    return asyncio.run(p.core.store.get(sid))


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


def _psc_active(psc: PscHandle, token: str) -> bool:
    with psc.client("mtls") as http:
        r = http.post(psc.introspection_endpoint, data={**psc.client_auth("mtls"), "token": token})
        return bool(r.json().get("active"))


def test_refresh_then_reexchange(proxy: RunningProxy, short_psc: PscHandle, clock: ManualClock) -> None:
    nid = short_psc.identities[0]["national_id"]
    with proxy.client() as c:
        conn = c.post("/connect", json=connect_body(short_psc, nid)).json()
        body = _sign_body(nid, short_psc, conn)
        assert c.post("/send/signsessiondata/signsessiondata", json=body).status_code == 200
        before = _session(proxy, conn["proxy_session_id"])
        old_refresh, old_api = before.psc_refresh_token, before.api_tokens["signsessiondata"].access_token
        refreshed = _counter(proxy, "psc", "ok")
        clock.advance(PSC_ACCESS + 1)  # PSC access token expired, API token due for renewal
        r = c.post("/send/signsessiondata/signsessiondata", json=body)
        assert r.status_code == 200, r.text
        after = _session(proxy, conn["proxy_session_id"])
    # One refresh (a second one only if the fresh 1-s token expired again in flight on a loaded machine).
    assert refreshed + 1 <= _counter(proxy, "psc", "ok") <= refreshed + 2
    assert after.psc_refresh_token != old_refresh  # rotated token stored
    assert after.api_tokens["signsessiondata"].access_token != old_api
    assert after.session_state == conn["session_state"]


def test_one_refresh_at_a_time(proxy: RunningProxy, short_psc: PscHandle, clock: ManualClock) -> None:
    """PSC revokes the whole family when a refresh token is used twice: if two requests
    refreshed concurrently the session would die. 30 concurrent requests must all pass
    with exactly one PSC refresh and one exchange."""
    nid = short_psc.identities[1]["national_id"]
    with proxy.client() as c:
        conn = c.post("/connect", json=connect_body(short_psc, nid)).json()
    body = _sign_body(nid, short_psc, conn)
    clock.advance(PSC_ACCESS + 1)
    refreshed, exchanged = _counter(proxy, "psc", "ok"), _counter(proxy, "api_exchange", "ok")

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=proxy.url, verify=client_context(proxy.pki.ca_bundle), timeout=30) as ac:
            ac.cookies.set("proxy_session_id", conn["proxy_session_id"])
            rs = await asyncio.gather(*(ac.post("/send/signsessiondata/signsessiondata", json=body) for _ in range(30)))
            return [r.status_code for r in rs]

    statuses = asyncio.run(burst())
    assert statuses == [200] * 30  # a concurrent double use would have revoked the family at PSC
    # Serialised: 30 waiters share one renewal (a second only if the 1-s PSC token expired in flight).
    assert refreshed + 1 <= _counter(proxy, "psc", "ok") <= refreshed + 2
    assert _counter(proxy, "api_exchange", "ok") == exchanged + 1


def test_disconnect_revokes_and_ends_psc_session(
    proxy: RunningProxy, short_psc: PscHandle, short_api: ApiHandle
) -> None:
    nid = short_psc.identities[2]["national_id"]
    with proxy.client() as c:
        conn = c.post("/connect", json=connect_body(short_psc, nid)).json()
        assert c.post("/send/signsessiondata/signsessiondata", json=_sign_body(nid, short_psc, conn)).status_code == 200
        s = _session(proxy, conn["proxy_session_id"])
        api_token = s.api_tokens["signsessiondata"].access_token
        assert not short_api.runtime.revocations.is_revoked(_jti(api_token))
        assert c.delete("/disconnect").status_code == 200
    assert short_api.runtime.revocations.is_revoked(_jti(api_token))
    # The PSC session is over: its refresh token no longer works.
    with short_psc.client("mtls") as http:
        r = http.post(
            short_psc.token_endpoint,
            data={**short_psc.client_auth("mtls"), "grant_type": "refresh_token", "refresh_token": s.psc_refresh_token},
        )
        assert r.status_code == 400, r.text


def test_idle_expiry_ends_session_cleanly(pki, server_cert, short_psc, short_api, tmp_path) -> None:
    clock = ManualClock()
    p = _start(pki, server_cert, short_psc, short_api, tmp_path, clock, idle_ttl=1.0, absolute_ttl=60)
    try:
        nid = short_psc.identities[3]["national_id"]
        with p.client() as c:
            conn = c.post("/connect", json=connect_body(short_psc, nid)).json()
            first = c.post("/send/signsessiondata/signsessiondata", json=_sign_body(nid, short_psc, conn))
            assert first.status_code == 200, first.text
            s = _session(p, conn["proxy_session_id"])
            clock.advance(0.6)
            # Activity keeps it alive…
            assert (
                c.post("/send/signsessiondata/signsessiondata", json=_sign_body(nid, short_psc, conn)).status_code
                == 200
            )
            clock.advance(0.6)
            assert (
                c.post("/send/signsessiondata/signsessiondata", json=_sign_body(nid, short_psc, conn)).status_code
                == 200
            )
            # …idleness ends it, and the sweeper revokes without any request.
            clock.advance(1.1)
            _until(lambda: _session(p, conn["proxy_session_id"]) is None)
            assert _session(p, conn["proxy_session_id"]) is None
            r = c.post("/send/signsessiondata/signsessiondata", json=_sign_body(nid, short_psc, conn))
            assert r.status_code == 401
        jti = _jti(s.api_tokens["signsessiondata"].access_token)
        _until(lambda: short_api.runtime.revocations.is_revoked(jti))
        assert short_api.runtime.revocations.is_revoked(jti)
        assert p.core.metrics.sessions_ended.labels("expired")._value.get() >= 1
        # …and its PSC session was ended too: the refresh token no longer works.
        with short_psc.client("mtls") as http:
            r = http.post(
                short_psc.token_endpoint,
                data={
                    **short_psc.client_auth("mtls"),
                    "grant_type": "refresh_token",
                    "refresh_token": s.psc_refresh_token,
                },
            )
            assert r.status_code == 400, r.text
    finally:
        p.stop()


def test_absolute_expiry(pki, server_cert, short_psc, short_api, tmp_path) -> None:
    clock = ManualClock()
    p = _start(
        pki, server_cert, short_psc, short_api, tmp_path, clock, idle_ttl=1.0, absolute_ttl=1.0, sweep_interval=30
    )
    try:
        nid = short_psc.identities[4]["national_id"]
        with p.client() as c:
            conn = c.post("/connect", json=connect_body(short_psc, nid)).json()
            clock.advance(1.1)
            r = c.post("/send/signsessiondata/signsessiondata", json=_sign_body(nid, short_psc, conn))
            assert r.status_code == 401 and r.json()["code"] == "SESSION_EXPIRED"
            # A new connect is a fresh session, not a replay of the expired one.
            again = c.post("/connect", json=connect_body(short_psc, nid))
            assert again.status_code == 200 and again.json()["proxy_session_id"] != conn["proxy_session_id"]
    finally:
        p.stop()


def test_refresh_failure_ends_session(pki, server_cert, psc_sandbox_factory, api_services_factory, tmp_path) -> None:
    psc = psc_sandbox_factory(lifetimes={"access_token": 30, "refresh_token": 40})
    api = api_services_factory(psc=psc, cache_seconds=0)
    clock = ManualClock()
    p = _start(pki, server_cert, psc, api, tmp_path, clock)
    try:
        nid = psc.identities[0]["national_id"]
        with p.client() as c:
            conn = c.post("/connect", json=connect_body(psc, nid)).json()
            clock.advance(41)  # access and refresh tokens both expired
            r = c.post("/send/signsessiondata/signsessiondata", json=_sign_body(nid, psc, conn))
            assert r.status_code == 401 and r.json()["code"] == "SESSION_EXPIRED"
        _until(lambda: _session(p, conn["proxy_session_id"]) is None)
        assert _session(p, conn["proxy_session_id"]) is None
    finally:
        p.stop()
