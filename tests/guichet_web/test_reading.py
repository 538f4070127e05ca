"""What people read (issue 19 §7), in Chromium: no internal identifier on the pages,
every registration error at once beside its field with the values kept, a file over the
limit refused in French on the same form, downloads under their own name, and no page
scrolling sideways at 390 px."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from confiance.guichet import schemas as sc
from confiance.guichet.domain.model import Role

from .conftest import PASSWORD, Site, login, shot
from .factory import habilitate, principal, solution

pytestmark = [pytest.mark.browser]

# identifiers that must never reach a reader
INTERNAL = [
    "a_completer",
    "accepter_chapitre",
    "nru_numbers",
    "application/pdf",
    "test_intrusion",
    "depot_preuves",
    "formulaire_soumis",
    "complement_demande",
    "certificat_test",
    "logiciel_utilisateur",
    "homologation_declaration",
    "a_risque",
]


def _dossier(site: Site) -> tuple[int, int]:
    """An ELU dossier in evidence deposit, relying on a habilitated proxy; returns (cid, elp)."""
    svc, keys = site.service, site.conformity_keys
    a, b = principal(svc, site.accounts["mandataire_a"]), principal(svc, site.accounts["mandataire_b"])
    ver, col = principal(svc, site.accounts["verificateur"]), principal(svc, site.accounts["college"])
    proxy = solution(svc, a, "Proxy Lecture", proxy=True)
    elp = habilitate(svc, keys, a, ver, col, Role.ELP, proxy.id, "Proxy Lecture")
    lps = solution(svc, b, "Logiciel Lecture", proxy=False)
    c = svc.create_candidature(
        b,
        sc.CandidatureIn(
            role=Role.ELU,
            solution_id=lps.id,
            proxy_solution_id=proxy.id,
            software_name="Logiciel Lecture",
            software_version="2.0",
            nru_numbers=["NRU-42"],
        ),
    )
    commit = sc.CommitmentsIn(respect_referentiels_cgu=True, exactitude_informations=True, acceptation_audits=True)
    svc.submit_form(b, c.id, commit)
    svc.validate_form(ver, c.id, sc.ActionIn())
    return c.id, elp


def test_pages_show_no_internal_identifier_and_fit_390px(site: Site, browser) -> None:
    cid, _elp = _dossier(site)
    cand = login(browser, site, "mandataire_b")
    ver = login(browser, site, "verificateur")
    pages = [
        (cand, f"/candidatures/{cid}"),
        (cand, "/tableau-de-bord"),
        (cand, "/habilitations"),
        (cand, "/comptes"),
        (cand, "/solutions"),
        (cand, "/candidatures/nouvelle"),
        (ver, f"/ans/candidatures/{cid}"),
        (ver, "/ans/registre"),
        (ver, "/ans/comptes"),
        (ver, "/ans/instruction"),
    ]
    for page, path in pages:
        page.goto(site.url + path)
        text = page.locator("main").inner_text()
        for ident in INTERNAL:
            assert ident not in text, (path, ident)
        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        wide = page.evaluate(
            """[...document.querySelectorAll('body *')].filter(e => !e.closest('table') && e.getBoundingClientRect().right > 391)
               .slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id + ' ' + Math.round(e.getBoundingClientRect().right))"""
        )
        assert overflow <= 0, (path, overflow, wide)
        page.set_viewport_size({"width": 1280, "height": 900})
    cand.set_viewport_size({"width": 390, "height": 844})
    cand.goto(f"{site.url}/candidatures/{cid}")
    shot(cand, "35-candidature-390px")


def test_registration_reports_every_error_beside_its_field(site: Site, browser) -> None:
    page = browser.new_context(locale="fr-FR").new_page()
    page.goto(site.url + "/inscription")
    page.get_by_label("Raison sociale").fill("Structure Gardée")
    page.get_by_label("SIREN (structure française)").fill("542 065 478")  # wrong check digit
    page.get_by_role("button", name="Inscrire la structure").click()
    summary = page.locator("#erreurs").inner_text()
    for field in ("SIREN", "Nom et prénom", "Adresse électronique", "Mot de passe"):
        assert field in summary, (field, summary)
    assert "clé de contrôle" in page.locator("#r-siren-err").inner_text()
    assert "obligatoire" in page.locator("#r-name-err").inner_text()
    assert page.locator("#r-email").get_attribute("aria-invalid") == "true"
    assert page.locator("#r-password-err").count() == 1
    assert page.get_by_label("Raison sociale").input_value() == "Structure Gardée"  # kept
    assert page.locator("#r-org_name-err").count() == 0  # that one was right
    shot(page, "36-inscription-erreurs")


def test_oversized_file_refused_on_the_same_form_and_downloads_keep_their_name(
    site: Site, browser, tmp_path: Path
) -> None:
    cid, _elp = _dossier(site)
    page = login(browser, site, "mandataire_b")
    page.goto(f"{site.url}/candidatures/{cid}")
    big = tmp_path / "trop-gros.pdf"
    big.write_bytes(b"%PDF-" + b"0" * (site.service.settings.max_upload_bytes + 10))
    field = page.locator("#doc-TLS-01")
    field.set_input_files(str(big))
    page.locator("form:has(#doc-TLS-01)").get_by_role("button", name="Déposer").click()
    msg = page.locator("#doc-TLS-01-taille").inner_text()
    assert "Fichier trop volumineux" in msg and "Kio au plus" in msg
    assert page.url.endswith(f"/candidatures/{cid}")  # nothing was sent, the form is still here
    good = tmp_path / "Configuration TLS été.txt"
    good.write_text("TLS 1.2 minimum sur tous les points d'accès\n")
    field.set_input_files(str(good))
    assert page.locator("#doc-TLS-01-taille").count() == 0
    page.locator("form:has(#doc-TLS-01)").get_by_role("button", name="Déposer").click()
    link = page.get_by_role("link", name="Configuration TLS été.txt")
    with page.expect_download() as dl:
        link.click()
    assert dl.value.suggested_filename == "Configuration TLS été.txt"


def test_withdrawn_habilitation_shown_on_its_dossier(site: Site, browser) -> None:
    svc = site.service
    a = principal(svc, site.accounts["mandataire_a"])
    col = principal(svc, site.accounts["college"])
    _cid, elp = _dossier(site)
    hab = svc.get_habilitation(a, elp)
    svc.withdraw(col, elp, sc.ReasonIn(reason="proxy non maintenu"))
    page = login(browser, site, "mandataire_a")
    page.goto(f"{site.url}/candidatures/{hab.candidature_id}")
    state = page.locator("#hab-state").inner_text()
    assert re.search("retirée", state) and "proxy non maintenu" in state
    assert PASSWORD  # the module's shared password stays in use by login()


def test_wizard_reports_every_error_beside_its_field(site: Site, browser) -> None:
    """An empty wizard: every missing field at once, each beside its field, linked from the
    summary; then a half-filled ELU keeps what was typed and points at the missing proxy.
    Nothing is created by a refused wizard."""
    svc = site.service
    me = principal(svc, site.accounts["mandataire_a"])
    before = len(svc.list_solutions(me, mine=True))
    page = login(browser, site, "mandataire_a")
    page.goto(site.url + "/candidatures/nouvelle")
    page.get_by_role("button", name="Enregistrer le brouillon").click()
    summary = page.locator("#erreurs").inner_text()
    for label in ("Profil demandé", "Composants", "Nom du logiciel", "Version candidate"):
        assert label in summary, (label, summary)
    assert "choisissez le profil demandé" in page.locator("#f-role-err").inner_text()
    assert "au moins un composant" in page.locator("#f-components-err").inner_text()
    assert "obligatoire" in page.locator("#f-software_name-err").inner_text()
    assert "obligatoire" in page.locator("#f-software_version-err").inner_text()
    assert page.locator("#f-software_version").get_attribute("aria-invalid") == "true"
    assert page.locator("#erreurs a[href='#f-software_name']").count() == 1
    shot(page, "37-assistant-erreurs")

    page.get_by_role("radio", name=re.compile("^ELU")).check()
    page.get_by_label("Nom de la nouvelle solution").fill("Logiciel Gardé")
    page.get_by_role("checkbox", name="LPS — logiciel utilisateur", exact=True).check()
    page.get_by_label("Nom du composant LPS").fill("lps gardé!")  # not a valid component name
    page.get_by_label("Nom du logiciel").fill("Logiciel Gardé")
    page.get_by_label("Numéros NRU").fill("NRU-1")
    page.get_by_role("button", name="Enregistrer le brouillon").click()
    summary = page.locator("#erreurs").inner_text()
    assert "Version candidate" in summary and "Proxy e-Santé utilisé" in summary, summary
    assert "Nom du composant LPS" in summary and "format invalide" in page.locator("#f-comp-LPS-err").inner_text()
    assert "doit nommer le Proxy e-Santé" in page.locator("#f-proxy-err").inner_text()
    assert page.locator("#f-role-err").count() == 0 and page.locator("#f-software_name-err").count() == 0
    # what was typed is kept
    assert page.get_by_role("radio", name=re.compile("^ELU")).is_checked()
    assert page.get_by_label("Nom du logiciel").input_value() == "Logiciel Gardé"
    assert page.get_by_label("Nom du composant LPS").input_value() == "lps gardé!"
    assert page.locator("#f-nru").input_value() == "NRU-1"
    assert len(svc.list_solutions(me, mine=True)) == before
