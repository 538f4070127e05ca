"""What the tool did not observe, it does not certify: our proxy wired to another PSC.

The proxy under test talks to a second sandbox (another OpenID provider, same clients and
identities) while the tool drives the first one. Everything whose evidence rests on the
sandbox must be "non vérifiable", with the reason; the report is not "conforme".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from confiance.conformity.report import build_report
from confiance.conformity.runner import run
from confiance.pki import IssuedCertificate, Pki
from tests.conformity.harness import explain, statuses, tool_config
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle
from tests.proxy import harness as proxy_harness

NEEDS_SANDBOX = {
    "connect.binding",
    "connect.replay",
    "connect.denied",
    "connect.no_answer",
    "connect.psc_unavailable",
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
        outcome = run(tool_config(proxy.url, psc_sandbox, api_services, traces_auth=f"Bearer {proxy_harness.ADMIN}"))
    finally:
        proxy.stop()
    results = outcome.results
    psc_fact = outcome.preconditions["psc_is_sandbox"]
    assert psc_fact["established"] is False and "autre fournisseur" in psc_fact["detail"]
    st = statuses(results)
    text = explain(results)
    for check in NEEDS_SANDBOX:
        assert st[check] == "unverifiable", f"{check}\n{text}"
        reason = next(r.reason for r in results if r.id == check)
        assert "autre fournisseur" in reason, f"{check}: {reason}"
    assert st["connect.ciba"] == "pass", text  # observed directly: 200, body and cookie
    report = build_report(results, proxy_url=proxy.url, proxy_version="test", preconditions=outcome.preconditions)
    assert report["conforme"] is False
    assert report["preconditions"]["psc_is_sandbox"]["established"] is False  # shown to the reader


def test_what_the_tool_can_observe_is_established_first(
    tmp_path: Path,
    pki: Pki,
    server_cert: IssuedCertificate,
    psc_sandbox: PscHandle,
    api_services_factory: Callable[..., ApiHandle],
) -> None:
    api = api_services_factory(rs_admin_token="api-admin-" + "p" * 16)
    proxy = proxy_harness.start_proxy(proxy_harness.proxy_config(pki, server_cert, psc_sandbox, api, tmp_path), pki)
    try:
        seen = run(
            tool_config(
                proxy.url,
                psc_sandbox,
                api,
                traces_auth=f"Bearer {proxy_harness.ADMIN}",
                api_access_log_url=f"{api.rs_url}/admin/access-log",
                api_admin_token="api-admin-" + "p" * 16,
                only={"connect.ciba", "disconnect"},
            )
        ).preconditions
        blind = run(
            tool_config(proxy.url, psc_sandbox, api, psc_admin_token=None, only={"connect.ciba", "disconnect"})
        ).preconditions
    finally:
        proxy.stop()
    assert {k: v["established"] for k, v in seen.items()} == {
        "proxy": True,
        "traces": True,
        "sandbox_admin": True,
        "api_jwks": True,
        "api_access_log": True,
        "psc_is_sandbox": True,
    }, seen
    # A wrong /traces credential, no sandbox admin token, no access log: each said, none assumed.
    assert blind["traces"]["established"] is False and blind["sandbox_admin"]["established"] is False, blind
    assert blind["api_access_log"]["established"] is False and blind["psc_is_sandbox"]["established"] is None
