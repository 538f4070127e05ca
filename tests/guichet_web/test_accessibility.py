"""Accessibility and responsiveness checks on the main pages, in the browser, plus the
colour contrast of the palette (WCAG 2.x AA: 4.5:1 for text)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from confiance.guichet import schemas as sc
from confiance.guichet.domain.model import Role

from .conftest import Site, login, shot
from .factory import principal, solution

CSS = Path(__file__).resolve().parents[2] / "src/confiance/guichet/web/static/guichet.css"

UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))
  .map(e => e.outerHTML.slice(0, 120))"""


def _evidence_stage_candidature(site: Site) -> int:
    svc = site.service
    a, ver = principal(svc, site.accounts["mandataire_a"]), principal(svc, site.accounts["verificateur"])
    sol = solution(svc, a, "Proxy Accessible", proxy=True)
    c = svc.create_candidature(
        a, sc.CandidatureIn(role=Role.ELP, solution_id=sol.id, software_name="Proxy Accessible", software_version="3.0")
    )
    svc.submit_form(
        a, c.id, sc.CommitmentsIn(respect_referentiels_cgu=True, exactitude_informations=True, acceptation_audits=True)
    )
    svc.validate_form(ver, c.id, sc.ActionIn())
    return c.id


@pytest.mark.browser
def test_pages_are_labelled_keyboard_usable_and_responsive(site: Site, browser) -> None:
    cid = _evidence_stage_candidature(site)
    cand = login(browser, site, "mandataire_a")
    ver = login(browser, site, "verificateur")
    pages = [
        (cand, "/tableau-de-bord"),
        (cand, "/candidatures/nouvelle"),
        (cand, f"/candidatures/{cid}"),
        (cand, f"/candidatures/{cid}/test-intrusion"),
        (cand, "/habilitations"),
        (cand, "/comptes"),
        (ver, "/ans/instruction"),
        (ver, f"/ans/candidatures/{cid}"),
        (ver, "/ans/registre"),
        (ver, "/ans/audit"),
        (ver, "/habilitations-publiques"),
        (ver, "/ans/comptes"),
        (ver, "/ans/passi"),
        (ver, "/ans/referentiel"),
    ]
    for page, path in pages:
        assert page.goto(site.url + path).status == 200, path
        assert page.evaluate(UNLABELLED) == [], path
        assert page.locator("html").get_attribute("lang") == "fr"
        assert page.locator("h1").count() == 1, path
        assert page.locator("[style]").count() == 0, path  # the CSP forbids inline styles
    anon = browser.new_context(locale="fr-FR").new_page()
    for path in ("/connexion", "/inscription", "/habilitations-publiques"):
        anon.goto(site.url + path)
        assert anon.evaluate(UNLABELLED) == [] and anon.locator("h1").count() == 1, path
    # keyboard: the first Tab reaches the skip link, which is visibly focused and leads to the content
    cand.goto(site.url + f"/candidatures/{cid}")
    cand.keyboard.press("Tab")
    focused = cand.evaluate(
        "() => [document.activeElement.textContent, getComputedStyle(document.activeElement).outlineStyle]"
    )
    assert focused[0] == "Aller au contenu" and focused[1] != "none"
    cand.keyboard.press("Enter")
    assert cand.evaluate("() => document.activeElement.id") == "contenu"
    # responsive: no horizontal scrolling of the page on a phone (wide tables scroll inside their frame)
    phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=cand.context.storage_state())
    p = phone.new_page()
    for path in (
        "/tableau-de-bord",
        f"/candidatures/{cid}",
        "/candidatures/nouvelle",
        f"/candidatures/{cid}/test-intrusion",
    ):
        p.goto(site.url + path)
        assert p.evaluate("() => document.documentElement.scrollWidth") <= 391, path
    shot(p, "16-mobile-candidature")


def _luminance(hex_colour: str) -> float:
    rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _ratio(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_palette_text_contrast_meets_wcag_aa() -> None:
    css = CSS.read_text()
    var = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})", css))
    pairs = [
        ("ink", "paper"),
        ("ink", "canvas"),
        ("muted", "paper"),
        ("muted", "canvas"),
        ("brand", "paper"),
        ("brand", "info-bg"),
        ("ok", "ok-bg"),
        ("warn", "warn-bg"),
        ("bad", "bad-bg"),
        ("brand-dark", "canvas"),
    ]
    for fg, bg in pairs:
        assert _ratio(var[fg], var[bg]) >= 4.5, (fg, bg, round(_ratio(var[fg], var[bg]), 2))
    assert _ratio("#ffffff", var["brand"]) >= 4.5  # header and buttons
    assert _ratio("#ffffff", var["ok"]) >= 4.5 and _ratio("#ffffff", var["bad"]) >= 4.5
