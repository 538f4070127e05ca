"""The signed report: every byte counts, the guichet's pure verifier, redaction, HTML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from confiance.conformity.html import render_html
from confiance.conformity.model import CheckResult, Evidence, Status, redact
from confiance.conformity.report import (
    ReportError,
    build_report,
    load_keys,
    read_jwks,
    sign_report,
    verify_detached,
    verify_report,
)
from confiance.core.jose import KeyStore


def _results() -> list[CheckResult]:
    ev = Evidence()
    ev.exchange(
        {
            "label": "POST /connect",
            "request": {"method": "POST", "url": "https://p/connect", "headers": {"authorization": "Bearer abc.def"}},
            "response": {"status": 200, "body": {"proxy_session_id": "s1", "access_token": "eyJhbGciOi.eyJzdWIi.sig"}},
        }
    )
    return [
        CheckResult("connect.ciba", "Connexion CIBA", "200 et cookie", Status.PASS, evidence=ev),
        CheckResult("connect.replay", "Rejeu", "304 <sans corps>", Status.FAIL, reason="HTTP 200 au lieu de 304"),
        CheckResult("api.cnf_binding", "cnf", "lié", Status.UNVERIFIABLE, reason="journal absent"),
    ]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeyStore:
    return load_keys(tmp_path_factory.mktemp("state"))


def test_sign_and_verify_roundtrip(keys: KeyStore) -> None:
    report = build_report(_results(), proxy_url="https://127.0.0.1:8443", proxy_version="1.2")
    payload, jws = sign_report(report, keys)
    got = verify_report(jws, keys.jwks())
    assert got == json.loads(payload)
    assert got["summary"] == {"total": 3, "passed": 1, "failed": 1, "unverifiable": 1, "not_applicable": 0}
    assert got["conforme"] is False
    assert set(got) >= {"tool", "proxy", "date", "checks", "summary"}
    assert {"id", "name", "requirement", "passed", "status", "evidence"} <= set(got["checks"][0])
    assert verify_detached(payload, jws, keys.jwks()) == got


def test_editing_any_byte_of_the_signed_report_fails(keys: KeyStore) -> None:
    report = build_report(_results()[:1], proxy_url="https://p", proxy_version=None)
    _payload, jws = sign_report(report, keys)
    jwks = keys.jwks()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    for i, ch in enumerate(jws):
        # Two substitutions per position: a neighbour in the alphabet and one that only flips
        # base64url's spare low bits (the case lenient decoders miss).
        for repl in {alphabet[(alphabet.index(ch) + 1) % len(alphabet)], alphabet[(alphabet.index(ch) ^ 1) % 64]}:
            if repl == ch:
                continue
            edited = jws[:i] + repl + jws[i + 1 :]
            with pytest.raises(ReportError):
                verify_report(edited, jwks)
    for edited in (jws + "\n", " " + jws, jws[:-1]):
        with pytest.raises(ReportError):
            verify_report(edited, jwks)


def test_editing_any_byte_of_the_json_file_fails(keys: KeyStore) -> None:
    report = build_report(_results(), proxy_url="https://p", proxy_version=None)
    payload, jws = sign_report(report, keys)
    for i in range(0, len(payload), 7):
        edited = payload[:i] + bytes([payload[i] ^ 0x01]) + payload[i + 1 :]
        with pytest.raises(ReportError):
            verify_detached(edited, jws, keys.jwks())


def test_foreign_key_and_forged_reports_are_refused(keys: KeyStore) -> None:
    report = build_report(_results(), proxy_url="https://p", proxy_version=None)
    other = KeyStore(None, algs=("ES256",))
    _p, foreign = sign_report(report, other)
    with pytest.raises(ReportError, match="clé de signature inconnue"):
        verify_report(foreign, keys.jwks())
    # Same key, but not a report (e.g. another JWS the tool's key could have signed).
    not_report = keys.sign_bytes(b'{"hello": 1}', alg="ES256")
    with pytest.raises(ReportError):
        verify_report(not_report, keys.jwks())
    # A forged "all passed" summary signed by another key with a stolen kid is refused.
    kid = keys.jwks()["keys"][0]["kid"]
    _p, stolen = sign_report(report, other)
    header = json.dumps({"alg": "ES256", "kid": kid, "typ": "confiance-conformity-report+jws"}).encode()
    import base64

    h = base64.urlsafe_b64encode(header).rstrip(b"=").decode()
    with pytest.raises(ReportError):
        verify_report(h + stolen[stolen.index(".") :], keys.jwks())


def test_keys_persist_and_jwks_published(tmp_path: Path) -> None:
    a = load_keys(tmp_path)
    b = load_keys(tmp_path)
    assert a.jwks() == b.jwks() == read_jwks(tmp_path / "conformity" / "jwks.json")
    assert all("d" not in k for k in read_jwks(tmp_path / "conformity" / "jwks.json")["keys"])


def test_evidence_redacts_tokens_and_secrets() -> None:
    report = build_report(_results(), proxy_url="https://p", proxy_version=None)
    text = json.dumps(report)
    assert "abc.def" not in text and "eyJhbGciOi" not in text
    assert "s1" in text  # identifiers the checks compare stay visible
    assert redact({"client_secret": "x" * 10, "nested": [{"refresh_token": "r"}]}) == {
        "client_secret": "«masqué»",
        "nested": [{"refresh_token": "«masqué»"}],
    }


def test_html_is_french_self_contained_and_escaped() -> None:
    report = build_report(_results(), proxy_url="https://p/<script>", proxy_version=None)
    html = render_html(report)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "échoué" in html and "non vérifiable" in html and "réussi" in html
    assert "<link" not in html and "src=" not in html  # no external resource
    facts = {"psc_is_sandbox": {"established": False, "detail": "autre <fournisseur>"}}
    shown = render_html(build_report(_results(), proxy_url="https://p", proxy_version=None, preconditions=facts))
    assert "non établi" in shown and "autre &lt;fournisseur&gt;" in shown


def test_large_reports_verify_and_algorithm_confusion_is_refused(tmp_path: Path) -> None:
    big = [
        CheckResult(f"c{i}", "n", "r", Status.PASS, evidence=Evidence([{"kind": "note", "text": "x" * 2000}]))
        for i in range(120)
    ]
    report = build_report(big, proxy_url="https://p", proxy_version=None)
    for alg in ("ES256", "RS256"):
        store = KeyStore(tmp_path / f"{alg}.json", algs=(alg,))
        _payload, jws = sign_report(report, store, alg=alg)
        assert len(jws) > 200_000  # beyond joserfc's 128 KiB compact limit
        assert verify_report(jws, store.jwks())["summary"]["passed"] == 120
        # The same signature presented under the other algorithm name is refused.
        other = "RS256" if alg == "ES256" else "ES256"
        import base64

        header = json.loads(base64.urlsafe_b64decode(jws.split(".")[0] + "=="))
        header["alg"] = other
        h = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
        with pytest.raises(ReportError):
            verify_report(h + jws[jws.index(".") :], store.jwks())


def test_conforme_allows_not_applicable_but_never_unverifiable_or_failed() -> None:
    def rep(*statuses: Status) -> bool:
        checks = [CheckResult(f"c{i}", "n", "r", s) for i, s in enumerate(statuses)]
        return bool(build_report(checks, proxy_url="https://p", proxy_version=None)["conforme"])

    assert rep(Status.PASS, Status.NOT_APPLICABLE)
    assert not rep(Status.PASS, Status.UNVERIFIABLE)
    assert not rep(Status.PASS, Status.FAIL)
    assert not rep(Status.NOT_APPLICABLE)

    def rep_optional(status: Status) -> bool:
        checks = [CheckResult("m", "n", "r", Status.PASS), CheckResult("o", "n", "r", status, mandatory=False)]
        return bool(build_report(checks, proxy_url="https://p", proxy_version=None)["conforme"])

    assert rep_optional(Status.UNVERIFIABLE)  # an optional setup not provided does not block
    assert not rep_optional(Status.FAIL)  # but what was observed and failed always does
    assert "Incomplet" in render_html(
        build_report([CheckResult("c", "n", "r", Status.UNVERIFIABLE)], proxy_url="https://p", proxy_version=None)
    )
