"""Acceptance: the scripted API journeys of issue 7, over real HTTPS."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509

from confiance.core.jose import verify_jwt
from confiance.guichet.services import GuichetService

from .helpers import Guichet, new_csr, pentest_payload


def test_elp_journey_to_a_three_year_habilitation(guichet: Guichet) -> None:
    acme = guichet.company("Acme Proxy")
    proxy = guichet.solution(acme, "ProxyAcme", "proxy")
    cand = acme.ok(guichet.candidature(acme, "ELP", proxy), 201)
    assert cand["status"] == "brouillon" and cand["environment"] == "BAS"
    detail = guichet.to_evidence(acme, cand)
    assert detail["status"] == "depot_preuves"
    chapters = {c["chapter_id"] for c in detail["chapters"]}
    assert {"test_intrusion", "conformite", "certificats"} <= chapters
    assert "homologation" not in chapters  # a bare proxy needs no CNDA
    guichet.deposit_all(acme, cand["id"])
    detail = guichet.review_all(acme, cand["id"])
    assert detail["status"] == "college"
    steps = {s["id"]: s for s in detail["parcours"]}
    assert steps["evidence_deposit"]["status"] == "fait" and steps["evidence_deposit"]["by_platform"]
    hab = guichet.grant(acme, cand["id"])
    assert hab["role"] == "ELP" and hab["environment"] == "BAS" and hab["valid"] and hab["status"] == "valide"
    granted = dt.datetime.fromisoformat(hab["granted_at"])
    until = dt.datetime.fromisoformat(hab["valid_until"])
    assert until.year - granted.year == 3 and (until.month, until.day) == (granted.month, granted.day)

    # the signed trust list carries it, with the test certificate of the proxy component
    r = guichet.http.get("/trust-list")
    assert r.headers["content-type"].startswith("application/jwt")
    jwks = guichet.http.get("/trust-list/jwks").json()
    claims = verify_jwt(r.text, jwks, issuer="https://guichet.test")
    [entry] = claims["habilitations"]
    assert entry["role"] == "ELP" and entry["holder"]["name"] == "Acme Proxy"
    certs = entry["components"][0]["certificates"]
    assert certs and certs[0]["x5t#S256"] == detail["certificates"][0]["x5t_s256"]
    assert certs[0]["subject_dn"].startswith("CN=ProxyAcme-proxy")


def test_osu_before_elu_and_osp_is_refused(guichet: Guichet) -> None:
    op = guichet.company("Opérateur Santé")
    lps = guichet.solution(op, "LogicielX", "logiciel_utilisateur")
    r = guichet.candidature(op, "OSU", lps, osp_habilitation_id=1)
    assert r.status_code == 409, r.text
    body = r.json()
    assert body["code"] == "dependances_absentes"
    assert "ELU" in body["message"] and "OSP" in body["message"]
    assert op.ok(op.get("/api/candidatures")) == []


def _elu_in_evidence(guichet: Guichet) -> tuple[object, dict]:
    ed = guichet.company("Editeur Proxy")
    proxy = guichet.solution(ed, "ProxyP", "proxy")
    lpsco = guichet.company("Editeur LPS")
    lps = guichet.solution(lpsco, "MonLPS", "logiciel_utilisateur")
    cand = lpsco.ok(guichet.candidature(lpsco, "ELU", lps, version="5.0", proxy_solution_id=proxy["id"]), 201)
    guichet.to_evidence(lpsco, cand)
    return lpsco, cand


def test_elu_pentest_ten_medium_ko_refused_nine_accepted(guichet: Guichet) -> None:
    lpsco, cand = _elu_in_evidence(guichet)
    pdf = lpsco.ok(
        lpsco.http.post(
            "/api/files", content=b"%PDF-1.7 ti", headers={**lpsco._h(), "Content-Type": "application/pdf"}
        ),
        201,
    )
    body = {"requirement_id": "PEN-01", "kind": "test_intrusion", "file_sha256": pdf["sha256"]}
    ten = pentest_payload("MonLPS", "5.0", medium_ko=10, result="L'application ne peut pas être référencée")
    r = lpsco.post(f"/api/candidatures/{cand['id']}/evidence", {**body, "pentest": ten})
    assert r.status_code == 422 and r.json()["code"] == "test_intrusion_refuse"
    assert "10 critères de gravité moyenne KO" in r.json()["message"]
    nine = pentest_payload("MonLPS", "5.0", medium_ko=9)
    ev = lpsco.ok(lpsco.post(f"/api/candidatures/{cand['id']}/evidence", {**body, "pentest": nine}), 201)
    assert ev["checks"]["eligible"] is True and ev["checks"]["ko"]["moyenne"] == 9


def test_proxy_pentest_with_one_medium_ko_refused(guichet: Guichet) -> None:
    acme = guichet.company("Acme")
    proxy = guichet.solution(acme, "PX", "proxy")
    cand = acme.ok(guichet.candidature(acme, "ELP", proxy), 201)
    guichet.to_evidence(acme, cand)
    pdf = acme.ok(
        acme.http.post("/api/files", content=b"%PDF-1.7 ti", headers={**acme._h(), "Content-Type": "application/pdf"}),
        201,
    )
    r = acme.post(
        f"/api/candidatures/{cand['id']}/evidence",
        {
            "requirement_id": "PEN-01",
            "kind": "test_intrusion",
            "file_sha256": pdf["sha256"],
            "pentest": pentest_payload("PX", "2.1.0", medium_ko=1, result="L'application ne peut pas être référencée"),
        },
    )
    assert r.status_code == 422, r.text
    assert "aucun toléré pour le profil ELP" in r.json()["message"]
    detail = acme.ok(acme.get(f"/api/candidatures/{cand['id']}"))
    assert detail["evidence"] == []  # refused at deposit: nothing stored


def test_pentest_of_366_days_refused_365_accepted(guichet: Guichet) -> None:
    lpsco, cand = _elu_in_evidence(guichet)
    pdf = lpsco.ok(
        lpsco.http.post(
            "/api/files", content=b"%PDF-1.7 ti", headers={**lpsco._h(), "Content-Type": "application/pdf"}
        ),
        201,
    )
    body = {"requirement_id": "PEN-01", "kind": "test_intrusion", "file_sha256": pdf["sha256"]}
    r = lpsco.post(
        f"/api/candidatures/{cand['id']}/evidence", {**body, "pentest": pentest_payload("MonLPS", "5.0", age_days=366)}
    )
    assert r.status_code == 422 and "366 jours" in r.json()["message"]
    lpsco.ok(
        lpsco.post(
            f"/api/candidatures/{cand['id']}/evidence",
            {**body, "pentest": pentest_payload("MonLPS", "5.0", age_days=365)},
        ),
        201,
    )


def test_withdrawing_elp_flags_elu_osp_and_osu(guichet: Guichet) -> None:
    ed = guichet.company("Editeur Proxy")
    proxy = guichet.solution(ed, "ProxyP", "proxy")
    elp = guichet.habilitate(ed, "ELP", proxy)
    lpsco = guichet.company("Editeur LPS")
    lps = guichet.solution(lpsco, "MonLPS", "logiciel_utilisateur")
    elu = guichet.habilitate(lpsco, "ELU", lps, proxy_solution_id=proxy["id"])
    hosting = guichet.company("Hébergeur Proxy")
    osp = guichet.habilitate(hosting, "OSP", proxy)
    op = guichet.company("Opérateur Santé")
    osu = guichet.habilitate(op, "OSU", lps, osp_habilitation_id=osp["id"])
    assert elu["relies_on"] == [elp["id"]] and osp["relies_on"] == [elp["id"]]
    assert sorted(osu["relies_on"]) == sorted([elu["id"], osp["id"]])
    assert osu["environment"] == "production"

    guichet.college.ok(
        guichet.college.post(f"/api/habilitations/{elp['id']}/withdraw", {"reason": "proxy non maintenu"})
    )
    habs = {h["id"]: h for h in guichet.admin.ok(guichet.admin.get("/api/habilitations"))}
    assert habs[elp["id"]]["status"] == "retiree" and not habs[elp["id"]]["valid"]
    for h in (elu, osp, osu):
        assert habs[h["id"]]["at_risk"], habs[h["id"]]
    notes = op.ok(op.get("/api/notifications"))
    assert any(n["kind"] == "habilitation_a_risque" for n in notes)
    claims = json.loads(
        __import__("base64").urlsafe_b64decode(guichet.http.get("/trust-list").text.split(".")[1] + "==")
    )
    listed = {h["id"]: h for h in claims["habilitations"]}
    assert elp["id"] not in listed and listed[osu["id"]]["at_risk"] is True


def test_trust_list_enforced_by_core_admission_rule(guichet: Guichet) -> None:
    """The list's shape is what confiance.core.trustlist.admit enforces in PSC and API servers."""
    from confiance.core.trustlist import admit

    def claims() -> dict:
        return verify_jwt(guichet.http.get("/trust-list").text, guichet.http.get("/trust-list/jwks").json())

    ed = guichet.company("Editeur Proxy")
    proxy = guichet.solution(ed, "ProxyP", "proxy")
    cand = ed.ok(guichet.candidature(ed, "ELP", proxy), 201)
    guichet.to_evidence(ed, cand)
    detail = guichet.deposit_all(ed, cand["id"])
    x5t = detail["certificates"][0]["x5t_s256"]
    during = admit(claims(), x5t, "BAS")
    assert during.admitted and "en cours d'instruction" in during.reason  # sandbox tests before habilitation
    assert not admit(claims(), x5t, "production").admitted
    guichet.review_all(ed, cand["id"])
    elp = guichet.grant(ed, cand["id"])
    granted = admit(claims(), x5t, "BAS")
    assert granted.admitted and granted.habilitation_id == elp["id"]
    guichet.college.ok(guichet.college.post(f"/api/habilitations/{elp['id']}/withdraw", {"reason": "faille critique"}))
    assert not admit(claims(), x5t, "BAS").admitted


