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
