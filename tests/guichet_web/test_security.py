"""Security properties of the web UI, each with a test that fails if the property breaks:
role isolation (browser), CSRF (browser, including a real cross-site form), lockout,
cookie attributes, logout revocation."""

from __future__ import annotations

import re
import ssl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from confiance.core.server import ServerThread, ServiceConfig
from confiance.guichet import schemas as sc
from confiance.guichet.domain.model import AnsRole, Role, SolutionKind

from .conftest import PASSWORD, Site, login, shot

pytestmark = [pytest.mark.browser]


def _principal(site: Site, who: str):
    tok = site.service.issue_token_for(site.accounts[who], "test")
    p = site.service.authenticate(tok.access_token)
    assert p is not None
    return p


def _draft(site: Site, who: str = "mandataire_a") -> int:
    """A draft ELU candidature of company A, created through the service."""
    svc, p = site.service, _principal(site, who)
    sol = svc.create_solution(
        p, sc.SolutionIn(name="Logiciel", kind=SolutionKind.USER, components=[sc.ComponentIn(kind="LPS", name="lps")])
    )
    proxy = svc.create_solution(
        p, sc.SolutionIn(name="Proxy", kind=SolutionKind.PROXY, components=[sc.ComponentIn(kind="PROXY", name="px")])
    )
    data = sc.CandidatureIn(
        role=Role.ELU, solution_id=sol.id, proxy_solution_id=proxy.id, software_name="Logiciel", software_version="1.0"
    )
    return svc.create_candidature(p, data).id


def _status(site: Site, cid: int) -> str:
    return site.service.get_candidature(_principal(site, "verificateur"), cid).status


class _Resp:
    def __init__(self, status: int, body: str) -> None:
        self.status, self.body = status, body
        self.ok = 200 <= status < 300

    def text(self) -> str:
        return self.body


def _post(page, url: str, form: dict[str, str]) -> _Resp:
    """POST from inside the page with the browser's own cookies (a same-origin fetch)."""
    status, body = page.evaluate(
        """async ([url, form]) => {
            const r = await fetch(url, {method: "POST", body: new URLSearchParams(form), credentials: "same-origin"});
            return [r.status, await r.text()];
        }""",
        [url, form],
    )
    return _Resp(status, body)


def _csrf(page) -> str:
    return page.locator("input[name=csrf]").first.input_value()


def test_candidate_cannot_reach_ans_pages_and_staff_cannot_reach_candidate_pages(site: Site, browser) -> None:
    page = login(browser, site, "salarie_a")
    for path in ("/ans/instruction", "/ans/college", "/ans/registre", "/ans/audit", "/ans/candidatures/1"):
        resp = page.goto(site.url + path)
        assert resp is not None and resp.status == 403, path
        assert "Accès refusé" in page.locator("h1").inner_text()
    shot(page, "12-acces-refuse")
    # and an ANS action posted directly is refused before the handler runs
    r = _post(page, site.url + "/ans/college/1/decision", {"csrf": _csrf(page), "decision": "accorder"})
    assert r.status == 403
    ver = login(browser, site, "verificateur")
    for path in ("/tableau-de-bord", "/candidatures/nouvelle", "/habilitations"):
        resp = ver.goto(site.url + path)
        assert resp is not None and resp.status == 403, path
    college = login(browser, site, "college")
    assert college.goto(site.url + "/ans/instruction").status == 403  # verifier pages are not the college's


def test_salarie_cannot_see_or_act_on_another_organisation(site: Site, browser) -> None:
    cid = _draft(site)
    page = login(browser, site, "salarie_b")
    resp = page.goto(f"{site.url}/candidatures/{cid}")
    assert resp is not None and resp.status == 404  # other companies' dossiers do not even exist for B
    token = _csrf(page)
    for path, form in (
        (f"/candidatures/{cid}/abandonner", {"version": "1"}),
        (f"/candidatures/{cid}/soumettre", {"commitment": "respect_referentiels_cgu"}),
        (f"/candidatures/{cid}/modifier", {"version": "1", "software_name": "pirate", "software_version": "6.6.6"}),
    ):
        r = _post(page, site.url + path, {"csrf": token, **form})
        assert r.status in (200, 404)  # the refusal is rendered (after the redirect)…
        assert "introuvable" in r.text()
    detail = site.service.get_candidature(_principal(site, "verificateur"), cid)
    assert detail.status == "brouillon" and detail.software_name == "Logiciel"  # …and nothing changed
    # a salarié of the same company who is neither author nor collaborator is refused too
    same = login(browser, site, "salarie_a")
    assert same.goto(f"{site.url}/candidatures/{cid}").status == 403


def test_forms_without_valid_csrf_token_are_rejected(site: Site, browser) -> None:
    cid = _draft(site)
    page = login(browser, site, "mandataire_a")
    page.goto(f"{site.url}/candidatures/{cid}")
    # no token
    r = _post(page, f"{site.url}/candidatures/{cid}/abandonner", {"version": "1"})
    assert r.status == 403 and "anti-CSRF" in r.text()
    # a token from another session
    other = login(browser, site, "salarie_a")
    r = _post(page, f"{site.url}/candidatures/{cid}/abandonner", {"csrf": _csrf(other), "version": "1"})
    assert r.status == 403
    # the right token is accepted (control: the refusals above were for the token only)
    assert _status(site, cid) == "brouillon"