def test_operator_production_certificate_enters_the_trust_list(guichet: Guichet) -> None:
    from confiance.core.trustlist import admit

    ed = guichet.company("Editeur Proxy")
    proxy = guichet.solution(ed, "ProxyP", "proxy")
    guichet.habilitate(ed, "ELP", proxy)
    host = guichet.company("Hébergeur")
    osp = guichet.habilitate(host, "OSP", proxy)
    cid = osp["candidature_id"]
    comp = proxy["components"][0]["id"]
    steps = {s["id"]: s for s in host.ok(host.get(f"/api/candidatures/{cid}/parcours"))}
    assert steps["production_certificate"]["after_grant"] and steps["production_certificate"]["status"] == "a_faire"
    assert steps["homologation_declaration"]["status"] == "a_faire"  # the holder declares it, last
    r = host.post(f"/api/candidatures/{cid}/parcours/homologation_declaration")
    assert r.status_code == 422 and "pas encore atteinte" in r.json()["message"]  # certificate first
    assert host.post(f"/api/candidatures/{cid}/parcours/production_certificate").status_code == 422  # platform step
    # production: the key stays with the operator, a CSR is required
    r = host.post(f"/api/candidatures/{cid}/certificates", {"component_id": comp})
    assert r.status_code == 422 and r.json()["code"] == "csr_requise"
    key, csr = new_csr()
    cert = host.ok(host.post(f"/api/candidatures/{cid}/certificates", {"component_id": comp, "csr_pem": csr}), 201)
    assert cert["environment"] == "production" and cert["key_pem"] is None
    issued = x509.load_pem_x509_certificate(cert["cert_pem"].encode())
    assert issued.public_key().public_numbers() == key.public_key().public_numbers()  # our key, certified
    host.ok(host.post(f"/api/candidatures/{cid}/parcours/homologation_declaration"))
    steps = {s["id"]: s["status"] for s in host.ok(host.get(f"/api/candidatures/{cid}/parcours"))}
    assert steps["production_certificate"] == "fait" and steps["homologation_declaration"] == "fait"
    claims = verify_jwt(guichet.http.get("/trust-list").text, guichet.http.get("/trust-list/jwks").json())
    assert admit(claims, cert["x5t_s256"], "production").admitted
    assert not admit(claims, cert["x5t_s256"], "BAS").admitted
    [entry] = [h for h in claims["habilitations"] if h["id"] == osp["id"]]
    assert [c["x5t#S256"] for c in entry["components"][0]["certificates"]] == [cert["x5t_s256"]]
    # renewal: a new certificate from a new CSR; the old one is revoked and leaves the list
    _key2, csr2 = new_csr()
    renewed = host.ok(host.post(f"/api/candidatures/{cid}/certificates/{cert['id']}/renew", {"csr_pem": csr2}), 201)
    claims = verify_jwt(guichet.http.get("/trust-list").text, guichet.http.get("/trust-list/jwks").json())
    assert admit(claims, renewed["x5t_s256"], "production").admitted
    assert not admit(claims, cert["x5t_s256"], "production").admitted
    certs = {c["id"]: c for c in host.ok(host.get(f"/api/candidatures/{cid}"))["certificates"]}
    assert certs[cert["id"]]["revoked"] and not certs[renewed["id"]]["revoked"]


