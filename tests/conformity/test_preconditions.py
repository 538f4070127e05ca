"""What the tool did not observe, it does not certify: our proxy wired to another PSC.

The proxy under test talks to a second sandbox (another OpenID provider, same clients and
identities) while the tool drives the first one. Everything whose evidence rests on the
sandbox must be "non vérifiable", with the reason; the report is not "conforme".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from confiance.conformity.report import build_report
from confiance.pki import IssuedCertificate, Pki
from tests.conformity.harness import explain, run_against, statuses
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle
from tests.proxy import harness as proxy_harness

NEEDS_SANDBOX = {
    "connect.binding",
    "connect.replay",
    "connect.denied",
    "connect.no_answer",
    "disconnect.psc_session",
    "beyond.refresh",
    "beyond.idle_expiry",
}


def test_proxy_wired_to_another_provider_is_not_certified(
    tmp_path: Path,
    pki: Pki,
    server_cert: IssuedCertificate,
    psc_sandbox: PscHandle,
    psc_sandbox_factory: Callable[..., PscHandle],
    api_services: ApiHandle,
) -> None:
    foreign = psc_sandbox_factory()
    cfg = proxy_harness.proxy_config(pki, server_cert, foreign, api_services, tmp_path)
    proxy = proxy_harness.start_proxy(cfg, pki)
    try:
        results = run_against(proxy.url, psc_sandbox, api_services, traces_auth=f"Bearer {proxy_harness.ADMIN}")
    finally:
        proxy.stop()
    st = statuses(results)
    text = explain(results)
    for check in NEEDS_SANDBOX:
        assert st[check] == "unverifiable", f"{check}\n{text}"
        reason = next(r.reason for r in results if r.id == check)
        assert "autre fournisseur" in reason, f"{check}: {reason}"
    assert st["connect.ciba"] == "pass", text  # observed directly: 200, body and cookie
    report = build_report(results, proxy_url=proxy.url, proxy_version="test")
    assert report["conforme"] is False
