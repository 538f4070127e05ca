"""API rules beyond the happy path: rights, illegal transitions, concurrency, evidence checks, audit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from confiance.core.jose import KeyStore, TokenError, verify_jwt
from confiance.guichet.domain.model import AnsRole
from confiance.guichet.services import GuichetService
from confiance.pki import Pki

from .helpers import PDF, Client, Guichet, conformity_report, pentest_payload


def _elp_in_evidence(g: Guichet, name: str = "Acme") -> tuple[Client, dict, dict]:
    co = g.company(name)
    sol = g.solution(co, name + "Proxy", "proxy")
    cand = co.ok(g.candidature(co, "ELP", sol), 201)
    g.to_evidence(co, cand)
    return co, sol, cand


def test_authentication_and_company_isolation(guichet: Guichet) -> None:
    anon = Client(guichet.http)
    r = anon.get("/api/candidatures")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert Client(guichet.http, "cgt_forged").get("/api/me").status_code == 401
    co, _sol, cand = _elp_in_evidence(guichet)
    other = guichet.company("Concurrent")
    assert other.get(f"/api/candidatures/{cand['id']}").status_code == 404  # existence not revealed
    assert other.post(f"/api/candidatures/{cand['id']}/abandon").status_code == 404
    # a company cannot instruct its own dossier nor decide it
    assert (
        co.post(f"/api/candidatures/{cand['id']}/chapters/transport/review", {"decision": "accepter"}).status_code
        == 403
    )
    assert co.post(f"/api/candidatures/{cand['id']}/decision", {"decision": "accorder"}).status_code == 403
    assert co.post("/api/habilitations/1/withdraw", {"reason": "x"}).status_code == 403
    assert co.get("/api/audit").status_code == 403
    # the verifier cannot decide, the college cannot instruct
    assert (
        guichet.verifier.post(f"/api/candidatures/{cand['id']}/decision", {"decision": "accorder"}).status_code == 403
    )
    assert (
        guichet.college.post(
            f"/api/candidatures/{cand['id']}/chapters/transport/review", {"decision": "accepter"}
        ).status_code
        == 403
    )


def test_account_roles(guichet: Guichet) -> None:
    anon = Client(guichet.http)
    acc = anon.ok(
        anon.post(
            "/api/auth/register",
            {
                "email": "m@new.example",
                "name": "M",
                "password": "mot-de-passe-solide",
                "organisation": {"name": "New", "siren": "732829320"},
            },
        ),
        201,
    )
    assert acc["validated"] is False and acc["org_role"] == "mandataire"
    pending = Client(
        guichet.http,
        anon.ok(anon.post("/api/auth/token", {"email": "m@new.example", "password": "mot-de-passe-solide"}))[
            "access_token"
        ],
    )
    r = pending.post("/api/solutions", {"name": "S", "kind": "proxy", "components": [{"kind": "PROXY", "name": "p"}]})
    assert r.status_code == 403  # identity not yet validated by ANS
    assert (
        anon.post("/api/auth/token", {"email": "m@new.example", "password": "mauvais-mot-de-passe"}).status_code == 401
    )
    bad = anon.post(
        "/api/auth/register",
        {
            "email": "x@y.example",
            "name": "X",
            "password": "mot-de-passe-solide",
            "organisation": {"name": "X", "siren": "732829321"},
        },
    )
    assert bad.status_code == 422 and "Luhn" in bad.json()["message"]
    assert (
        anon.post(
            "/api/auth/register",
            {
                "email": "x@y.example",
                "name": "X",
                "password": "mot-de-passe-solide",
                "organisation": {"name": "X", "country": "US", "registration_number": "1"},
            },
        ).status_code
        == 422
    )

    co = guichet.company("Acme")
    emp = co.ok(
        co.post(
            "/api/accounts",
            {"email": "s@acme.example", "name": "Salarié", "password": "mot-de-passe-solide", "org_role": "salarie"},
        ),
        201,
    )
    assert emp["validated"] is False
    assert (
        co.post("/api/accounts", {"email": "a@acme.example", "name": "A", "org_role": "mandataire"}).status_code == 403
    )
    assert (
        co.post("/api/accounts", {"email": "b@acme.example", "name": "B", "ans_roles": ["college"]}).status_code == 403
    )
    co.ok(co.post(f"/api/accounts/{emp['id']}/validate"))
    sal = Client(
        guichet.http,
        co.ok(co.post("/api/auth/token", {"email": "s@acme.example", "password": "mot-de-passe-solide"}))[
            "access_token"
        ],
    )
    sol = guichet.solution(co, "PX", "proxy")
    cand = co.ok(guichet.candidature(co, "ELP", sol), 201)
    assert sal.get(f"/api/candidatures/{cand['id']}").status_code == 403  # not a collaborator yet
    co.ok(co.post(f"/api/candidatures/{cand['id']}/collaborators", {"account_id": emp["id"]}))
    sal.ok(sal.get(f"/api/candidatures/{cand['id']}"))


def test_illegal_transition_changes_nothing(guichet: Guichet, guichet_service: GuichetService) -> None:
    co = guichet.company("Acme")
    sol = guichet.solution(co, "PX", "proxy")
    cand = co.ok(guichet.candidature(co, "ELP", sol), 201)
    before = guichet.admin.ok(guichet.admin.get("/api/audit", params={"limit": 1000}))
    r = guichet.college.post(f"/api/candidatures/{cand['id']}/decision", {"decision": "accorder"})
    assert r.status_code == 409 and "impossible depuis l'état « brouillon »" in r.json()["message"]
    r = guichet.verifier.post(f"/api/candidatures/{cand['id']}/validate", {})
    assert r.status_code == 409
    r = co.post(
        f"/api/candidatures/{cand['id']}/evidence", {"requirement_id": "TLS-01", "kind": "document", "description": "x"}
    )
    assert r.status_code == 409 and "dépôt de preuves n'est pas ouvert" in r.json()["message"]
    r = co.post(
        f"/api/candidatures/{cand['id']}/submit",
        {"respect_referentiels_cgu": True, "exactitude_informations": False, "acceptation_audits": True},
    )
    assert r.status_code == 422 and "engagements" in r.json()["message"]
    after = co.ok(co.get(f"/api/candidatures/{cand['id']}"))
    assert after["status"] == "brouillon" and after["version"] == cand["version"]
    assert guichet.admin.ok(guichet.admin.get("/api/audit", params={"limit": 1000})) == before


def test_lost_update_is_refused(guichet: Guichet) -> None:
    co = guichet.company("Acme")
    sol = guichet.solution(co, "PX", "proxy")
    cand = co.ok(guichet.candidature(co, "ELP", sol), 201)
    v = cand["version"]
    first = co.ok(co.patch(f"/api/candidatures/{cand['id']}", {"version": v, "description": "édition A"}))
    assert first["version"] == v + 1
    r = co.patch(f"/api/candidatures/{cand['id']}", {"version": v, "description": "édition B"})
    assert r.status_code == 409 and r.json()["current_version"] == v + 1
    assert co.ok(co.get(f"/api/candidatures/{cand['id']}"))["description"] == "édition A"


def test_concurrent_writers_cannot_both_commit(guichet: Guichet, guichet_service: GuichetService) -> None:
    """Two sessions read version N, both update: the ORM version check refuses the second."""
    from sqlalchemy.orm.exc import StaleDataError

    from confiance.guichet.db import Candidature

    co = guichet.company("Acme")
    sol = guichet.solution(co, "PX", "proxy")
    cand = co.ok(guichet.candidature(co, "ELP", sol), 201)
    db = guichet_service.db
    s1, s2 = db._sessions(), db._sessions()
    c2 = s2.get(Candidature, cand["id"])  # writer 2 reads version N …
    s2.commit()  # … (its read transaction ends; SQLite would otherwise serialise the two)
    c1 = s1.get(Candidature, cand["id"])  # writer 1 reads version N too
    assert c1 is not None and c2 is not None and c1.row_version == c2.row_version
    c1.description = "un"
    s1.commit()
    c2.description = "deux"
    with pytest.raises(StaleDataError):
        s2.commit()
    s1.close()
    s2.close()


def test_declaration_edit_after_deposit_flags_evidence(guichet: Guichet) -> None:
    co, _sol, cand = _elp_in_evidence(guichet)
    guichet.deposit_all(co, cand["id"])
    detail = guichet.review_all(co, cand["id"])
    assert detail["status"] == "college"
    r = co.patch(f"/api/candidatures/{cand['id']}", {"version": detail["version"], "software_version": "2.2.0"})
    assert r.status_code == 200, r.text
    detail = co.ok(co.get(f"/api/candidatures/{cand['id']}"))
    assert detail["status"] == "depot_preuves"
    chapters = {c["chapter_id"]: c for c in detail["chapters"]}
    assert chapters["test_intrusion"]["status"] == "a_revoir" and chapters["conformite"]["status"] == "a_revoir"
    assert chapters["transport"]["status"] == "accepte"
    flagged = [e for e in detail["evidence"] if e["kind"] in ("test_intrusion", "rapport_conformite")]
    assert flagged and all(e["status"] == "a_revoir" for e in flagged)
    # the old pentest (version 2.1.0) cannot simply be resubmitted
    assert co.post(f"/api/candidatures/{cand['id']}/chapters/test_intrusion/submit").status_code == 422


def test_conformity_report_signature_and_content(guichet: Guichet) -> None:
    co, _sol, cand = _elp_in_evidence(guichet)
    url = f"/api/candidatures/{cand['id']}/evidence"
    forged = conformity_report(KeyStore(None, algs=("ES256",)), "2.1.0")  # signed by someone else
    r = co.post(url, {"requirement_id": "CONF-01", "kind": "rapport_conformite", "conformity_report": forged})
    assert r.status_code == 422 and r.json()["code"] == "signature_invalide"
    genuine = conformity_report(guichet.conformity_keys, "2.1.0")
    h, p, sig = genuine.split(".")
    tampered = f"{h}.{p[:-4]}AAAA.{sig}"
    assert (
        co.post(
            url, {"requirement_id": "CONF-01", "kind": "rapport_conformite", "conformity_report": tampered}
        ).status_code
        == 422
    )
    failing = conformity_report(guichet.conformity_keys, "2.1.0", failed=1)
    r = co.post(url, {"requirement_id": "CONF-01", "kind": "rapport_conformite", "conformity_report": failing})
    assert r.status_code == 422 and "C0" in r.json()["message"]
    wrong_version = conformity_report(guichet.conformity_keys, "1.0")
    assert (
        co.post(
            url, {"requirement_id": "CONF-01", "kind": "rapport_conformite", "conformity_report": wrong_version}
        ).status_code
        == 422
    )
    co.ok(co.post(url, {"requirement_id": "CONF-01", "kind": "rapport_conformite", "conformity_report": genuine}), 201)


def test_pentest_other_refusals(guichet: Guichet) -> None:
    co, _sol, cand = _elp_in_evidence(guichet)
    url = f"/api/candidatures/{cand['id']}/evidence"
    pdf = co.ok(co.http.post("/api/files", content=PDF, headers={**co._h(), "Content-Type": "application/pdf"}), 201)
    base = {"requirement_id": "PEN-01", "kind": "test_intrusion", "file_sha256": pdf["sha256"]}
    r = co.post(url, {**base, "pentest": pentest_payload("Acme" + "Proxy", "2.1.0", provider="Hackers Anonymes")})
    assert r.status_code == 422 and "PASSI" in r.json()["message"]
    r = co.post(url, {**base, "pentest": pentest_payload("AcmeProxy", "2.0.0")})
    assert r.status_code == 422 and "version 2.0.0" in r.json()["message"]
    r = co.post(
        url,
        {
            **base,
            "pentest": pentest_payload("AcmeProxy", "2.1.0", high_ko=1, result="L'application peut être référencée"),
        },
    )
    assert r.status_code == 422 and "haute" in r.json()["message"] and "contredit" in r.json()["message"]
    r = co.post(
        url, {"requirement_id": "PEN-01", "kind": "test_intrusion", "pentest": pentest_payload("AcmeProxy", "2.1.0")}
    )
    assert r.status_code == 422 and "PDF" in r.json()["message"]
    # the PASSI registry is editable: an admin adds the provider, the report is then accepted
    guichet.admin.ok(guichet.admin.post("/api/passi", {"name": "Hackers Anonymes", "reference": "PASSI-X"}), 201)
    co.ok(co.post(url, {**base, "pentest": pentest_payload("AcmeProxy", "2.1.0", provider="Hackers Anonymes")}), 201)


def test_file_limits(guichet: Guichet) -> None:
    co = guichet.company("Acme")
    h = co._h()
    r = co.http.post("/api/files", content=b"MZ\x90\x00 not a pdf", headers={**h, "Content-Type": "application/pdf"})
    assert r.status_code == 422 and r.json()["code"] == "type_incoherent"
    r = co.http.post("/api/files", content=b"x", headers={**h, "Content-Type": "application/x-msdownload"})
    assert r.status_code == 422
    r = co.http.post(
        "/api/files", content=b"%PDF-" + b"0" * (64 * 1024), headers={**h, "Content-Type": "application/pdf"}
    )
    assert r.status_code == 413
    f = co.ok(co.http.post("/api/files", content=PDF, headers={**h, "Content-Type": "application/pdf"}), 201)
    import hashlib

    assert f["sha256"] == hashlib.sha256(PDF).hexdigest()
    assert co.http.get(f"/api/files/{f['sha256']}", headers=h).content == PDF
    other = guichet.company("Autre")
    assert other.get(f"/api/files/{f['sha256']}").status_code == 404


def test_grant_refused_while_dependency_invalid(guichet: Guichet) -> None:
    ed = guichet.company("Editeur Proxy")
    proxy = guichet.solution(ed, "ProxyP", "proxy")
    lpsco = guichet.company("Editeur LPS")
    lps = guichet.solution(lpsco, "MonLPS", "logiciel_utilisateur")
    cand = lpsco.ok(guichet.candidature(lpsco, "ELU", lps, proxy_solution_id=proxy["id"]), 201)
    assert (
        lpsco.post(
            "/api/candidatures",
            {
                "role": "ELU",
                "solution_id": lps["id"],
                "software_name": "MonLPS",
                "software_version": "1",
                "proxy_solution_id": proxy["id"],
            },
        ).status_code
        == 409
    )  # one dossier per proxy
    guichet.to_evidence(lpsco, cand)
    guichet.deposit_all(lpsco, cand["id"])
    guichet.review_all(lpsco, cand["id"])
    guichet.complete_parcours(lpsco, cand["id"])
    r = guichet.college.post(f"/api/candidatures/{cand['id']}/decision", {"decision": "accorder"})
    assert r.status_code == 409 and r.json()["code"] == "dependances_invalides"
    assert lpsco.ok(lpsco.get(f"/api/candidatures/{cand['id']}"))["status"] == "college"
    guichet.habilitate(ed, "ELP", proxy)
    hab = guichet.grant(lpsco, cand["id"])
    assert hab["role"] == "ELU" and hab["valid"]


def test_expiry_sweep_notifies_and_cascades(guichet: Guichet, guichet_service: GuichetService) -> None:
    ed = guichet.company("Editeur Proxy")
    proxy = guichet.solution(ed, "ProxyP", "proxy")
    elp = guichet.habilitate(ed, "ELP", proxy)
    host = guichet.company("Hébergeur")
    osp = guichet.habilitate(host, "OSP", proxy)
    until = dt.datetime.fromisoformat(elp["valid_until"])
    out = guichet_service.sweep(now=until - dt.timedelta(days=80))
    assert out.notifications == 2 and not out.expired  # 90-day notices for ELP and OSP (same date)
    assert guichet_service.sweep(now=until - dt.timedelta(days=79)).notifications == 0  # deduplicated
    assert guichet_service.sweep(now=until - dt.timedelta(days=20)).notifications == 2  # 30-day notices
    out = guichet_service.sweep(now=until)
    assert out.expired == [elp["id"]] and out.flagged_at_risk == [osp["id"]]  # the OSP was granted a moment later
    kinds = {n["kind"] for n in ed.ok(ed.get("/api/notifications"))}
    assert {"expiration_90j", "expiration_30j", "decision"} <= kinds


def test_suspension_then_reinstatement_clears_risk(guichet: Guichet) -> None:
    ed = guichet.company("Editeur Proxy")
    proxy = guichet.solution(ed, "ProxyP", "proxy")
    elp = guichet.habilitate(ed, "ELP", proxy)
    host = guichet.company("Hébergeur")
    osp = guichet.habilitate(host, "OSP", proxy)
    guichet.college.ok(guichet.college.post(f"/api/habilitations/{elp['id']}/suspend", {"reason": "faille"}))
    assert guichet.admin.ok(guichet.admin.get(f"/api/habilitations/{osp['id']}"))["at_risk"]
    assert guichet.college.post(f"/api/habilitations/{elp['id']}/suspend", {"reason": "encore"}).status_code == 409
    guichet.college.ok(guichet.college.post(f"/api/habilitations/{elp['id']}/reinstate", {"reason": "corrigé"}))
    assert not guichet.admin.ok(guichet.admin.get(f"/api/habilitations/{osp['id']}"))["at_risk"]


def test_referentiel_new_version_shows_changes_and_adoption(guichet: Guichet) -> None:
    co, _sol, cand = _elp_in_evidence(guichet)
    ref = guichet.admin.ok(guichet.admin.get("/api/referentiel"))
    new = {
        "version": "2026.1",
        "chapters": ref["chapters"],
        "requirements": [{k: v for k, v in r.items() if v is not None} for r in ref["requirements"]],
    }
    new["requirements"].append(
        {
            "id": "TOK-03",
            "chapter": "jetons",
            "text": "Les jetons sont liés au certificat (RFC 8705).",
            "actors": ["ELP"],
            "level": "edc",
            "evidence": ["document"],
        }
    )
    assert co.post("/api/referentiel", new).status_code == 403
    guichet.admin.ok(guichet.admin.post("/api/referentiel", new), 201)
    assert guichet.admin.post("/api/referentiel", new).status_code == 409
    diff = co.ok(co.get(f"/api/candidatures/{cand['id']}/referentiel-changes"))
    assert [r["id"] for r in diff["added"]] == ["TOK-03"] and not diff["up_to_date"]
    assert any(n["kind"] == "referentiel_modifie" for n in co.ok(co.get("/api/notifications")))
    detail = co.ok(co.post(f"/api/candidatures/{cand['id']}/referentiel/adopt", {}))
    jetons = next(c for c in detail["chapters"] if c["chapter_id"] == "jetons")
    assert "TOK-03" in jetons["requirement_ids"] and detail["referentiel_version"] == "2026.1"


def test_trust_list_signature_is_checked(guichet: Guichet) -> None:
    token = guichet.http.get("/trust-list").text
    jwks = guichet.http.get("/trust-list/jwks").json()
    assert verify_jwt(token, jwks)["habilitations"] == []
    h, p, s = token.split(".")
    with pytest.raises(TokenError):
        verify_jwt(f"{h}.{p[:-2]}xx.{s}", jwks)
    with pytest.raises(TokenError):
        verify_jwt(token, KeyStore(None, algs=("ES256",)).jwks())


def test_audit_chain_verifies_and_detects_an_edited_row(guichet: Guichet, guichet_service: GuichetService) -> None:
    co, _sol, cand = _elp_in_evidence(guichet)
    ok = guichet.admin.ok(guichet.admin.get("/api/audit/verify"))
    assert ok["ok"] and ok["checked"] > 5
    entries = co.ok(co.get(f"/api/candidatures/{cand['id']}/audit"))
    assert {e["action"] for e in entries} >= {
        "candidature.creer",
        "candidature.soumettre_formulaire",
        "candidature.valider_formulaire",
    }
    with guichet_service.db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE audit_log SET actor = 'quelqu''un d''autre' WHERE action = 'candidature.valider_formulaire'"
            )
        )
    bad = guichet.admin.ok(guichet.admin.get("/api/audit/verify"))
    assert not bad["ok"] and "modifiée" in bad["reason"]


def test_audit_detects_a_deleted_row(guichet: Guichet, guichet_service: GuichetService) -> None:
    guichet.company("Acme")
    with guichet_service.db.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_log WHERE seq = 2"))
    assert not guichet_service.verify_audit().ok


def test_renewal_replaces_the_habilitation_and_keeps_dependents(guichet: Guichet) -> None:
    ed = guichet.company("Editeur Proxy")
    proxy = guichet.solution(ed, "ProxyP", "proxy")
    elp = guichet.habilitate(ed, "ELP", proxy)
    host = guichet.company("Hébergeur")
    osp = guichet.habilitate(host, "OSP", proxy)
    new = guichet.habilitate(ed, "ELP", proxy, renews_habilitation_id=elp["id"])
    habs = {h["id"]: h for h in guichet.admin.ok(guichet.admin.get("/api/habilitations"))}
    assert habs[elp["id"]]["status"] == "renouvelee" and not habs[elp["id"]]["valid"]
    assert habs[new["id"]]["valid"] and habs[osp["id"]]["relies_on"] == [new["id"]] and not habs[osp["id"]]["at_risk"]
    other = guichet.company("Autre")
    sol = guichet.solution(other, "Autre", "proxy")
    r = guichet.candidature(other, "ELP", sol, renews_habilitation_id=new["id"])
    assert r.status_code == 422  # one renews only one's own habilitation


def test_validity_is_configurable(guichet: Guichet, guichet_service: GuichetService) -> None:
    guichet_service.settings.validity_years = 1
    co = guichet.company("Acme")
    hab = guichet.habilitate(co, "ELP", guichet.solution(co, "PX", "proxy"))
    granted, until = dt.datetime.fromisoformat(hab["granted_at"]), dt.datetime.fromisoformat(hab["valid_until"])
    assert until.year - granted.year == 1


def test_identical_files_from_two_companies(guichet: Guichet) -> None:
    """Content addressing stores the bytes once; each uploading company may use them, others may not."""
    a, b, c = guichet.company("A"), guichet.company("B"), guichet.company("C")
    fa = a.ok(a.http.post("/api/files", content=PDF, headers={**a._h(), "Content-Type": "application/pdf"}), 201)
    assert c.get(f"/api/files/{fa['sha256']}").status_code == 404
    fb = b.ok(b.http.post("/api/files", content=PDF, headers={**b._h(), "Content-Type": "application/pdf"}), 201)
    assert fa["sha256"] == fb["sha256"]
    assert b.http.get(f"/api/files/{fb['sha256']}", headers=b._h()).content == PDF


def test_complement_request_cycle_and_outbox(guichet: Guichet, guichet_service: GuichetService) -> None:
    co, _sol, cand = _elp_in_evidence(guichet)
    cid = cand["id"]
    co.ok(
        co.post(
            f"/api/candidatures/{cid}/evidence", {"requirement_id": "TLS-01", "kind": "document", "description": "v1"}
        ),
        201,
    )
    r = co.post(f"/api/candidatures/{cid}/chapters/transport/submit")
    assert r.status_code == 422 and "MTLS-01" in r.json()["message"]  # incomplete chapter is not reviewed
    co.ok(
        co.post(
            f"/api/candidatures/{cid}/evidence", {"requirement_id": "MTLS-01", "kind": "document", "description": "v1"}
        ),
        201,
    )
    ch = co.ok(co.post(f"/api/candidatures/{cid}/chapters/transport/submit"))
    assert ch["status"] == "soumis"
    assert (
        co.post(
            f"/api/candidatures/{cid}/evidence", {"requirement_id": "TLS-01", "kind": "document", "description": "v2"}
        ).status_code
        == 409
    )  # under review
    assert (
        guichet.verifier.post(
            f"/api/candidatures/{cid}/chapters/transport/review", {"decision": "complement"}
        ).status_code
        == 409
    )  # reason required
    stale = guichet.verifier.post(
        f"/api/candidatures/{cid}/chapters/transport/review", {"decision": "accepter", "version": ch["version"] - 1}
    )
    assert stale.status_code == 409 and stale.json()["code"] == "conflit_version"
    guichet.verifier.ok(
        guichet.verifier.post(
            f"/api/candidatures/{cid}/chapters/transport/review",
            {"decision": "complement", "reason": "précisez les suites TLS"},
        )
    )
    pending = guichet_service.pending_notifications()
    assert any("complément demandé" in subject for _i, subject, _b in pending)
    guichet_service.mark_sent([i for i, _s, _b in pending])
    assert guichet_service.pending_notifications() == []
    co.ok(
        co.post(
            f"/api/candidatures/{cid}/evidence",
            {"requirement_id": "TLS-01", "kind": "document", "description": "v2 : TLS 1.2 et 1.3"},
        ),
        201,
    )
    co.ok(co.post(f"/api/candidatures/{cid}/chapters/transport/submit"))
    ch = guichet.verifier.ok(
        guichet.verifier.post(f"/api/candidatures/{cid}/chapters/transport/review", {"decision": "accepter"})
    )
    assert ch["status"] == "accepte"
    detail = co.ok(co.get(f"/api/candidatures/{cid}"))
    tls = [e for e in detail["evidence"] if e["requirement_id"] == "TLS-01"]
    assert [e["status"] for e in tls] == ["remplacee", "valide"]


def test_component_update_is_versioned(guichet: Guichet) -> None:
    co = guichet.company("Acme")
    sol = guichet.solution(co, "PX", "proxy")
    comps = [{"kind": "PROXY", "name": "PX-proxy"}, {"kind": "EAI", "name": "module-metier"}]
    new = co.ok(
        co.http.put(
            f"/api/solutions/{sol['id']}/components",
            json={"version": sol["version"], "components": comps},
            headers=co._h(),
        )
    )
    assert new["version"] == sol["version"] + 1 and new["needs_cnda"]  # an embedded add-on needs CNDA
    r = co.http.put(
        f"/api/solutions/{sol['id']}/components",
        json={"version": sol["version"], "components": comps[:1]},
        headers=co._h(),
    )
    assert r.status_code == 409
    bad = co.http.put(
        f"/api/solutions/{sol['id']}/components",
        json={"version": new["version"], "components": [{"kind": "LPS", "name": "x"}]},
        headers=co._h(),
    )
    assert bad.status_code == 422


def test_login_throttling(guichet: Guichet, guichet_service: GuichetService) -> None:
    guichet_service.settings.login_max_failures = 3
    anon = Client(guichet.http)
    guichet.company("Acme")
    email = "mandataire@acme.example"
    for _ in range(3):
        assert anon.post("/api/auth/token", {"email": email, "password": "mauvais"}).status_code == 401
    r = anon.post("/api/auth/token", {"email": email, "password": "mot-de-passe-solide"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0  # even the right password, for a while
    assert (
        anon.post(
            "/api/auth/token", {"email": "verificateur@ans.example", "password": "mot-de-passe-solide"}
        ).status_code
        == 200
    )


def test_login_throttling_is_shared_by_processes_and_ends_with_its_window(
    tmp_path: Path, pki: Pki, conformity_keys: KeyStore
) -> None:
    """Two services on one database stand for two guichet processes behind a load
    balancer: failures seen by one count for the other; the window ends the lockout."""
    from sqlalchemy import func, select

    from confiance.guichet import schemas as sc
    from confiance.guichet.db import LoginFailure
    from confiance.guichet.services import ServiceError

    from .conftest import make_service

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a = make_service(url, tmp_path / "a", pki, conformity_keys)
    b = make_service(url, tmp_path / "b", pki, conformity_keys)
    now = [dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)]
    for svc in (a, b):
        svc.clock = lambda: now[0]
        svc.settings.login_max_failures = 3
        svc.settings.login_window_seconds = 600
    a.bootstrap_account("v@ans.example", "V", "mot-de-passe-solide", [AnsRole.VERIFIER])
    right = sc.LoginIn(email="v@ans.example", password="mot-de-passe-solide", label="t")
    wrong = sc.LoginIn(email="V@ans.example", password="mauvais", label="t")  # same address once normalised

    def status(svc: GuichetService, data: sc.LoginIn) -> int:
        try:
            svc.login(data)
        except ServiceError as exc:
            return exc.status
        return 200

    assert [status(a, wrong), status(b, wrong), status(a, wrong)] == [401, 401, 401]
    with pytest.raises(ServiceError) as ei:
        b.login(right)  # the other process refuses too, even the right password
    assert ei.value.status == 429
    assert 0 < int(ei.value.extra["retry_after"]) <= 601
    assert status(a, right) == 429
    now[0] += dt.timedelta(seconds=601)  # the window has passed
    assert status(b, right) == 200
    with a.db.read() as s:  # a success forgets the address's failures
        assert s.scalar(select(func.count()).select_from(LoginFailure)) == 0
    assert status(a, wrong) == 401
    now[0] += dt.timedelta(seconds=601)
    assert status(b, wrong) == 401  # and a failure drops the ones past the window
    with a.db.read() as s:
        assert s.scalar(select(func.count()).select_from(LoginFailure)) == 1
    a.db.dispose()
    b.db.dispose()


def test_background_sweep_expires_and_notifies(guichet_service: GuichetService) -> None:
    """The app's lifespan runs the sweep periodically (no operator action needed)."""
    import time

    from confiance.core.server import ServerThread, ServiceConfig
    from confiance.guichet.api import create_app
    from confiance.guichet.db import Candidature, Habilitation, Organisation, Solution

    now = dt.datetime.now(dt.UTC)
    with guichet_service.db.transaction() as s:
        org = Organisation(name="O", country="FR", created_at=now)
        s.add(org)
        s.flush()
        sol = Solution(organisation_id=org.id, name="S", kind="proxy", created_at=now)
        s.add(sol)
        s.flush()
        s.execute(
            sa.text(
                "INSERT INTO accounts (email, name, ans_roles, validated, active, created_at) VALUES ('x@x', 'x', '[]', 1, 1, :t)"
            ),
            {"t": now},
        )
        acc_id = s.execute(sa.text("SELECT id FROM accounts WHERE email = 'x@x'")).scalar_one()
        cand = Candidature(
            organisation_id=org.id,
            created_by=acc_id,
            role="ELP",
            level="edc",
            path="trust_space",
            solution_id=sol.id,
            software_name="S",
            software_version="1",
            status="accordee",
            referentiel_version="2025.1",
            created_at=now,
            updated_at=now,
        )
        s.add(cand)
        s.flush()
        s.add(
            Habilitation(
                candidature_id=cand.id,
                organisation_id=org.id,
                role="ELP",
                environment="BAS",
                solution_id=sol.id,
                granted_at=now,
                valid_until=now + dt.timedelta(days=20),
                status="valide",
                relies_on=[],
            )
        )
    with ServerThread(create_app(guichet_service, sweep_interval=0.05), ServiceConfig(port=0)):
        deadline = time.monotonic() + 10
        while not [n for n in guichet_service.pending_notifications() if "expiration" in n[1]]:
            assert time.monotonic() < deadline, "the background sweep never ran"
            time.sleep(0.05)
    subjects = [n[1] for n in guichet_service.pending_notifications()]
    assert sum("expiration dans" in x for x in subjects) == 2  # within 90 and within 30 days, once each