def test_no_certificate_on_a_withdrawn_or_suspended_dependency(guichet: Guichet) -> None:
    ed = guichet.company("Editeur Proxy")
    proxy = guichet.solution(ed, "ProxyP", "proxy")
    elp = guichet.habilitate(ed, "ELP", proxy)
    host = guichet.company("Hébergeur")
    osp = guichet.habilitate(host, "OSP", proxy)
    cid, comp = osp["candidature_id"], proxy["components"][0]["id"]
    guichet.college.ok(guichet.college.post(f"/api/habilitations/{elp['id']}/suspend", {"reason": "audit en cours"}))
    _key, csr = new_csr()
    r = host.post(f"/api/candidatures/{cid}/certificates", {"component_id": comp, "csr_pem": csr})
    assert r.status_code == 409 and r.json()["code"] == "dependances_invalides"
    assert "suspendue" in r.json()["message"] and f"n° {elp['id']}" in r.json()["message"]
    assert host.ok(host.get(f"/api/candidatures/{cid}"))["certificates"] == []  # nothing issued
    guichet.college.ok(guichet.college.post(f"/api/habilitations/{elp['id']}/reinstate", {"reason": "levée"}))
    host.ok(host.post(f"/api/candidatures/{cid}/certificates", {"component_id": comp, "csr_pem": csr}), 201)
    guichet.college.ok(guichet.college.post(f"/api/habilitations/{elp['id']}/withdraw", {"reason": "faille"}))
    r = host.post(f"/api/candidatures/{cid}/certificates", {"component_id": comp, "csr_pem": csr})
    assert r.status_code == 409 and "retirée" in r.json()["message"]
    # an editor's test certificate on a withdrawn proxy is refused too
    lpsco = guichet.company("Editeur LPS")
    lps = guichet.solution(lpsco, "MonLPS", "logiciel_utilisateur")
    elu = lpsco.ok(guichet.candidature(lpsco, "ELU", lps, proxy_solution_id=proxy["id"]), 201)
    guichet.to_evidence(lpsco, elu)
    for step in ("isc_account", "psc_api_access", "authenticated_space", "bas_connection", "test_mie"):
        lpsco.ok(lpsco.post(f"/api/candidatures/{elu['id']}/parcours/{step}"))
    r = lpsco.post(f"/api/candidatures/{elu['id']}/certificates", {"component_id": lps["components"][0]["id"]})
    assert r.status_code == 409 and r.json()["code"] == "dependances_invalides"


