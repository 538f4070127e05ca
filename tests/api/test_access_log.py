"""GET /admin/access-log: what the conformity tool reads to prove the cnf binding held."""

from __future__ import annotations

from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle

ADMIN = "rs-admin-" + "y" * 20


def test_access_log_shows_presented_certificate_and_token_cnf(api_services_factory, psc_sandbox: PscHandle) -> None:
    api: ApiHandle = api_services_factory(rs_admin_token=ADMIN)
    tokens = psc_sandbox.ciba_login()
    exchanged = api.exchange(tokens["access_token"], scope="signsessiondata")
    assert exchanged.status_code == 200, exchanged.text
    body = {
        "nationalId": psc_sandbox.national_id,
        "clientID": psc_sandbox.mtls_client_id,
        "proxy_session_id": "ps-log-1",
        "session_state": tokens["session_state"],
    }
    rs = api.services["signsessiondata"]["url"]
    with api.client(api.proxy_cert) as http:
        signed = http.post(
            rs + "/signsessiondata", json=body, headers={"Authorization": f"Bearer {exchanged.json()['access_token']}"}
        )
        assert signed.status_code == 200, signed.text
        api.runtime.audit.flush()
        anonymous = http.get(rs + "/admin/access-log", params={"proxy_session_id": "ps-log-1"})
        wrong = http.get(rs + "/admin/access-log", headers={"Authorization": "Bearer nope-nope-nope-nope"})
        log = http.get(
            rs + "/admin/access-log",
            params={"proxy_session_id": "ps-log-1"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
    assert anonymous.status_code == 401 and wrong.status_code == 401
    records = log.json()["records"]
    assert len(records) == 1
    rec = records[0]
    assert rec["outcome"] == "ok" and rec["dn"] == api.proxy_cert.subject_dn
    assert rec["cert_x5t"] == rec["cnf_x5t"] == api.proxy_cert.x5t_s256
    assert "access_token" not in str(rec) and exchanged.json()["access_token"] not in str(rec)


def test_access_log_disabled_without_admin_token(api_services: ApiHandle) -> None:
    with api_services.client(api_services.proxy_cert) as http:
        r = http.get(api_services.services["signsessiondata"]["url"] + "/admin/access-log")
    assert r.status_code == 403
    assert isinstance(r.json()["message"], str)
