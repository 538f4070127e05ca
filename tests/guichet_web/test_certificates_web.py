"""Production certificate and homologation in the UI (issue 19 §2): after the grant the
operator uploads its CSR, sees the certificate, renews it, declares its service homologated
as the last step; the certificate is in the published trust list."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography import x509

from confiance.core.trustlist import admit
from confiance.guichet.domain.model import Role
from tests.guichet.helpers import new_csr

from .conftest import Site, login, shot
from .factory import habilitate, principal, solution

pytestmark = [pytest.mark.browser]


def test_operator_orders_renews_and_declares_homologation(site: Site, browser, tmp_path: Path) -> None:
    svc, keys = site.service, site.conformity_keys
    a, b = principal(svc, site.accounts["mandataire_a"]), principal(svc, site.accounts["mandataire_b"])
    ver, col = principal(svc, site.accounts["verificateur"]), principal(svc, site.accounts["college"])
    proxy = solution(svc, a, "Proxy Certif", proxy=True)
    habilitate(svc, keys, a, ver, col, Role.ELP, proxy.id, "Proxy Certif")
    osp = habilitate(svc, keys, b, ver, col, Role.OSP, proxy.id, "Proxy Certif")  # b hosts a's proxy
    cid = svc.get_habilitation(b, osp).candidature_id

    page = login(browser, site, "mandataire_b")
    page.goto(f"{site.url}/candidatures/{cid}")
    # the homologation declaration waits for the production certificate
    steps = page.locator(".checklist").inner_text()
    assert "Déclarez votre service comme homologué Espace de Confiance" in steps
    assert page.get_by_role("button", name=re.compile("Déclarez votre service")).count() == 0
    key, csr = new_csr("proxy-certif")
    csr_file = tmp_path / "service.csr"
    csr_file.write_text(csr)
    page.get_by_label("Demande de certificat (CSR, fichier PEM)").set_input_files(str(csr_file))
    page.get_by_role("button", name="Commander le certificat de production").click()
    assert "la clé privée est restée chez vous" in page.locator("main").inner_text()
    assert page.locator("#key-pem").count() == 0  # no key ever shown for a production certificate
    pem = page.locator("#cert-pem").input_value()
    assert x509.load_pem_x509_certificate(pem.encode()).public_key().public_numbers() == (
        key.public_key().public_numbers()
    )
    shot(page, "31-certificat-production")
    page.get_by_role("link", name="Retour à la candidature").click()
    first = svc.get_candidature(b, cid).certificates[0]
    assert "en vigueur" in page.locator(f"#cert-{first.id}").inner_text()
    claims = svc.trust_list_claims()
    assert admit(claims, first.x5t_s256, "production").admitted

    # last step: declare the service homologated
    page.get_by_role("button", name=re.compile("Déclarez votre service comme homologué")).click()
    assert "Étape du parcours enregistrée" in page.locator(".flash").first.inner_text()
    done = {s.id: s.status for s in svc.parcours_checklist(b, cid)}
    assert done["homologation_declaration"] == "fait"

    # renewal from a new CSR: the old certificate is revoked and leaves the trust list
    _key2, csr2 = new_csr("proxy-certif")
    renew_file = tmp_path / "renew.csr"
    renew_file.write_text(csr2)
    row = page.locator(f"#cert-{first.id}")
    row.locator("summary").click()
    row.get_by_label(re.compile("Nouvelle demande de certificat")).set_input_files(str(renew_file))
    row.get_by_role("button", name=re.compile("^Renouveler le certificat")).click()
    assert "la clé privée est restée chez vous" in page.locator("main").inner_text()
    page.get_by_role("link", name="Retour à la candidature").click()
    assert "révoqué" in page.locator(f"#cert-{first.id}").inner_text()
    shot(page, "32-certificats-renouveles")
    certs = svc.get_candidature(b, cid).certificates
    fresh = next(c for c in certs if not c.revoked)
    claims = svc.trust_list_claims()
    assert admit(claims, fresh.x5t_s256, "production").admitted
    assert not admit(claims, first.x5t_s256, "production").admitted


def test_certificate_refused_in_french_when_the_proxy_habilitation_is_withdrawn(
    site: Site, browser, tmp_path: Path
) -> None:
    from confiance.guichet import schemas as sc

    svc, keys = site.service, site.conformity_keys
    a, b = principal(svc, site.accounts["mandataire_a"]), principal(svc, site.accounts["mandataire_b"])
    ver, col = principal(svc, site.accounts["verificateur"]), principal(svc, site.accounts["college"])
    proxy = solution(svc, a, "Proxy Retire", proxy=True)
    elp = habilitate(svc, keys, a, ver, col, Role.ELP, proxy.id, "Proxy Retire")
    osp = habilitate(svc, keys, b, ver, col, Role.OSP, proxy.id, "Proxy Retire")
    cid = svc.get_habilitation(b, osp).candidature_id
    svc.withdraw(col, elp, sc.ReasonIn(reason="faille critique"))
    page = login(browser, site, "mandataire_b")
    page.goto(f"{site.url}/candidatures/{cid}")
    _key, csr = new_csr()
    f = tmp_path / "x.csr"
    f.write_text(csr)
    page.get_by_label("Demande de certificat (CSR, fichier PEM)").set_input_files(str(f))
    page.get_by_role("button", name="Commander le certificat de production").click()
    text = page.locator(".flash").first.inner_text()
    assert "Certificat refusé" in text and "retirée" in text, text
    assert svc.get_candidature(b, cid).certificates == []
