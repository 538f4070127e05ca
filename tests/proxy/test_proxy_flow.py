"""End to end against the real PSC sandbox and the real API services: the ANS contract."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confiance.core.jose import verify_jws
from confiance.proxy.sessions import MemoryStore
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle
from tests.proxy.harness import RunningProxy, connect_body, proxy_config, start_proxy


@pytest.fixture(scope="module")
def proxy(pki, server_cert, psc_sandbox, api_services, tmp_path_factory) -> Iterator[RunningProxy]:
    cfg = proxy_config(pki, server_cert, psc_sandbox, api_services, tmp_path_factory.mktemp("proxy"))
    p = start_proxy(cfg, pki)
    yield p
    p.stop()


def _nid(psc: PscHandle, i: int) -> str:
    return psc.identities[i]["national_id"]


def test_connect_send_disconnect(proxy: RunningProxy, psc_sandbox: PscHandle, api_services: ApiHandle) -> None:
    nid = _nid(psc_sandbox, 1)
    with proxy.client() as c:
        r = c.post("/connect", json=connect_body(psc_sandbox, nid))
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"proxy_session_id", "session_state"}
        sid = body["proxy_session_id"]
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"proxy_session_id={sid}; Path=/")
        assert "HttpOnly" in cookie and "Secure" in cookie
        # The conformity API signs what only a correct user+LPS→PSC session mapping knows.
        data = {
            "nationalId": nid,
            "clientID": psc_sandbox.mtls_client_id,
            "proxy_session_id": sid,
            "session_state": body["session_state"],
        }
        s = c.post("/send/signsessiondata/signsessiondata", json=data)
        assert s.status_code == 200, s.text
        signed = s.json()
        assert {k: signed[k] for k in data} == data
        payload = verify_jws(signed["signature"], api_services.rs_jwks())
        assert json.loads(payload) == data
        # Second call reuses the cached API token (no new exchange).
        exchanges = proxy.core.metrics.refreshes.labels("api_exchange", "ok")._value.get()
        assert c.post("/send/signsessiondata/signsessiondata", json=data).status_code == 200
        assert proxy.core.metrics.refreshes.labels("api_exchange", "ok")._value.get() == exchanges
        d = c.delete("/disconnect")
        assert d.status_code == 200
        assert "Max-Age=0" in d.headers["set-cookie"]
        c.cookies.set("proxy_session_id", sid)
        assert c.post("/send/signsessiondata/signsessiondata", json=data).status_code == 401
        again = c.delete("/disconnect")
        assert again.status_code == 401
        assert set(again.json()) >= {"code", "message"}
    traces = [t for t in proxy.traces() if t.get("proxy_id_session") == sid]
    kinds = [t["type"] for t in traces]
    assert kinds == ["CONNECT_SUCCESS", "SEND", "SEND", "DISCONNECT"]
    send = traces[1]
    assert send["apiRequest"] == {"nomApiPsc": "signsessiondata", "methode": "POST", "path": "/signsessiondata"}
    assert send["IdRPPS"] == nid and send["clientId"] == psc_sandbox.mtls_client_id
    assert send["dn"] == psc_sandbox.mtls_cert.subject_dn
    assert send["ipAddress"] == "127.0.0.1" and send["ports"]


def _sign(c: Any, psc: PscHandle, nid: str, conn: dict[str, str]) -> int:
    body = {
        "nationalId": nid,
        "clientID": psc.mtls_client_id,
        "proxy_session_id": conn["proxy_session_id"],
        "session_state": conn["session_state"],
    }
    return int(c.post("/send/signsessiondata/signsessiondata", json=body).status_code)


def test_connect_replay_is_304_only_with_the_cookie_of_a_live_session(
    proxy: RunningProxy, psc_sandbox: PscHandle
) -> None:
    """The 304 rule (ANS's SessionController.connect): 304 only for the caller holding the
    cookie of a live session; a second workstation (no cookie) logs in anew and both
    sessions work; CONNECT_REPLAY is traced for the cookie case only."""
    nid = _nid(psc_sandbox, 2)
    with proxy.client() as c:
        first = c.post("/connect", json=connect_body(psc_sandbox, nid))
        assert first.status_code == 200
        # While PSC would refuse any new login: a 304 proves no CIBA request was made.
        psc_sandbox.set_ecps("deny", national_id=nid)
        try:
            r = c.post("/connect", json=connect_body(psc_sandbox, nid))  # the cookie jar holds the cookie
        finally:
            psc_sandbox.reset()
        assert r.status_code == 304
        assert r.content == b""
        assert "set-cookie" not in r.headers
    with proxy.client() as other:
        # Another workstation of the same LPS (no cookie): a new login, a new cookie.
        second = other.post("/connect", json=connect_body(psc_sandbox, nid))
        assert second.status_code == 200, second.text
        assert second.json()["proxy_session_id"] != first.json()["proxy_session_id"]
        assert other.cookies.get("proxy_session_id") == second.json()["proxy_session_id"]
        assert _sign(other, psc_sandbox, nid, second.json()) == 200
    with proxy.client() as c:
        c.cookies.set("proxy_session_id", first.json()["proxy_session_id"])
        assert _sign(c, psc_sandbox, nid, first.json()) == 200  # the first session still works
    traces = [t for t in proxy.traces() if t.get("IdRPPS") == nid]
    kinds = [t["type"] for t in traces]
    assert kinds == ["CONNECT_SUCCESS", "CONNECT_REPLAY", "CONNECT_SUCCESS", "SEND", "SEND"]
    assert traces[1]["proxy_id_session"] == first.json()["proxy_session_id"]
    assert {traces[3]["proxy_id_session"], traces[4]["proxy_id_session"]} == {
        first.json()["proxy_session_id"],
        second.json()["proxy_session_id"],
    }


def test_connect_with_a_dead_or_foreign_cookie_is_a_new_login(proxy: RunningProxy, psc_sandbox: PscHandle) -> None:
    """No 304 for a cookie of an ended session, of an unknown one, nor of another
    professional's live session (that would hand this caller someone else's session)."""
    nid, other_nid = _nid(psc_sandbox, 8), _nid(psc_sandbox, 9)
    with proxy.client() as c:
        first = c.post("/connect", json=connect_body(psc_sandbox, nid)).json()
        assert c.delete("/disconnect").status_code == 200
        c.cookies.set("proxy_session_id", first["proxy_session_id"])
        again = c.post("/connect", json=connect_body(psc_sandbox, nid))
        assert again.status_code == 200 and again.json()["proxy_session_id"] != first["proxy_session_id"]
        # The cookie jar now holds nid's live session; a connect for another professional:
        foreign = c.post("/connect", json=connect_body(psc_sandbox, other_nid))
        assert foreign.status_code == 200
        assert foreign.json()["proxy_session_id"] != again.json()["proxy_session_id"]
    with proxy.client() as c:
        c.cookies.set("proxy_session_id", "0" * 8 + "-0000-4000-8000-" + "0" * 12)  # well-formed, unknown
        assert c.post("/connect", json=connect_body(psc_sandbox, nid)).status_code == 200
    replays = [t for t in proxy.traces() if t.get("IdRPPS") in (nid, other_nid) and t["type"] == "CONNECT_REPLAY"]
    assert replays == []


@pytest.mark.parametrize("field", ["nationalId", "bindingMessage", "clientId", "channel"])
def test_connect_bad_fields_named(proxy: RunningProxy, psc_sandbox: PscHandle, field: str) -> None:
    bad = {"nationalId": "!!", "bindingMessage": "123", "clientId": " ", "channel": "SMS"}
    with proxy.client() as c:
        body = connect_body(psc_sandbox)
        missing = {k: v for k, v in body.items() if k != field}
        r = c.post("/connect", json=missing)
        assert r.status_code == 400 and r.json()["field"] == field and field in r.json()["message"]
        r = c.post("/connect", json={**body, field: bad[field]})
        assert r.status_code == 400 and r.json()["field"] == field
        assert set(r.json()) >= {"code", "message", "metadata"}


def test_connect_not_json(proxy: RunningProxy) -> None:
    with proxy.client() as c:
        r = c.post("/connect", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["code"] == "INVALID_REQUEST"


def test_unknown_client_and_user_are_404(proxy: RunningProxy, psc_sandbox: PscHandle) -> None:
    with proxy.client() as c:
        r = c.post("/connect", json=connect_body(psc_sandbox, client_id="inconnu"))
        assert r.status_code == 404
        assert r.json()["metadata"] == {"nationalId": psc_sandbox.national_id, "clientId": "inconnu"}
        r = c.post("/connect", json=connect_body(psc_sandbox, national_id="899999999999"))
        assert r.status_code == 404 and r.json()["code"] == "USER_NOT_FOUND"


def test_user_denies(proxy: RunningProxy, psc_sandbox: PscHandle) -> None:
    nid = _nid(psc_sandbox, 3)
    psc_sandbox.set_ecps("deny", national_id=nid)
    try:
        with proxy.client() as c:
            r = c.post("/connect", json=connect_body(psc_sandbox, nid))
        assert r.status_code == 400
        assert r.json()["code"] == "ACCESS_DENIED" and "refusée" in r.json()["message"]
        assert "set-cookie" not in r.headers
    finally:
        psc_sandbox.reset()
    fails = [t for t in proxy.traces() if t.get("IdRPPS") == nid]
    assert [t["type"] for t in fails] == ["CONNECT_FAILURE"]
    assert "proxy_id_session" not in fails[0] and "apiRequest" not in fails[0]
    store = proxy.core.store
    assert isinstance(store, MemoryStore)
    assert not [sid for sid, sess in store._by_id.items() if sess.national_id == nid]  # no session left


def test_secret_client_connects(proxy: RunningProxy, psc_sandbox: PscHandle) -> None:
    with proxy.client() as c:
        r = c.post("/connect", json=connect_body(psc_sandbox, _nid(psc_sandbox, 4), psc_sandbox.secret_client_id))
        assert r.status_code == 200, r.text


def test_send_requires_session_and_known_service(proxy: RunningProxy, psc_sandbox: PscHandle) -> None:
    with proxy.client() as c:
        assert c.get("/send/signsessiondata/x").status_code == 401
        c.cookies.set("proxy_session_id", "00000000-0000-4000-8000-000000000000")
        r = c.get("/send/signsessiondata/x")
        assert r.status_code == 401 and r.json()["code"] == "SESSION_NOT_FOUND"
        c.cookies.clear()
        assert c.post("/connect", json=connect_body(psc_sandbox, _nid(psc_sandbox, 5))).status_code == 200
        r = c.get("/send/nope/x")
        assert r.status_code == 404
        for raw in ("/send/dmp/..%2f..%2fsignsessiondata", "/send/dmp/a%2fb", "/send/dmp//x", "/send/dmp/a@b"):
            r = c.get(raw)
            assert r.status_code in (400, 404), raw
        r = c.get("/send/dmp/fhir/DocumentReference", params={"patient.identifier": "x"})
        assert r.status_code < 500, r.text


def test_oversized_body_refused(proxy: RunningProxy, psc_sandbox: PscHandle) -> None:
    with proxy.client() as c:
        assert c.post("/connect", json=connect_body(psc_sandbox, _nid(psc_sandbox, 6))).status_code == 200
        big = b"x" * (proxy.core.cfg.server.max_body_bytes + 1)
        r = c.post("/send/signsessiondata/signsessiondata", content=big)
        assert r.status_code == 413
        r = c.post("/connect", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_traces_protected(proxy: RunningProxy) -> None:
    with proxy.client() as c:
        assert c.get("/traces", params={"start": "2000-01-01T00:00:00Z"}).status_code == 401
        r = c.get("/traces", params={"start": "2000-01-01T00:00:00Z"}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        from tests.proxy.harness import ADMIN

        r = c.get("/traces", headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 400
        r = c.get("/traces", params={"start": "hier"}, headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 400
        r = c.get(
            "/traces",
            params={"start": "2000-01-01T00:00:00Z", "end": "2000-01-02T00:00:00Z"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert r.status_code == 200 and r.json() == []


def test_health_and_metrics(proxy: RunningProxy) -> None:
    with proxy.client() as c:
        from confiance import __version__

        assert c.get("/healthz").json() == {"status": "ok", "version": __version__, "proxy_id": "test-proxy"}
        assert c.get("/readyz").status_code == 200
        m = c.get("/metrics").text
        for name in (
            "proxy_requests_total",
            "proxy_request_duration_seconds",
            "proxy_upstream_errors_total",
            "proxy_active_sessions",
            "proxy_refreshes_total",
        ):
            assert name in m


def test_trace_chain_verifies(proxy: RunningProxy, tmp_path: Path) -> None:
    check = proxy.core.trace_store.verify()
    assert check.ok and check.checked > 0


def test_commit_durability_persists_send_before_answering(
    pki, server_cert, psc_sandbox, api_services, tmp_path
) -> None:
    cfg = proxy_config(
        pki,
        server_cert,
        psc_sandbox,
        api_services,
        tmp_path,
        traces={"send_durability": "commit", "flush_interval": 1.0},
    )
    p = start_proxy(cfg, pki)
    try:
        nid = _nid(psc_sandbox, 20)
        with p.client() as c:
            conn = c.post("/connect", json=connect_body(psc_sandbox, nid)).json()
            for i in range(3):
                assert c.get(f"/send/dmp/fhir/DocumentReference?n={i}").status_code < 500
                # Read the database directly, without waiting: the SEND is already committed
                # even though the batch interval is 1 s.
                rows = p.core.trace_store.query(0, None)
                sends = [r for r in rows if r["type"] == "SEND" and r["proxy_id_session"] == conn["proxy_session_id"]]
                assert len(sends) == i + 1
    finally:
        p.stop()


def test_token_revoked_early_is_replaced(proxy: RunningProxy, psc_sandbox: PscHandle, api_services: ApiHandle) -> None:
    """The service answers 401 invalid_token (token revoked at the AS): the proxy exchanges
    again once and the LPS sees a normal answer."""
    import asyncio
    import base64

    nid = _nid(psc_sandbox, 7)
    with proxy.client() as c:
        conn = c.post("/connect", json=connect_body(psc_sandbox, nid)).json()
        data = {
            "nationalId": nid,
            "clientID": psc_sandbox.mtls_client_id,
            "proxy_session_id": conn["proxy_session_id"],
            "session_state": conn["session_state"],
        }
        assert c.post("/send/signsessiondata/signsessiondata", json=data).status_code == 200
        s = asyncio.run(proxy.core.store.get(conn["proxy_session_id"]))
        old = s.api_tokens["signsessiondata"].access_token
        payload = old.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        api_services.runtime.revocations.revoke(claims["jti"], claims["exp"])
        r = c.post("/send/signsessiondata/signsessiondata", json=data)
        assert r.status_code == 200, r.text
        s = asyncio.run(proxy.core.store.get(conn["proxy_session_id"]))
        assert s.api_tokens["signsessiondata"].access_token != old