def test_college_waits_for_the_parcours(guichet: Guichet) -> None:
    ed = guichet.company("Editeur Proxy")
    proxy = guichet.solution(ed, "ProxyP", "proxy")
    cand = ed.ok(guichet.candidature(ed, "ELP", proxy), 201)
    guichet.to_evidence(ed, cand)
    guichet.deposit_all(ed, cand["id"])
    guichet.review_all(ed, cand["id"])
    r = ed.post(f"/api/candidatures/{cand['id']}/parcours/homologation_declaration")
    assert r.status_code in (409, 422)  # after the grant only
    r = guichet.college.post(f"/api/candidatures/{cand['id']}/decision", {"decision": "accorder"})
    body = r.json()
    assert r.status_code == 409 and body["code"] == "parcours_incomplet"
    assert body["problems"] == [
        "Testez",
        "Demandez l'accès à l'outil de conformité et réalisez vos tests sur l'outil",
    ]
    assert "étapes du parcours non faites" in body["message"] and "conformity_tool" not in body["message"]
    assert ed.ok(ed.get(f"/api/candidatures/{cand['id']}"))["status"] == "college"  # nothing changed
    hab = guichet.grant(ed, cand["id"])  # declares the two steps, then the college grants
    assert hab["valid"]


def test_withdrawal_revokes_certificates_and_services_refuse_them(guichet: Guichet, pki, server_cert) -> None:
    """CRL updated on withdrawal: a service requiring client certificates refuses the next handshake."""
    import ssl

    import httpx
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from confiance.core.tls import ClientAuth
    from tests.support import start_https

    ed = guichet.company("Editeur Retire")
    proxy = guichet.solution(ed, "ProxyR", "proxy")
    elp = guichet.habilitate(ed, "ELP", proxy)
    detail = ed.ok(ed.get(f"/api/candidatures/{elp['candidature_id']}"))
    cert = detail["certificates"][0]
    issued = next(c for c in pki.issued() if c.x5t_s256 == cert["x5t_s256"])
    app = Starlette(routes=[Route("/", lambda _r: PlainTextResponse("ok"))])
    srv = start_https(app, pki, server_cert, ClientAuth.REQUIRED)
    try:

        def call() -> int:
            ctx = ssl.create_default_context(cafile=str(pki.ca_bundle))
            ctx.load_cert_chain(issued.cert_path, issued.key_path)
            return httpx.get(srv.url + "/", verify=ctx).status_code

        assert call() == 200
        guichet.college.ok(guichet.college.post(f"/api/habilitations/{elp['id']}/withdraw", {"reason": "retrait"}))
        assert pki.is_revoked(issued.serial)
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            call()
    finally:
        srv.stop()
    after = ed.ok(ed.get(f"/api/candidatures/{elp['candidature_id']}"))
    assert all(c["revoked"] for c in after["certificates"])
    entries = guichet.college.ok(guichet.college.get("/api/audit", params={"target": f"habilitation:{elp['id']}"}))
    assert any("certificats_revoques" in json.dumps(e) for e in entries)


