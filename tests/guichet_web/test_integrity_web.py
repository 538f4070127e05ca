"""Integrity in the UI (issue 19 §8): a refused wizard leaves no solution behind, unused
solutions are renamed and deleted from their page, a salarié's dashboard shows only the
news of their dossiers."""

from __future__ import annotations

import re

import pytest

from confiance.guichet import schemas as sc
from confiance.guichet.domain.model import Role

from .conftest import Site, login, shot
from .factory import principal, solution

pytestmark = [pytest.mark.browser]


def test_refused_wizard_leaves_no_solution(site: Site, browser) -> None:
    page = login(browser, site, "mandataire_b")
    page.goto(site.url + "/candidatures/nouvelle")
    page.get_by_role("radio", name=re.compile("^OSP")).check()
    page.get_by_label("Nom de la nouvelle solution").fill("Proxy refuse")
    page.get_by_role("checkbox", name="Proxy e-Santé", exact=True).check()
    page.get_by_label("Nom du logiciel").fill("Proxy refusé")
    page.get_by_label("Version candidate").fill("1.0")
    page.get_by_role("button", name="Enregistrer le brouillon").click()
    assert "aucune habilitation ELP" in page.locator("#erreurs").inner_text()
    # the form kept what was typed, and offers no half-created solution
    assert page.get_by_label("Nom du logiciel").input_value() == "Proxy refusé"
    assert "Proxy refuse" not in page.locator("#f-solution").inner_text()
    page.goto(site.url + "/solutions")
    assert "Proxy refuse" not in page.locator("main").inner_text()
    me = principal(site.service, site.accounts["mandataire_b"])
    assert all(s.name != "Proxy refuse" for s in site.service.list_solutions(me, mine=True))


def test_unused_solution_renamed_then_deleted_used_one_kept(site: Site, browser) -> None:
    svc = site.service
    a = principal(svc, site.accounts["mandataire_a"])
    free = solution(svc, a, "Solution Libre", proxy=True)
    used = solution(svc, a, "Solution Citee", proxy=True)
    svc.create_candidature(
        a, sc.CandidatureIn(role=Role.ELP, solution_id=used.id, software_name="Citée", software_version="1.0")
    )
    page = login(browser, site, "mandataire_a")
    page.get_by_role("link", name="Solutions").click()
    card = page.locator(f"#sol-{used.id}")
    assert "ne peut plus être renommée" in card.inner_text()
    assert card.get_by_role("button").count() == 0
    page.get_by_label("Nouveau nom").first.fill("Solution Renommee")
    page.locator(f"#sol-{free.id}").get_by_role("button", name=re.compile("^Renommer")).click()
    assert "Solution renommée" in page.locator(".flash").inner_text()
    assert svc.get_solution(a, free.id).name == "Solution Renommee"
    shot(page, "30-solutions")
    page.locator(f"#sol-{free.id}").get_by_role("button", name=re.compile("^Supprimer")).click()
    assert "Solution supprimée" in page.locator(".flash").inner_text()
    assert page.locator(f"#sol-{free.id}").count() == 0
    assert page.locator(f"#sol-{used.id}").count() == 1


def test_salarie_dashboard_shows_only_their_dossiers_news(site: Site, browser) -> None:
    svc = site.service
    boss, emp = principal(svc, site.accounts["mandataire_b"]), principal(svc, site.accounts["salarie_b"])
    ver = principal(svc, site.accounts["verificateur"])
    commitments = sc.CommitmentsIn(respect_referentiels_cgu=True, exactitude_informations=True, acceptation_audits=True)
    for who, name, reason in (
        (boss, "Dossier Direction", "motif réservé direction"),
        (emp, "Dossier Salarie", "motif du salarié"),
    ):
        sol = solution(svc, who, name, proxy=True)
        c = svc.create_candidature(
            who, sc.CandidatureIn(role=Role.ELP, solution_id=sol.id, software_name=name, software_version="1.0")
        )
        svc.submit_form(who, c.id, commitments)
        svc.return_form(ver, c.id, sc.ReasonIn(reason=reason))
    page = login(browser, site, "salarie_b")
    notes = page.locator("ul.notes").inner_text()
    assert "motif du salarié" in notes and "motif réservé direction" not in notes
    boss_page = login(browser, site, "mandataire_b")
    notes = boss_page.locator("ul.notes").inner_text()
    assert "motif du salarié" in notes and "motif réservé direction" in notes
