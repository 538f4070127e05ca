"""The demo's guichet client (`confiance demo`) follows the guichet's rules: it declares the
parcours before the college grants, and orders production certificates from a CSR."""

from __future__ import annotations

from confiance.demo.guichet_client import Actor, grant, new_csr

from .helpers import Guichet


def test_demo_client_grants_after_the_parcours_and_orders_from_a_csr(guichet: Guichet) -> None:
    ed = guichet.company("Editeur Proxy")
    proxy = guichet.solution(ed, "ProxyP", "proxy")
    guichet.habilitate(ed, "ELP", proxy)
    host = guichet.company("Hebergeur")
    cand = host.ok(guichet.candidature(host, "OSP", proxy), 201)
    guichet.to_evidence(host, cand)
    guichet.deposit_all(host, cand["id"])
    guichet.review_all(host, cand["id"])
    op, college = Actor(guichet.http, host.token), Actor(guichet.http, guichet.college.token)
    hab = grant(college, op, cand["id"])
    assert hab["valid"] and hab["role"] == "OSP"
    key_pem, csr_pem = new_csr("proxyp-proxy")
    assert "PRIVATE KEY" in key_pem
    comp = proxy["components"][0]["id"]
    cert = op.call("POST", f"/api/candidatures/{cand['id']}/certificates", {"component_id": comp, "csr_pem": csr_pem})
    assert cert["environment"] == "production" and cert["key_pem"] is None
    op.call("POST", f"/api/candidatures/{cand['id']}/parcours/homologation_declaration")
    steps = {s["id"]: s["status"] for s in op.call("GET", f"/api/candidatures/{cand['id']}/parcours")}
    assert set(steps.values()) == {"fait"}
