"""Integrity rules (issue 19 §8): a refused candidature leaves nothing behind, solutions are
editable and deletable while no dossier names them, a salarié reads only the news of the
dossiers they are on."""

from __future__ import annotations

from typing import Any

from .helpers import Client, Guichet


def _salarie(g: Guichet, co: Client, email: str) -> tuple[Client, dict[str, Any]]:
    emp = co.ok(
        co.post(
            "/api/accounts",
            {"email": email, "name": "Salarié", "password": "mot-de-passe-solide", "org_role": "salarie"},
        ),
        201,
    )
    co.ok(co.post(f"/api/accounts/{emp['id']}/validate"))
    tok = co.ok(co.post("/api/auth/token", {"email": email, "password": "mot-de-passe-solide"}))["access_token"]
    return Client(g.http, tok), emp


def test_refused_candidature_with_a_new_solution_leaves_no_solution(guichet: Guichet) -> None:
    co = guichet.company("Acme")
    body = {
        "role": "OSP",  # the operator guichet is closed: no ELP habilitation exists for this proxy
        "new_solution": {"name": "Proxy Neuf", "kind": "proxy", "components": [{"kind": "PROXY", "name": "px"}]},
        "software_name": "Proxy Neuf",
        "software_version": "1.0",
    }
    r = co.post("/api/candidatures", body)
    assert r.status_code == 409 and r.json()["code"] == "dependances_absentes"
    assert co.ok(co.get("/api/solutions?mine=true")) == []  # the solution went with the refusal
    assert co.ok(co.get("/api/candidatures")) == []
    # one or the other: naming a solution and declaring one is refused before anything
    sol = guichet.solution(co, "Existante", "proxy")
    r = co.post("/api/candidatures", {**body, "role": "ELP", "solution_id": sol["id"]})
    assert r.status_code == 422
    # accepted: the solution and the candidature are created together
    cand = co.ok(co.post("/api/candidatures", {**body, "role": "ELP"}), 201)
    names = [s["name"] for s in co.ok(co.get("/api/solutions?mine=true"))]
    assert sorted(names) == ["Existante", "Proxy Neuf"] and cand["solution_id"] != sol["id"]


def test_solution_renamed_and_deleted_only_while_unused(guichet: Guichet) -> None:
    co = guichet.company("Acme")
    other = guichet.company("Autre")
    sol = guichet.solution(co, "Brouillon", "proxy")
    assert other.patch(f"/api/solutions/{sol['id']}", {"version": sol["version"], "name": "X"}).status_code == 404
    assert other.http.delete(f"/api/solutions/{sol['id']}", headers=other._h()).status_code == 404
    stale = co.patch(f"/api/solutions/{sol['id']}", {"version": sol["version"] + 5, "name": "Renommée"})
    assert stale.status_code == 409 and stale.json()["code"] == "conflit_version"
    renamed = co.ok(co.patch(f"/api/solutions/{sol['id']}", {"version": sol["version"], "name": "Renommée"}))
    assert renamed["name"] == "Renommée"
    assert co.http.delete(f"/api/solutions/{sol['id']}", headers=co._h()).status_code == 204
    assert co.get(f"/api/solutions/{sol['id']}").status_code == 404
    audit = guichet.admin.ok(guichet.admin.get(f"/api/audit?target=solution:{sol['id']}"))
    assert [e["action"] for e in audit][:2] == ["solution.supprimer", "solution.renommer"]
    # once a dossier names it, it stays (its components remain editable)
    used = guichet.solution(co, "Citee", "proxy")
    co.ok(guichet.candidature(co, "ELP", used), 201)
    r = co.patch(f"/api/solutions/{used['id']}", {"version": used["version"], "name": "Autre nom"})
    assert r.status_code == 409 and r.json()["code"] == "solution_utilisee"
    r = co.http.delete(f"/api/solutions/{used['id']}", headers=co._h())
    assert r.status_code == 409 and r.json()["code"] == "solution_utilisee"
    assert co.ok(co.get(f"/api/solutions/{used['id']}"))["name"] == "Citee"


def test_salarie_reads_only_the_news_of_their_dossiers(guichet: Guichet) -> None:
    co = guichet.company("Acme")
    sal, emp = _salarie(guichet, co, "s@acme.example")
    mine = sal.ok(guichet.candidature(sal, "ELP", guichet.solution(sal, "PX-sal", "proxy")), 201)
    theirs = co.ok(guichet.candidature(co, "ELP", guichet.solution(co, "PX-co", "proxy")), 201)
    for cand in (mine, theirs):
        owner = sal if cand is mine else co
        owner.ok(
            owner.post(
                f"/api/candidatures/{cand['id']}/submit",
                {"respect_referentiels_cgu": True, "exactitude_informations": True, "acceptation_audits": True},
            )
        )
        guichet.verifier.ok(
            guichet.verifier.post(
                f"/api/candidatures/{cand['id']}/return", {"reason": f"motif confidentiel {cand['id']}"}
            )
        )
    seen = {n["candidature_id"] for n in sal.ok(sal.get("/api/notifications"))}
    assert seen == {mine["id"]}
    bodies = " ".join(n["body"] for n in sal.ok(sal.get("/api/notifications")))
    assert f"motif confidentiel {theirs['id']}" not in bodies
    # the mandataire reads the whole company's; a collaborator is added: they now read it too
    assert {n["candidature_id"] for n in co.ok(co.get("/api/notifications"))} == {mine["id"], theirs["id"]}
    co.ok(co.post(f"/api/candidatures/{theirs['id']}/collaborators", {"account_id": emp["id"]}))
    assert {n["candidature_id"] for n in sal.ok(sal.get("/api/notifications"))} == {mine["id"], theirs["id"]}


def test_file_refusals_read_in_words_not_mime_types(guichet: Guichet) -> None:
    co = guichet.company("Acme")

    def upload(data: bytes, ctype: str) -> str:
        r = co.http.post("/api/files", content=data, headers={**co._h(), "Content-Type": ctype})
        assert r.status_code == 422, r.text
        return str(r.json()["message"])

    msg = upload(b"MZ\x90\x00", "application/x-msdownload")
    assert "PDF" in msg and "image PNG" in msg and "application/" not in msg
    msg = upload(b"pas un pdf", "application/pdf")
    assert msg == "le contenu du fichier n'est pas celui d'un fichier PDF"