def test_chapters_are_dated_and_queued_oldest_submission_first(
    guichet: Guichet, guichet_service: GuichetService
) -> None:
    """A chapter waits in the verifiers' queue since its own submission, not since its
    candidature's last change (which used to put an old submission behind newer ones)."""
    import sqlalchemy as sa

    from confiance.guichet.db import Candidature
    from confiance.guichet.web.queries import ReadModels

    t0 = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)
    now = [t0]
    guichet_service.clock = lambda: now[0]
    dossiers = []
    for name in ("Early", "Late"):
        co = guichet.company(name)
        cand = co.ok(guichet.candidature(co, "ELP", guichet.solution(co, f"P{name}", "proxy")), 201)
        guichet.to_evidence(co, cand)
        detail = guichet.deposit_all(co, cand["id"])
        dossiers.append((co, cand["id"]))
    (early, early_id), (late, late_id) = dossiers
    ch = detail["chapters"][0]["chapter_id"]
    now[0] = t0 + dt.timedelta(hours=1)
    out = early.ok(early.post(f"/api/candidatures/{early_id}/chapters/{ch}/submit"))
    assert dt.datetime.fromisoformat(out["submitted_at"]) == now[0] and out["decided_at"] is None
    now[0] = t0 + dt.timedelta(hours=2)
    late.ok(late.post(f"/api/candidatures/{late_id}/chapters/{ch}/submit"))
    with guichet_service.db.transaction() as s:  # the early dossier changes after both submissions
        s.execute(
            sa.update(Candidature).where(Candidature.id == early_id).values(updated_at=t0 + dt.timedelta(hours=3))
        )
    queue = ReadModels(guichet_service.db.engine).queue(kind="chapitre")
    assert [r["cid"] for r in queue.rows] == [early_id, late_id]
    assert queue.rows[0]["since"] == t0 + dt.timedelta(hours=1)
    now[0] = t0 + dt.timedelta(hours=4)
    out = guichet.verifier.ok(
        guichet.verifier.post(
            f"/api/candidatures/{early_id}/chapters/{ch}/review", {"decision": "complement", "reason": "à préciser"}
        )
    )
    assert dt.datetime.fromisoformat(out["decided_at"]) == now[0]
    assert dt.datetime.fromisoformat(out["submitted_at"]) == t0 + dt.timedelta(hours=1)
