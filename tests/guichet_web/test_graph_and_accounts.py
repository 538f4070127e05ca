"""Dependency graph with at-risk habilitations, the registry's at-risk view, account
management, and an operator candidature refused before its editor habilitations exist."""

from __future__ import annotations

import re

import pytest

from confiance.guichet import schemas as sc
from confiance.guichet.domain.model import Role

from .conftest import PASSWORD, Site, login, shot
from .factory import habilitate, principal, solution

pytestmark = [pytest.mark.browser]


def test_withdrawn_elp_flags_dependents_at_risk_in_graph_and_registry(site: Site, browser) -> None:
    svc, keys = site.service, site.conformity_keys
    a, b = principal(svc, site.accounts["mandataire_a"]), principal(svc, site.accounts["mandataire_b"])
    ver, col = principal(svc, site.accounts["verificateur"]), principal(svc, site.accounts["college"])
    proxy = solution(svc, a, "Proxy Graphe", proxy=True)
    lps = solution(svc, b, "LPS Graphe", proxy=False)
    elp = habilitate(svc, keys, a, ver, col, Role.ELP, proxy.id, "Proxy Graphe")
    elu = habilitate(svc, keys, b, ver, col, Role.ELU, lps.id, "LPS Graphe", proxy_solution_id=proxy.id)
    osp = habilitate(svc, keys, a, ver, col, Role.OSP, proxy.id, "Proxy Graphe")

    page = login(browser, site, "mandataire_b")
    page.goto(site.url + "/habilitations")
    graph = page.locator("svg.depgraph")
    assert graph.locator("[aria-label^='ELU LPS Graphe']").count() == 1
    assert "À RISQUE" not in graph.inner_html()

    # the college withdraws the ELP from the registry page
    college = login(browser, site, "college")
    college.goto(site.url + "/ans/registre?q=Proxy%20Graphe&profil=ELP")
    college.on("dialog", lambda d: d.accept())  # the confirmation asked by the page script
    college.get_by_label(f"Motif pour l'habilitation {elp}").fill("Faille critique non corrigée")
    college.get_by_role("button", name="Retirer").click()
    assert "signalées à risque" in college.locator(".flash").inner_text()
    college.goto(site.url + "/ans/registre?vue=a_risque")
    text = college.locator("table").inner_text()
    assert f"#{elu}" in text and f"#{osp}" in text and f"#{elp}" not in text
    shot(college, "13-registre-a-risque")

    page.reload()
    graph = page.locator("svg.depgraph")
    assert graph.locator("a[aria-label='ELU LPS Graphe : À RISQUE']").count() == 1
    assert graph.locator("[aria-label='ELP Proxy Graphe : retirée']").count() == 1
    assert "à risque" in page.locator(f"#hab-{elu}").inner_text()
    shot(page, "14-graphe-a-risque")


def test_operator_candidature_refused_before_editor_habilitations(site: Site, browser) -> None:
    page = login(browser, site, "mandataire_b")
    page.goto(site.url + "/candidatures/nouvelle")
    page.get_by_role("radio", name=re.compile("^OSP")).check()
    page.get_by_label("Nom de la nouvelle solution").fill("Proxy opéré sans ELP")
    page.get_by_role("checkbox", name="Proxy e-Santé", exact=True).check()
    page.get_by_label("Nom du logiciel").fill("Proxy opéré")
    page.get_by_label("Version candidate").fill("1.0")
    page.get_by_role("button", name="Enregistrer le brouillon").click()
    err = page.locator("#erreurs").inner_text()
    assert "guichet opérateur n'ouvre qu'une fois les habilitations éditeur existantes" in err
    assert "aucune habilitation ELP" in err


def test_mandataire_creates_and_validates_a_salarie_who_can_then_sign_in(site: Site, browser) -> None:
    page = login(browser, site, "mandataire_a")
    page.goto(site.url + "/comptes")
    page.get_by_label("Nom et prénom").fill("Nouvelle Salariée")
    page.get_by_label("Adresse électronique").fill("nouvelle@a.example")
    page.get_by_label("Mot de passe initial").fill(PASSWORD)
    page.get_by_label("Rôle").select_option("salarie")
    page.get_by_role("button", name="Créer le compte").click()
    assert "à valider" in page.locator(".flash").inner_text()
    page.get_by_role("button", name="Valider le compte nouvelle@a.example").click()
    assert "validé" in page.locator(".flash").inner_text()
    shot(page, "15-comptes")
    site.accounts["nouvelle"] = "nouvelle@a.example"
    new = login(browser, site, "nouvelle")
    assert new.url.endswith("/tableau-de-bord")
    assert new.goto(site.url + "/comptes").status == 403  # a salarié does not manage accounts


def test_new_password_too_short_is_refused_in_french(site: Site, browser) -> None:
    page = login(browser, site, "mandataire_a")
    page.goto(site.url + "/comptes")
    page.get_by_label("Nom et prénom").fill("Court")
    page.get_by_label("Adresse électronique").fill("court@a.example")
    page.get_by_label("Mot de passe initial").evaluate("e => e.removeAttribute('minlength')")
    page.get_by_label("Mot de passe initial").fill("court")
    page.get_by_role("button", name="Créer le compte").click()
    assert "mot de passe" in page.locator(".flash").inner_text()