def test_cross_site_form_cannot_act_with_the_victims_session(site: Site, browser) -> None:
    """A real attack: another origin (same host, other port: same *site*, so SameSite=Lax
    does not help) auto-submits a form to the guichet in the victim's browser."""
    cid = _draft(site)
    victim = login(browser, site, "mandataire_a")

    async def evil(_request):
        return HTMLResponse(
            f'<form id="f" method="post" action="{site.url}/candidatures/{cid}/abandonner">'
            '<input name="version" value="1"><input name="csrf" value="devine"></form>'
            '<script>document.getElementById("f").submit()</script>'
        )

    attacker = ServerThread(Starlette(routes=[Route("/", evil)]), ServiceConfig(port=0)).start()
    try:
        with victim.expect_navigation(url=re.compile(r".*/abandonner")) as nav:
            victim.goto(attacker.url + "/")
        assert nav.value is not None and nav.value.status == 403
        assert "Requête refusée" in victim.content() or "anti-CSRF" in victim.content()
    finally:
        attacker.stop()
    assert _status(site, cid) == "brouillon"


@pytest.fixture
def http(site: Site, pki) -> httpx.Client:
    with httpx.Client(base_url=site.url, verify=ssl.create_default_context(cafile=str(pki.ca_bundle)), timeout=30) as c:
        yield c


def _login_http(http: httpx.Client, email: str, password: str) -> httpx.Response:
    page = http.get("/connexion")
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
    return http.post("/connexion", data={"csrf": token, "email": email, "password": password, "next": "/"})


def test_lockout_after_repeated_failures(site: Site, http: httpx.Client) -> None:
    email = "verrouillage@ans.example"  # its own account: the lock lasts 15 minutes
    site.service.bootstrap_account(email, "Compte à verrouiller", PASSWORD, [AnsRole.VERIFIER])
    for _ in range(5):
        r = _login_http(http, email, "mauvais-mot-de-passe")
        assert r.status_code == 401
    r = _login_http(http, email, PASSWORD)  # the right password no longer opens the account
    assert r.status_code == 401 and "verrouillé" in r.text
    http.cookies.clear()
    r = _login_http(http, site.accounts["salarie_b"], PASSWORD)  # other accounts are unaffected
    assert r.status_code == 303


def test_session_cookie_attributes_and_logout_revokes(site: Site, http: httpx.Client) -> None:
    r = _login_http(http, site.accounts["admin"], PASSWORD)
    assert r.status_code == 303
    cookie = next(
        v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("__Host-guichet_session=")
    )
    low = cookie.lower()
    assert "secure" in low and "httponly" in low and "samesite=lax" in low and "path=/" in low and "domain" not in low
    stolen = http.cookies.get("__Host-guichet_session")
    assert site.service.authenticate(stolen) is None  # a web session is not an API bearer token
    assert http.get("/ans/audit").status_code == 200
    page = http.get("/ans/registre")
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
    assert http.post("/deconnexion", data={"csrf": token}).status_code == 303
    http.cookies.clear()
    http.cookies.set("__Host-guichet_session", stolen)
    r = http.get("/ans/audit")
    assert r.status_code == 303 and "/connexion" in r.headers["location"]  # the old cookie is dead


def test_security_headers(site: Site, http: httpx.Client) -> None:
    r = http.get("/connexion")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in r.text  # no inline script anywhere: the CSP can forbid it


def test_open_redirect_is_refused(site: Site, http: httpx.Client) -> None:
    page = http.get("/connexion")
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
    r = http.post(
        "/connexion",
        data={"csrf": token, "email": site.accounts["college"], "password": PASSWORD, "next": "//evil.example/x"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_evidence_files_are_served_inert_and_only_to_their_organisation(site: Site, browser) -> None:
    from .factory import principal, solution

    svc = site.service
    a, ver = principal(svc, site.accounts["mandataire_a"]), principal(svc, site.accounts["verificateur"])
    sol = solution(svc, a, "Proxy Fichiers", proxy=True)
    c = svc.create_candidature(
        a, sc.CandidatureIn(role=Role.ELP, solution_id=sol.id, software_name="Proxy Fichiers", software_version="1.0")
    )
    svc.submit_form(
        a, c.id, sc.CommitmentsIn(respect_referentiels_cgu=True, exactitude_informations=True, acceptation_audits=True)
    )
    svc.validate_form(ver, c.id, sc.ActionIn())
    sha = svc.upload_file(a, b"<script>alert(1)</script> configuration TLS\n", "text/plain").sha256
    svc.deposit_evidence(a, c.id, sc.EvidenceIn(requirement_id="TLS-01", kind="document", file_sha256=sha))
    url = f"{site.url}/candidatures/{c.id}/fichiers/{sha}"
    owner = login(browser, site, "mandataire_a")
    status, headers = owner.evaluate(
        "async (u) => { const r = await fetch(u); return [r.status, Object.fromEntries(r.headers)]; }", url
    )
    assert status == 200
    assert headers["content-type"].startswith("text/plain") and headers["x-content-type-options"] == "nosniff"
    assert headers["content-disposition"].startswith("attachment") and "sandbox" in headers["content-security-policy"]
    other = login(browser, site, "mandataire_b")
    assert other.goto(url).status == 404


def test_oversized_uploads_are_refused_before_parsing(site: Site, http: httpx.Client) -> None:
    _login_http(http, site.accounts["salarie_b"], PASSWORD)
    page = http.get("/tableau-de-bord")
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
    big = b"%PDF-" + b"0" * (site.service.settings.max_upload_bytes + 300 * 1024)
    r = http.post(
        "/candidatures/1/preuves/document",
        data={"csrf": token, "requirement_id": "TLS-01"},
        files={"file": ("x.pdf", big, "application/pdf")},
    )
    assert r.status_code == 413 and "trop volumineux" in r.text

    def chunks():  # no Content-Length: the limit applies while streaming
        yield f"csrf={token}&x=".encode()
        for _ in range(40):
            yield b"a" * 16384

    r = http.post(
        "/candidatures/1/modifier", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 413
