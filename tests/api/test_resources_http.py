"""Resource services over HTTPS: INSi-like, DMP-like, bad input, access log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from confiance.api.audit import AccessLog
from confiance.api.cli import app as api_cli
from confiance.api.demo_data import INS_SYSTEM, PATIENTS, nir_key
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle


@pytest.fixture(scope="module")
def session(psc_sandbox: PscHandle) -> dict:
    return psc_sandbox.ciba_login()


@pytest.fixture(scope="module")
def token(api_services: ApiHandle, session: dict) -> str:
    r = api_services.exchange(session["access_token"], scope="insi dmp")
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_demo_ins_numbers_are_well_formed() -> None:
    for p in PATIENTS:
        assert len(p.ins) == 15 and p.ins.isdigit()
        assert (int(p.nir13) + int(nir_key(p.nir13))) % 97 == 0


def test_insi_lookup(api_services: ApiHandle, token: str) -> None:
    url = api_services.services["insi"]["url"] + "/rechercher"
    with api_services.client(api_services.proxy_cert) as http:
        r = http.post(
            url,
            json={"nomNaissance": "martin-test", "prenom": "Claire", "sexe": "F", "dateNaissance": "1985-03-14"},
            headers=_auth(token),
        )
        assert r.status_code == 200 and r.json()["code"] == "00"
        ident = r.json()["identite"]
        assert ident["matriculeINS"]["valeur"] == "285037505612306" and ident["fictif"] is True
        r = http.post(
            url,
            json={"nomNaissance": "LAMBERT-TEST", "prenom": "Paul", "sexe": "M", "dateNaissance": "1980-09-01"},
            headers=_auth(token),
        )
        assert r.json()["code"] == "02"
        r = http.post(
            url,
            json={
                "nomNaissance": "LAMBERT-TEST",
                "prenom": "Paul",
                "sexe": "M",
                "dateNaissance": "1980-09-01",
                "lieuNaissance": "35238",
            },
            headers=_auth(token),
        )
        assert r.json()["code"] == "00"
        r = http.post(
            url,
            json={"nomNaissance": "INCONNU", "prenom": "X", "sexe": "F", "dateNaissance": "2000-01-01"},
            headers=_auth(token),
        )
        assert r.json()["code"] == "01"
        for bad in (
            b"nope",
            b"[]",
            json.dumps({"nomNaissance": "X"}).encode(),
            json.dumps({"nomNaissance": "X", "prenom": "Y", "sexe": "Z", "dateNaissance": "2000"}).encode(),
        ):
            r = http.post(url, content=bad, headers={**_auth(token), "Content-Type": "application/json"})
            assert r.status_code == 400 and r.json()["code"] == "invalid_request"


def test_dmp_document_search(api_services: ApiHandle, token: str) -> None:
    url = api_services.services["dmp"]["url"] + "/fhir/DocumentReference"
    with api_services.client(api_services.proxy_cert) as http:
        r = http.get(url, params={"patient.identifier": f"{INS_SYSTEM}|285037505612306"}, headers=_auth(token))
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
        bundle = r.json()
        assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset" and bundle["total"] == 3
        doc = bundle["entry"][0]["resource"]
        assert doc["resourceType"] == "DocumentReference"
        assert doc["subject"]["identifier"] == {"system": INS_SYSTEM, "value": "285037505612306"}
        assert http.get(url, params={"patient.identifier": "999"}, headers=_auth(token)).json()["total"] == 0
        r = http.get(url, headers=_auth(token))
        assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
        r = http.get(url, params={"patient.identifier": "urn:oid:1.2.3|285037505612306"}, headers=_auth(token))
        assert r.status_code == 400


def test_missing_token_scope_or_certificate(api_services: ApiHandle, session: dict, token: str) -> None:
    sign_url = api_services.services["signsessiondata"]["url"] + "/signsessiondata"
    with api_services.client(api_services.proxy_cert) as http:
        r = http.post(sign_url, json={})
        assert r.status_code == 401 and r.json()["reason"] == "missing_token"
        assert r.headers["www-authenticate"].startswith("Bearer")
        # The insi+dmp token has no signsessiondata audience.
        r = http.post(sign_url, json={}, headers=_auth(token))
        assert r.status_code == 401 and r.json()["reason"] == "audience"
        r = http.post(sign_url, json={}, headers={"Authorization": "Bearer garbage"})
        assert r.status_code == 401 and r.json()["reason"] == "signature"
    with api_services.client(None) as http:
        r = http.get(api_services.services["dmp"]["url"] + "/fhir/DocumentReference", headers=_auth(token))
        assert r.status_code == 401 and r.json()["reason"] == "no_certificate"
        assert http.get(api_services.rs_url + "/health").status_code == 200
    # Scope check: a token whose audience includes the service but not its scope → 403.
    rt = api_services.runtime
    import time

    from confiance.api.domain import access_token_claims, subject_from_claims

    subj = subject_from_claims(
        {"exp": time.time() + 60, "SubjectNameID": "8", "iss": rt.cfg.psc.issuer}, rt.cfg.psc.issuer, time.time()
    )
    claims = access_token_claims(
        issuer=rt.issuer,
        subject=subj,
        client=rt.registry.get("proxy"),  # type: ignore[arg-type]
        cert_x5t=api_services.proxy_cert.x5t_s256,
        scopes=("insi",),
        audiences=(rt.service("dmp").audience,),
        now=time.time(),
        lifetime=3600,
    )
    with api_services.client(api_services.proxy_cert) as http:
        r = http.get(
            api_services.services["dmp"]["url"] + "/fhir/DocumentReference",
            params={"patient": "1"},
            headers=_auth(rt.signer.sign_claims(claims)),
        )
        assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"


def test_signsessiondata_bad_bodies_are_400(api_services: ApiHandle, psc_sandbox: PscHandle, session: dict) -> None:
    tok = api_services.exchange(session["access_token"], scope="signsessiondata").json()["access_token"]
    url = api_services.services["signsessiondata"]["url"] + "/signsessiondata"
    with api_services.client(api_services.proxy_cert) as http:
        for body in (
            b"",
            b"{",
            b"null",
            b'{"nationalId": 3}',
            json.dumps(
                {"nationalId": "x" * 600, "clientID": "a", "proxy_session_id": "b", "session_state": "c"}
            ).encode(),
        ):
            r = http.post(url, content=body, headers={**_auth(tok), "Content-Type": "application/json"})
            assert r.status_code == 400, body
            assert r.json()["code"] == "invalid_request"
        r = http.post(url, content=b"x" * 70_000, headers={**_auth(tok), "Content-Type": "application/json"})
        assert r.status_code == 413


def test_access_log_chain_and_cli(api_services_factory, psc_sandbox: PscHandle, tmp_path: Path) -> None:
    log_path = tmp_path / "access.jsonl"
    api = api_services_factory(access_log=log_path)
    tokens = psc_sandbox.ciba_login()
    tok = api.exchange(tokens["access_token"], scope="insi").json()["access_token"]
    with api.client(api.proxy_cert) as http:
        for _ in range(3):
            http.post(
                api.services["insi"]["url"] + "/rechercher",
                json={"nomNaissance": "ROUX-TEST", "prenom": "Noah", "sexe": "M", "dateNaissance": "2012-10-09"},
                headers=_auth(tok),
            )
    api.runtime.audit.flush()
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert len(rows) == 3
    assert all(
        r["record"]["professional"] == psc_sandbox.national_id and r["record"]["client_id"] == "proxy" for r in rows
    )
    assert rows[0]["record"]["dn"] == api.proxy_cert.subject_dn
    assert "Bearer" not in log_path.read_text() and tok not in log_path.read_text()
    assert AccessLog.verify(log_path).ok
    runner = CliRunner()
    assert runner.invoke(api_cli, ["log", "verify", str(log_path)]).exit_code == 0
    lines = log_path.read_text().splitlines()
    lines[1] = lines[1].replace(psc_sandbox.national_id, "899999999999")
    log_path.write_text("\n".join(lines) + "\n")
    result = runner.invoke(api_cli, ["log", "verify", str(log_path)])
    assert result.exit_code == 1 and "altéré" in result.output


def test_hostile_tokens_and_bodies_never_500(api_services: ApiHandle, session: dict) -> None:
    tok = api_services.exchange(session["access_token"], scope="signsessiondata").json()["access_token"]
    url = api_services.services["signsessiondata"]["url"] + "/signsessiondata"
    h, p, _s = tok.split(".")
    tokens = [".", "..", "a.b.c", "€.€.€", "!!.!!.!!", f"{h}.{p}", f"{h}.{p}.{p}", "x" * 20000, h + ".e30.", tok + "x"]
    with api_services.client(api_services.proxy_cert) as http:
        for t in tokens:
            r = http.post(url, json={}, headers={"Authorization": ("Bearer " + t).encode("utf-8")})
            assert r.status_code in (400, 401, 431), (t[:30], r.status_code, r.text[:200])
        for body in (b"\xff\xfe", b'{"nationalId": {"$gt": ""}}', b"1e99999", json.dumps([1] * 1000).encode()):
            r = http.post(
                url, content=body, headers={"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}
            )
            assert r.status_code == 400, (body[:20], r.status_code)
        for params in ({"patient.identifier": "|"}, {"patient.identifier": "é|€"}, {"patient": "x" * 5000}):
            r = http.get(
                api_services.services["dmp"]["url"] + "/fhir/DocumentReference",
                params=params,
                headers={"Authorization": f"Bearer {tok}"},
            )
            assert r.status_code in (400, 401), r.status_code


def test_refusals_are_logged_with_who_tried(api_services: ApiHandle, psc_sandbox: PscHandle, session: dict) -> None:
    from confiance.pki import Pki

    tok = api_services.exchange(session["access_token"], scope="signsessiondata").json()["access_token"]
    pki: Pki = api_services.pki
    thief = pki.ensure_client("api-test-thief-log", "3" + "12345678200010", "voleur-log")
    url = api_services.services["signsessiondata"]["url"] + "/signsessiondata"
    with api_services.client(thief) as http:
        assert http.post(url, json={}, headers=_auth(tok)).status_code == 401
        assert http.post(url, json={}, headers=_auth("garbage")).status_code == 401
    stolen, garbage = list(api_services.runtime.audit.recent)[-2:]
    assert stolen["outcome"] == "refused" and stolen["reason"] == "cnf_mismatch"
    assert stolen["professional"] == psc_sandbox.national_id and stolen["client_id"] == "proxy"
    assert stolen["dn"] == thief.subject_dn
    assert garbage["reason"] == "signature" and garbage["professional"] is None and garbage["dn"] == thief.subject_dn
