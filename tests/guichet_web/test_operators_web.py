"""An operator relying on another company's habilitated proxy (issue 19 §1), in Chromium:
searched by editor, chosen in the wizard, the editor told on its dashboard."""

from __future__ import annotations

import re

import pytest

from confiance.guichet.domain.model import Role

from .conftest import Site, login, shot
from .factory import habilitate, principal, solution

pytestmark = [pytest.mark.browser]


def test_operator_searches_and_relies_on_another_companys_proxy(site: Site, browser) -> None:
    svc, keys = site.service, site.conformity_keys
    a = principal(svc, site.accounts["mandataire_a"])
    ver, col = principal(svc, site.accounts["verificateur"]), principal(svc, site.accounts["college"])
    proxy = solution(svc, a, "Proxy Partage", proxy=True)
    habilitate(svc, keys, a, ver, col, Role.ELP, proxy.id, "Proxy Partage")

    page = login(browser, site, "mandataire_b")  # Logisanté hosts Proxytech's proxy
    page.goto(site.url + "/candidatures/nouvelle?role=OSP")
    page.get_by_label(re.compile("rechercher une solution habilitée")).fill("proxytech")
    page.get_by_role("button", name="Rechercher").click()
    assert "solution(s) habilitée(s) pour « proxytech »" in page.locator("main").inner_text()
    options = page.locator("#f-solution optgroup[label^='Proxy e-Santé habilités'] option")
    assert options.count() >= 1
    label = options.first.inner_text()
    assert "Proxy Partage" in label and "Proxytech SAS" in label and "version 1.0" in label
    assert page.get_by_role("radio", name=re.compile("^OSP")).is_checked()  # the profile survived the search
    page.locator("#f-solution").select_option(str(proxy.id))
    page.get_by_label("Nom du logiciel").fill("Proxy Partage")
    page.get_by_label("Version candidate").fill("1.0")
    shot(page, "33-operateur-recherche")
    page.get_by_role("button", name="Enregistrer le brouillon").click()
    assert "Brouillon de candidature" in page.locator(".flash").first.inner_text()
    assert "OSP" in page.locator("h1").inner_text()

    editor = login(browser, site, "mandataire_a")
    notes = editor.locator("ul.notes").inner_text()
    assert "Logisanté SARL s'appuie sur votre habilitation ELP" in notes, notes


def test_verifier_and_college_read_the_whole_dossier(site: Site, browser) -> None:
    from confiance.guichet import schemas as sc

    svc, keys = site.service, site.conformity_keys
    a, b = principal(svc, site.accounts["mandataire_a"]), principal(svc, site.accounts["mandataire_b"])
    ver, col = principal(svc, site.accounts["verificateur"]), principal(svc, site.accounts["college"])
    proxy = solution(svc, a, "Proxy Chaine", proxy=True)
    elp = habilitate(svc, keys, a, ver, col, Role.ELP, proxy.id, "Proxy Chaine")
    lps = solution(svc, b, "Logiciel Chaine", proxy=False)
    c = svc.create_candidature(
        b,
        sc.CandidatureIn(
            role=Role.ELU,
            solution_id=lps.id,
            proxy_solution_id=proxy.id,
            software_name="Logiciel Chaine",
            software_version="4.2",
            description="Logiciel de cabinet pour médecins généralistes.",
            maturity={"mtls": True},
        ),
    )
    svc.submit_form(
        b, c.id, sc.CommitmentsIn(respect_referentiels_cgu=True, exactitude_informations=True, acceptation_audits=True)
    )
    page = login(browser, site, "verificateur")
    page.goto(f"{site.url}/ans/candidatures/{c.id}")
    dossier = page.locator("#dossier").inner_text()
    assert "Logisanté SARL" in dossier and "552100554" in dossier  # the structure and its SIREN
    assert "Logiciel de cabinet pour médecins généralistes." in dossier
    assert "Authentification mTLS maîtrisée" in dossier and "mtls" not in dossier
    assert "Proxy Chaine" in dossier and "Proxytech SAS" in dossier and "version 1.0" in dossier
    assert f"habilitation n° {elp}" in dossier and "valide" in dossier
    link = page.locator("#dossier").get_by_role("link", name="voir au registre")
    assert link.count() == 1
    shot(page, "34-verificateur-dossier-complet")
    link.click()
    assert "Proxy Chaine" in page.locator("table").inner_text()

    college = login(browser, site, "college")
    college.goto(f"{site.url}/ans/college/{c.id}")
    assert "Proxy Chaine" in college.locator("#dossier").inner_text()
    assert "Déclarez votre service comme homologué" in college.locator("#dossier").inner_text()
