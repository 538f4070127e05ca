"""The full journey of a proxy editor (ELP) in a real Chromium: sign-in, wizard, form
validation by a verifier, evidence by chapter (documents, pentest with live eligibility,
conformity report verified automatically, test certificate ordered through the parcours),
a complement request answered in place, college decision, habilitation with countdown
and dependency graph, public list. Verifier and college act in their own browser contexts.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from tests.guichet.helpers import conformity_report

from .conftest import Site, login, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PDF = b"%PDF-1.4\n% rapport signe\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"


def _flash(page) -> str:
    return " ".join(page.locator(".flash").all_inner_texts())


def test_elp_journey_from_sign_in_to_habilitation(site: Site, browser, tmp_path: Path) -> None:
    pdf = tmp_path / "rapport.pdf"
    pdf.write_bytes(PDF)
    doc = tmp_path / "preuve.txt"
    doc.write_text("Politique TLS : TLS 1.2 minimum, suites ANSSI.\n")

    # --- the candidate files the administrative form with the wizard
    cand = login(browser, site, "mandataire_a")
    shot(cand, "01-candidat-tableau-de-bord")
    cand.get_by_role("link", name="Déposer une nouvelle candidature").click()
    cand.get_by_role("radio", name=re.compile("^ELP")).check()
    cand.get_by_label("Nom de la nouvelle solution").fill("Proxy Démo")
    cand.get_by_role("checkbox", name="Proxy e-Santé", exact=True).check()
    cand.get_by_label("Nom du composant PROXY").fill("proxy-demo")
    cand.get_by_label("Nom du logiciel").fill("Proxy Démo")
    cand.get_by_label("Version candidate").fill("2.1.0")
    cand.get_by_label("Numéros NRU").fill("NRU-2024-0001")
    for box in cand.get_by_role("checkbox", name=re.compile("^J(e |')")).all():
        box.check()
    shot(cand, "02-candidat-assistant")
    cand.get_by_role("button", name="Enregistrer et soumettre à l'ANS").click()
    assert "soumise à l'ANS" in _flash(cand)
    cid = int(re.search(r"/candidatures/(\d+)", cand.url).group(1))

    # --- a verifier validates the form from the queue (own browser context)
    ver = login(browser, site, "verificateur")
    assert ver.url.endswith("/ans/instruction")
    shot(ver, "03-verificateur-file")
    ver.get_by_role("link", name=re.compile(f"Instruire Formulaire administratif de la candidature {cid}")).click()
    ver.get_by_role("button", name="Valider le formulaire").click()
    assert "dépôt de preuves est ouvert" in _flash(ver)

    # --- evidence deposit by chapter
    cand.reload()
    for rid in ("TLS-01", "MTLS-01", "TOK-01", "TOK-02", "TRC-01"):
        cand.locator(f"#doc-{rid}").set_input_files(str(doc))
        cand.locator(f"form:has(#doc-{rid})").get_by_role("button", name="Déposer").click()
        assert "Document déposé" in _flash(cand), _flash(cand)

    # pentest: live eligibility feedback, then deposit
    cand.get_by_role("link", name="Saisir le test d'intrusion").click()
    cand.get_by_label("Prestataire qualifié PASSI").fill("Audit Sécurité Démo")
    cand.get_by_label("Auditeur signataire").fill("Camille Martin")
    cand.get_by_label("Date du rapport").fill((dt.date.today() - dt.timedelta(days=30)).isoformat())
    cand.get_by_label("Résultat du critère 2").select_option("KO")  # one medium KO: a proxy tolerates none
    verdict = cand.locator("#pentest-verdict")
    verdict.get_by_text("Non éligible : le rapport sera refusé").wait_for()
    assert "aucun toléré pour le profil ELP" in verdict.inner_text()
    shot(cand, "04-candidat-test-intrusion-non-eligible")
    cand.get_by_label("Résultat du critère 2").select_option("OK")
    verdict.get_by_text("Rapport recevable", exact=False).first.wait_for()
    cand.get_by_label("Rapport signé (PDF)").set_input_files(str(pdf))
    cand.get_by_role("button", name="Déposer le test d'intrusion").click()
    assert "rapport éligible" in _flash(cand), _flash(cand)
    # the PDF itself backs nothing here (no readable first page, no signature): flagged, not refused
    pen = cand.locator("#chap-test_intrusion").inner_text()
    assert "le rapport PDF est illisible" in pen and "n'est pas signé" in pen, pen

    # conformity report: a failing one is refused with the reason, a passing one accepted
    bad = tmp_path / "rapport-echec.jws"
    bad.write_text(conformity_report(site.conformity_keys, "2.1.0", failed=1))
    cand.locator("#conf-CONF-01").set_input_files(str(bad))
    cand.get_by_role("button", name="Déposer et vérifier").click()
    assert "rapport refusé" in _flash(cand) and "C0" in _flash(cand)
    good = tmp_path / "rapport.jws"
    good.write_text(conformity_report(site.conformity_keys, "2.1.0"))
    cand.locator("#conf-CONF-01").set_input_files(str(good))
    cand.get_by_role("button", name="Déposer et vérifier").click()
    assert "Vérification automatique réussie" in _flash(cand)

    # parcours: declare the steps before the test certificate, which the platform issues
    for _ in range(5):
        cand.get_by_role("button", name=re.compile("^Marquer comme fait")).first.click()
        assert "Étape du parcours enregistrée" in _flash(cand), _flash(cand)
    shot(cand, "05-candidat-candidature-parcours")
    cand.get_by_role("button", name="Commander le certificat de test").click()
    assert "Clé privée" in cand.content() and "BEGIN" in cand.locator("#key-pem").input_value()
    cand.get_by_role("link", name="Retour à la candidature").click()

    # submit every chapter
    for _ in range(6):
        cand.get_by_role("button", name="Soumettre le chapitre à l'ANS").and_(cand.locator(":enabled")).first.click()
        assert "Chapitre soumis" in _flash(cand), _flash(cand)
    assert cand.get_by_role("button", name="Soumettre le chapitre à l'ANS").count() == 0

    # --- verifier: a complement for "transport", accept the rest
    ver.goto(f"{site.url}/ans/candidatures/{cid}")
    assert "PDF non signé" in ver.locator("#chap-test_intrusion").inner_text()
    shot(ver, "06-verificateur-instruction")
    transport = ver.locator("#chap-transport")
    transport.get_by_label(re.compile("Motif communiqué")).fill("Joignez la configuration TLS du point d'accès public.")
    transport.get_by_role("button", name=re.compile("^Demander un complément")).click()
    assert "Complément demandé" in _flash(ver)
    for chapter in ("jetons", "traces", "test_intrusion", "conformite", "certificats"):
        ver.goto(f"{site.url}/ans/candidatures/{cid}")
        ver.locator(f"#chap-{chapter}").get_by_role("button", name=re.compile("^Accepter le chapitre")).click()
        assert "Chapitre accepté" in _flash(ver), (chapter, _flash(ver))

    # --- the candidate answers the complement request in place
    cand.goto(site.url + "/tableau-de-bord")
    assert "Joignez la configuration TLS" in cand.locator("#req-h + ul").inner_text()
    cand.get_by_role("link", name=re.compile("Sécurité des échanges")).click()
    cand.locator("#doc-TLS-01").set_input_files(str(doc))
    cand.locator("form:has(#doc-TLS-01)").get_by_role("button", name="Déposer").click()
    cand.locator("#chap-transport").get_by_role("button", name="Soumettre le chapitre à l'ANS").click()
    assert "Chapitre soumis" in _flash(cand)
    ver.goto(f"{site.url}/ans/candidatures/{cid}")
    ver.locator("#chap-transport").get_by_role("button", name=re.compile("^Accepter le chapitre")).click()

    # --- the college decides (own browser context)
    col = login(browser, site, "college")
    assert col.url.endswith("/ans/college")
    shot(col, "07-college")
    col.get_by_role("link", name=re.compile(f"Examiner la candidature {cid}")).click()
    # the whole dossier: structure, chain relied on, and the pentest PDF beside its typed figures
    assert "Proxytech SAS" in col.locator("#dossier").inner_text()
    assert col.get_by_role("link", name="ouvrir le rapport de test d'intrusion").count() == 1
    # the parcours gates the decision: the steps the candidate has not declared are named
    col.get_by_role("button", name="Accorder l'habilitation").click()
    refusal = col.locator(".flash").inner_text()
    assert "étapes du parcours non faites" in refusal and "Testez" in refusal, refusal
    assert "outil de conformité" in refusal
    shot(col, "07b-college-parcours-incomplet")
    cand.goto(f"{site.url}/candidatures/{cid}")
    for _ in range(2):
        cand.get_by_role("button", name=re.compile("^Marquer comme fait")).first.click()
        assert "Étape du parcours enregistrée" in _flash(cand), _flash(cand)
    col.reload()
    col.get_by_role("button", name="Accorder l'habilitation").click()
    assert "accordée" in _flash(col)

    # --- habilitation with its countdown and the dependency graph; public list
    cand.goto(site.url + "/habilitations")
    text = cand.locator("table").inner_text()
    assert "ELP" in text and re.search(r"expire dans 109\d jours", text), text
    assert cand.locator("svg.depgraph").count() == 1
    shot(cand, "08-candidat-habilitations")
    # renewal: a new candidature for the same profile and solution, prefilled
    cand.get_by_role("link", name=re.compile("^Renouveler")).click()
    assert "Renouvellement de l'habilitation" in cand.locator("main").inner_text()
    assert cand.get_by_role("radio", name=re.compile("^ELP")).is_checked()
    cand.get_by_label("Version candidate").fill("3.0.0")
    cand.get_by_role("button", name="Enregistrer le brouillon").click()
    assert "Brouillon de candidature" in _flash(cand), _flash(cand)
    cand.goto(site.url + "/habilitations")
    pub = browser.new_context(locale="fr-FR").new_page()
    pub.goto(site.url + "/habilitations-publiques")
    assert "Proxytech SAS" in pub.locator("table").inner_text()
    shot(pub, "09-public-habilitations")
    col.goto(site.url + "/ans/registre?vue=valides")
    assert "Proxy Démo" in col.locator("table").inner_text()
    shot(col, "10-registre")
    col.goto(site.url + "/ans/audit")
    assert "habilitation.accorder" in col.locator("table").inner_text()
    shot(col, "11-journal-audit")