def test_collaborator_added_in_the_ui_gains_access(site: Site, browser) -> None:
    svc = site.service
    a = principal(svc, site.accounts["mandataire_a"])
    sol = solution(svc, a, "Proxy Equipe", proxy=True)
    c = svc.create_candidature(
        a, sc.CandidatureIn(role=Role.ELP, solution_id=sol.id, software_name="Proxy Equipe", software_version="1.0")
    )
    salarie = login(browser, site, "salarie_a")
    assert salarie.goto(f"{site.url}/candidatures/{c.id}").status == 403  # neither author nor collaborator
    page = login(browser, site, "mandataire_a")
    page.goto(f"{site.url}/candidatures/{c.id}")
    page.get_by_label("Ajouter un collaborateur").select_option(label="Salarié A (salarié)")
    page.locator("section[aria-labelledby=collab-h]").get_by_role("button", name="Ajouter").click()
    assert "Collaborateur ajouté" in page.locator(".flash").inner_text()
    assert salarie.goto(f"{site.url}/candidatures/{c.id}").status == 200


def test_new_referentiel_version_shows_what_changed_and_can_be_adopted(site: Site, browser) -> None:
    svc = site.service
    a = principal(svc, site.accounts["mandataire_a"])
    admin = principal(svc, site.accounts["admin"])
    sol = solution(svc, a, "Proxy Referentiel", proxy=True)
    c = svc.create_candidature(
        a,
        sc.CandidatureIn(role=Role.ELP, solution_id=sol.id, software_name="Proxy Referentiel", software_version="1.0"),
    )
    cur = svc.current_referentiel()
    new = sc.ReferentielIn(
        version=cur.version + "-web",
        chapters=cur.chapters,
        requirements=[
            *[r.model_dump(exclude_none=True) for r in cur.requirements],
            {
                "id": "LOG-09",
                "chapter": "traces",
                "text": "Les traces sont conservées un an.",
                "actors": ["ELP"],
                "level": "edc",
                "evidence": ["document"],
            },
        ],
    )
    svc.publish_referentiel(admin, new)
    page = login(browser, site, "mandataire_a")
    page.goto(f"{site.url}/candidatures/{c.id}")
    notice = page.locator("section[aria-labelledby=ref-h]")
    assert "ajoutée : LOG-09" in notice.inner_text()
    notice.get_by_role("button", name=re.compile("^Appliquer la version")).click()
    assert "dernière version du référentiel" in page.locator(".flash").inner_text()
    assert page.locator("section[aria-labelledby=ref-h]").count() == 0
    assert svc.get_candidature(a, c.id).referentiel_version == new.version


def test_company_registers_and_ans_validates_the_mandataire(site: Site, browser) -> None:
    ctx = browser.new_context(locale="fr-FR")
    page = ctx.new_page()
    page.goto(site.url + "/connexion")
    page.get_by_role("link", name="Inscrire ma structure").first.click()
    page.get_by_label("Raison sociale").fill("Nouvelle Édition SAS")
    page.get_by_label("SIREN (structure française)").fill("542 065 478")  # wrong check digit
    page.get_by_label("Nom et prénom").fill("Claire Mandataire")
    page.get_by_label("Adresse électronique").fill("claire@nouvelle.example")
    page.get_by_label("Mot de passe", exact=True).fill(PASSWORD)
    page.get_by_label("Confirmation du mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Inscrire la structure").click()
    assert "clé de contrôle" in page.locator("#erreurs").inner_text()
    page.get_by_label("SIREN (structure française)").fill("542065479")
    page.get_by_label("Mot de passe", exact=True).fill(PASSWORD)
    page.get_by_label("Confirmation du mot de passe").fill(PASSWORD)
    page.get_by_role("button", name="Inscrire la structure").click()
    assert "Inscription enregistrée" in page.locator(".flash").inner_text()
    site.accounts["claire"] = "claire@nouvelle.example"
    claire = login(browser, site, "claire")
    assert "attend sa validation" in claire.locator(".flash").inner_text()
    assert claire.goto(site.url + "/candidatures/nouvelle").status == 403  # not before ANS validation
    ver = login(browser, site, "verificateur")
    ver.goto(site.url + "/ans/comptes")
    ver.get_by_role("button", name="Valider l'identité de claire@nouvelle.example").click()
    assert "Identité validée" in ver.locator(".flash").inner_text()
    shot(ver, "17-ans-comptes")
    assert claire.goto(site.url + "/candidatures/nouvelle").status == 200


def test_admin_publishes_a_referentiel_version_from_the_page(site: Site, browser) -> None:
    admin = login(browser, site, "admin")
    admin.goto(site.url + "/ans/referentiel")
    text = admin.get_by_label("Catalogue (YAML)").input_value()
    admin.get_by_label("Catalogue (YAML)").fill(text.replace("chapters:", "chapters:\n  - oops", 1))
    admin.get_by_role("button", name="Publier").click()
    assert admin.locator(".flash.error").count() == 1  # refused with the reason, nothing published
    version = re.search(r"^version: '?([^'\n]+)'?$", text, re.M).group(1)
    new = text.replace(f"version: {version}", "version: admin-ui", 1).replace(
        f"version: '{version}'", "version: admin-ui", 1
    )
    admin.get_by_label("Catalogue (YAML)").fill(new)
    admin.get_by_role("button", name="Publier").click()
    assert "Version admin-ui publiée" in admin.locator(".flash").inner_text()
    assert "admin-ui" in admin.locator("h1").inner_text()
    ver = login(browser, site, "verificateur")
    ver.goto(site.url + "/ans/referentiel")
    assert ver.get_by_role("button", name="Publier").count() == 0  # read-only for non-admins
