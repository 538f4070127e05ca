"""Our own Proxy e-Santé (confiance.proxy), started from its test harness, passes every check.

The tool still talks to it only over HTTPS; importing the proxy here is the test's job of
starting it, exactly as `confiance up` would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from confiance.conformity.report import build_report, sign_report
from confiance.core.jose import KeyStore
from confiance.core.tls import client_context
from confiance.pki import IssuedCertificate, Pki
from tests.conformity.harness import ManualClock, explain, faults, run_against, statuses
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle
from tests.proxy import harness as proxy_harness

IDLE = 5.0
ABSOLUTE = 12.0
WEB_CLIENT = "lps-web-conformite"


def _register_web_client(psc: PscHandle, redirect_uri: str) -> None:
    """What an operator does at PSC for the code flow: register the proxy's callback URL."""
    with httpx.Client(verify=client_context(psc.ca_bundle)) as http:
        r = http.post(
            f"{psc.url}/sandbox/admin/clients",
            headers={"Authorization": f"Bearer {psc.admin_token}"},
            json={
                "client_id": WEB_CLIENT,
                "tls_client_auth_subject_dn": psc.mtls_cert.subject_dn,
                "espace_de_confiance": True,
                "redirect_uris": [redirect_uri],
            },
        )
        assert r.status_code in (201, 409), r.text


API_ADMIN = "api-admin-" + "z" * 16


@pytest.mark.slow
def test_our_proxy_passes_every_check(
    tmp_path: Path,
    pki: Pki,
    server_cert: IssuedCertificate,
    psc_sandbox: PscHandle,
    api_services_factory: Callable[..., ApiHandle],
) -> None:
    api_services = api_services_factory(rs_admin_token=API_ADMIN)  # its access log is evidence
    base = proxy_harness.proxy_config(pki, server_cert, psc_sandbox, api_services, tmp_path)
    web = {
        "client_id": WEB_CLIENT,
        "auth": "mtls",
        "cert": psc_sandbox.mtls_cert.cert_path,
        "key": psc_sandbox.mtls_cert.key_path,
        "web_redirect_url": "https://lps.example/accueil",
    }
    broken = faults(api_services, server_cert)
    cfg = proxy_harness.proxy_config(
        pki,
        server_cert,
        psc_sandbox,
        api_services,
        tmp_path,
        services={**proxy_harness.services_from(api_services), **broken.proxy_services},
        sessions={"idle_ttl": IDLE, "absolute_ttl": ABSOLUTE, "sweep_interval": 0.2},
        lps_clients=[*(c.model_dump(mode="json") for c in base.lps_clients), web],
    )
    # The proxy's session clock moves only when the tool waits: under any load the main
    # session is never idle for 5 s between two steps of the story, and expiry is exact.
    clock = ManualClock()
    proxy = proxy_harness.start_proxy(cfg, pki, clock=clock)
    try:
        _register_web_client(psc_sandbox, f"{proxy.url}/callback")
        results = run_against(
            proxy.url,
            psc_sandbox,
            api_services,
            traces_auth=f"Bearer {proxy_harness.ADMIN}",
            idle_timeout=IDLE,
            absolute_timeout=ABSOLUTE,
            web_client_id=WEB_CLIENT,
            other_client_id=psc_sandbox.secret_client_id,
            api_access_log_url=f"{api_services.rs_url}/admin/access-log",
            api_admin_token=API_ADMIN,
            wait=clock.wait,
            **broken.tool,
        )
    finally:
        proxy.stop()
    st = statuses(results)
    assert not [k for k, v in st.items() if v == "fail"], explain(results)
    # A full report stays verifiable by joserfc-based verifiers (the guichet's): < 128 KiB.
    report = build_report(results, proxy_url=proxy.url, proxy_version="test")
    _payload, jws = sign_report(report, KeyStore(None, algs=("ES256",)))
    assert len(jws) < 128 * 1024
    # Everything is observed: with the API's access log even the cnf binding is verifiable.
    assert {k for k, v in st.items() if v == "unverifiable"} == set(), explain(results)
    assert build_report(results, proxy_url=proxy.url, proxy_version="test")["conforme"] is True
    assert st["beyond.auth_code"] == "pass", explain(results)  # our proxy offers the code flow


@pytest.mark.parametrize("idle", [5.0, 8.0])
def test_any_declared_timeout_passes(
    idle: float,
    tmp_path: Path,
    pki: Pki,
    server_cert: IssuedCertificate,
    psc_sandbox: PscHandle,
    api_services: ApiHandle,
) -> None:
    """The docs' idle_ttl = 5, or 8: the unmodified proxy passes when the tool is told the truth."""
    cfg = proxy_harness.proxy_config(
        pki,
        server_cert,
        psc_sandbox,
        api_services,
        tmp_path,
        sessions={"idle_ttl": idle, "absolute_ttl": 2.5 * idle, "sweep_interval": 0.2},
    )
    clock = ManualClock()
    proxy = proxy_harness.start_proxy(cfg, pki, clock=clock)
    try:
        results = run_against(
            proxy.url,
            psc_sandbox,
            api_services,
            traces_auth=f"Bearer {proxy_harness.ADMIN}",
            idle_timeout=idle,
            absolute_timeout=2.5 * idle,
            wait=clock.advance,  # only the proxy's clock matters to these checks
            only={"connect.ciba", "session.idle_timeout", "session.absolute_timeout", "disconnect"},
        )
    finally:
        proxy.stop()
    assert set(statuses(results).values()) == {"pass"}, explain(results)


def test_protected_traces_without_credential_are_unverifiable(
    tmp_path: Path, pki: Pki, server_cert: IssuedCertificate, psc_sandbox: PscHandle, api_services: ApiHandle
) -> None:
    proxy = proxy_harness.start_proxy(
        proxy_harness.proxy_config(pki, server_cert, psc_sandbox, api_services, tmp_path), pki
    )
    try:
        results = run_against(
            proxy.url, psc_sandbox, api_services, only={"connect.ciba", "disconnect", "traces.fields"}
        )
    finally:
        proxy.stop()
    st = statuses(results)
    assert st["traces.fields"] == "unverifiable", explain(results)
    assert "--traces-auth" in next(r.reason for r in results if r.id == "traces.fields")