def test_osu_must_name_an_operator_of_the_software_proxy(guichet: Guichet) -> None:
    ed = guichet.company("Editeur Proxy")
    p1, p2 = guichet.solution(ed, "ProxyUn", "proxy"), guichet.solution(ed, "ProxyDeux", "proxy")
    guichet.habilitate(ed, "ELP", p1)
    guichet.habilitate(ed, "ELP", p2)
    lpsco = guichet.company("Editeur LPS")
    lps = guichet.solution(lpsco, "MonLPS", "logiciel_utilisateur")
    guichet.habilitate(lpsco, "ELU", lps, proxy_solution_id=p1["id"])
    host = guichet.company("Hébergeur")
    osp2 = guichet.habilitate(host, "OSP", p2)
    op = guichet.company("Opérateur")
    r = guichet.candidature(op, "OSU", lps, osp_habilitation_id=osp2["id"])
    assert r.status_code == 422 and "ProxyUn" in r.json()["message"]


def test_revoked_api_token_no_longer_authenticates(guichet: Guichet) -> None:
    """DELETE /api/auth/token must really revoke (it once ran in a rolled-back read transaction)."""
    company = guichet.company("Revocation SA")
    assert company.get("/api/me").status_code == 200
    r = company.http.delete("/api/auth/token", headers=company._h())
    assert r.status_code in (200, 204), r.text
    assert company.get("/api/me").status_code == 401
