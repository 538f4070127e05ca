"""Operators relying on other companies' habilitated solutions (issue 19 §1): found by
profile and by editor, solution or version; the link recorded; the editor told; the
relied-on habilitation's withdrawal puts the operator's at risk."""

from __future__ import annotations

from .helpers import Guichet


def test_operator_finds_relies_on_and_editor_is_told(guichet: Guichet) -> None:
    ed = guichet.company("Editeur Proxy")
    proxy = guichet.solution(ed, "ProxyP", "proxy")
    elp = guichet.habilitate(ed, "ELP", proxy)
    other = guichet.company("Autre Editeur")
    guichet.habilitate(other, "ELP", guichet.solution(other, "ProxyZ", "proxy"), version="9.1")
    host = guichet.company("Hebergeur Sante")

    def search(**params: str) -> list[str]:
        found = host.ok(host.get("/api/habilitations", params={"valid": "true", **params}))
        return sorted(h["solution_name"] for h in found)

    assert search(role="ELP") == ["ProxyP", "ProxyZ"]
    assert search(role="ELP", q="autre") == ["ProxyZ"]  # by editor
    assert search(role="ELP", q="editeur proxyp") == ["ProxyP"]  # every word must match
    assert search(role="ELP", q="proxyz") == ["ProxyZ"]  # by solution
    assert search(role="ELP", q="9.1") == ["ProxyZ"]  # by version
    assert search(role="ELU") == []
    [hit] = host.ok(host.get("/api/habilitations", params={"valid": "true", "q": "ProxyP"}))
    assert hit["software_version"] == "2.1.0" and hit["holder"] == "Editeur Proxy"

    cand = host.ok(guichet.candidature(host, "OSP", proxy), 201)  # another company's proxy
    assert cand["solution_id"] == proxy["id"] and cand["organisation_id"] != elp["organisation_id"]
    told = [n for n in ed.ok(ed.get("/api/notifications")) if n["kind"] == "dependance_declaree"]
    assert len(told) == 1 and "Hebergeur Sante" in told[0]["subject"] and f"n° {cand['id']}" in told[0]["body"]
    assert told[0]["candidature_id"] == elp["candidature_id"]  # filed under the editor's own dossier
    assert not [n for n in host.ok(host.get("/api/notifications")) if n["kind"] == "dependance_declaree"]
    audit = guichet.admin.ok(guichet.admin.get(f"/api/audit?target=candidature:{cand['id']}"))
    created = next(e for e in audit if e["action"] == "candidature.creer")
    assert created["after"]["relies_on"] == [elp["id"]]  # the link, recorded

    guichet.to_evidence(host, cand)
    guichet.deposit_all(host, cand["id"])
    guichet.review_all(host, cand["id"])
    osp = guichet.grant(host, cand["id"])
    assert osp["relies_on"] == [elp["id"]]
    guichet.college.ok(guichet.college.post(f"/api/habilitations/{elp['id']}/withdraw", {"reason": "abandon"}))
    assert guichet.admin.ok(guichet.admin.get(f"/api/habilitations/{osp['id']}"))["at_risk"]


def test_dossier_shows_the_whole_chain_it_relies_on(guichet: Guichet) -> None:
    ed = guichet.company("Editeur Proxy")
    proxy = guichet.solution(ed, "ProxyP", "proxy")
    lpsco = guichet.company("Editeur LPS")
    lps = guichet.solution(lpsco, "MonLPS", "logiciel_utilisateur")
    elu_cand = lpsco.ok(guichet.candidature(lpsco, "ELU", lps, proxy_solution_id=proxy["id"]), 201)
    [dep] = lpsco.ok(lpsco.get(f"/api/candidatures/{elu_cand['id']}"))["relies_on"]
    assert dep["role"] == "ELP" and dep["habilitation"] is None  # the proxy is not habilitated yet
    elp = guichet.habilitate(ed, "ELP", proxy)
    [dep] = lpsco.ok(lpsco.get(f"/api/candidatures/{elu_cand['id']}"))["relies_on"]
    assert dep["habilitation"]["id"] == elp["id"] and dep["state_label"] == "valide"
    guichet.to_evidence(lpsco, elu_cand)
    guichet.deposit_all(lpsco, elu_cand["id"])
    guichet.review_all(lpsco, elu_cand["id"])
    elu = guichet.grant(lpsco, elu_cand["id"])
    host = guichet.company("Hebergeur")
    osp = guichet.habilitate(host, "OSP", proxy)
    op = guichet.company("Operateur")
    osu = op.ok(guichet.candidature(op, "OSU", lps, osp_habilitation_id=osp["id"]), 201)
    seen = guichet.verifier.ok(guichet.verifier.get(f"/api/candidatures/{osu['id']}"))["relies_on"]
    by_role = {d["role"]: d for d in seen}
    assert by_role["ELU"]["habilitation"]["id"] == elu["id"]
    assert by_role["ELU"]["habilitation"]["solution_name"] == "MonLPS"
    assert by_role["ELU"]["habilitation"]["holder"] == "Editeur LPS"
    assert by_role["ELU"]["habilitation"]["software_version"] == "2.1.0"
    assert by_role["OSP"]["habilitation"]["holder"] == "Hebergeur" and by_role["OSP"]["state"] == "valide"
    guichet.college.ok(guichet.college.post(f"/api/habilitations/{elp['id']}/withdraw", {"reason": "faille"}))
    seen = guichet.verifier.ok(guichet.verifier.get(f"/api/candidatures/{osu['id']}"))["relies_on"]
    assert {d["role"]: d["state_label"] for d in seen} == {"ELU": "à risque", "OSP": "à risque"}
