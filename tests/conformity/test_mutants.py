"""The tool tests itself: copies of our own proxy with one defect each.

Each mutant is the real proxy with one behaviour changed: by a pass-through front on the
wire (``mutants.py``), by its configuration, or (three defects that have no other seam)
by one monkeypatched name. The unmodified proxy, behind the same front, is the baseline:
a mutant must fail exactly the checks that name its defect and leave every other verdict
as in the baseline. Proxy names used: ``tests.proxy.harness`` (``proxy_config``,
``services_from``, ``start_proxy(clock=)``, ``ADMIN``); the config keys
``traces.conformity_mode``, ``server.trusted_proxies``, ``sessions.idle_ttl``,
``sessions.absolute_ttl``, ``services.*.timeout``; and the names patched in ``INTERNAL``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confiance.core.tls import ClientAuth, client_context
from confiance.pki import IssuedCertificate, Pki
from tests.conformity.harness import SLOW, ManualClock, explain, faults, run_against, statuses
from tests.conformity.mutants import Front, front_mutations
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle
from tests.proxy import harness as proxy_harness
from tests.support import start_https

API_ADMIN = "api-admin-" + "y" * 16


def _campaign(url: str, psc: PscHandle, api: ApiHandle, **over: Any) -> dict[str, str]:
    results = run_against(
        url,
        psc,
        api,
        traces_auth=f"Bearer {proxy_harness.ADMIN}",
        skip=SLOW,
        other_client_id=psc.secret_client_id,
        api_access_log_url=f"{api.rs_url}/admin/access-log",
        api_admin_token=API_ADMIN,
        **over,
    )
    return {"statuses": statuses(results), "text": explain(results)}  # type: ignore[dict-item]


@pytest.fixture(scope="module")
def api(api_services_factory: Callable[..., ApiHandle]) -> ApiHandle:
    """The API with its access log readable: what the service received becomes evidence."""
    return api_services_factory(rs_admin_token=API_ADMIN)


def _config(
    pki: Pki, cert: IssuedCertificate, psc: PscHandle, api: ApiHandle, tmp: Path, **over: Any
) -> tuple[Any, dict[str, Any]]:
    """Our proxy as a campaign needs it (its services plus three that fail on purpose), and
    what the tool must be told about those three."""
    broken = faults(api, cert)
    services = {**proxy_harness.services_from(api), **broken.proxy_services}
    return proxy_harness.proxy_config(pki, cert, psc, api, tmp, services=services, **over), broken.tool


@pytest.fixture(scope="module")
def real_proxy(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    server_cert: IssuedCertificate,
    psc_sandbox: PscHandle,
    api: ApiHandle,
) -> Any:
    cfg, tool = _config(pki, server_cert, psc_sandbox, api, tmp_path_factory.mktemp("m"))
    proxy = proxy_harness.start_proxy(cfg, pki)
    proxy.tool = tool  # what the tool is told about this proxy's fault services
    yield proxy
    proxy.stop()


def _through_front(proxy: Any, pki: Pki, cert: IssuedCertificate, mutation: Any) -> Any:
    return start_https(Front(proxy.url, client_context(pki.ca_bundle), mutation), pki, cert, ClientAuth.NONE)


@pytest.fixture(scope="module")
def baseline(real_proxy: Any, pki: Pki, server_cert: IssuedCertificate, psc_sandbox: PscHandle, api: ApiHandle) -> Any:
    front = _through_front(real_proxy, pki, server_cert, (None, None))
    try:
        return _campaign(front.url, psc_sandbox, api, **real_proxy.tool)
    finally:
        front.stop()


def test_unmodified_proxy_behind_the_front_fails_nothing(baseline: Any) -> None:
    st = baseline["statuses"]
    assert not [k for k, v in st.items() if v == "fail"], baseline["text"]
    # Everything is observed, but the web flow: no redirect_uri registered at this sandbox.
    assert {k for k, v in st.items() if v == "unverifiable"} <= {"beyond.auth_code"}, baseline["text"]
    # the sandbox taken down by the tool: our proxy answers the contract's 503, then recovers
    assert st["connect.psc_unavailable"] == "pass", baseline["text"]


def _assert_only(got: dict[str, Any], expected: set[str], baseline: Any) -> None:
    st, text = got["statuses"], got["text"]
    assert {k for k, v in st.items() if v == "fail"} == expected, text
    for check, status in st.items():
        if check not in expected:
            assert status == baseline["statuses"][check], f"{check}\n{text}"


FRONT = sorted(front_mutations("x", set()))


@pytest.mark.parametrize("name", FRONT)
def test_wire_mutant_fails_exactly_its_checks(
    name: str,
    real_proxy: Any,
    baseline: Any,
    pki: Pki,
    server_cert: IssuedCertificate,
    psc_sandbox: PscHandle,
    api: ApiHandle,
) -> None:
    clients = {psc_sandbox.mtls_client_id, psc_sandbox.secret_client_id}  # proxy_config's lps_clients
    mutation, expected = front_mutations(psc_sandbox.issuer, clients)[name]
    front = _through_front(real_proxy, pki, server_cert, mutation)
    try:
        got = _campaign(front.url, psc_sandbox, api, **real_proxy.tool)
    finally:
        front.stop()
    _assert_only(got, expected, baseline)


CONFIG = [
    ("traces_open_to_anyone", {"traces": {"conformity_mode": True}}, {"traces.access"}),
    # Trusting X-Forwarded-For, our proxy also drops the source port from its traces (it no
    # longer knows it): a second, real finding, so traces.fields fails too.
    (
        "x_forwarded_for_trusted_from_anyone",
        {"server": {"trusted_proxies": ["0.0.0.0/0"]}},
        {"traces.ip_address", "traces.fields"},
    ),
]


@pytest.mark.parametrize(("name", "over", "expected"), CONFIG, ids=[c[0] for c in CONFIG])
def test_config_mutant_fails_exactly_its_checks(
    name: str,
    over: dict[str, Any],
    expected: set[str],
    tmp_path: Path,
    baseline: Any,
    pki: Pki,
    server_cert: IssuedCertificate,
    psc_sandbox: PscHandle,
    api: ApiHandle,
) -> None:
    cfg, tool = _config(pki, server_cert, psc_sandbox, api, tmp_path, **over)
    proxy = proxy_harness.start_proxy(cfg, pki)
    front = _through_front(proxy, pki, server_cert, (None, None))
    try:
        got = _campaign(front.url, psc_sandbox, api, **tool)
    finally:
        front.stop()
        proxy.stop()
    _assert_only(got, expected, baseline)


def _counter_ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"00000000-0000-4000-8000-{next(counter):012d}"


async def _no_end_session(*_a: Any, **_k: Any) -> None:  # also stands for "no revocation"
    return None


# Inside the proxy (names the integrator must keep, or update here): the session id
# generator, PSC's end-session call, the API token revocation, the headers a service receives.
INTERNAL: list[tuple[str, Callable[[pytest.MonkeyPatch], None], set[str]]] = [
    (
        "predictable_session_ids",
        lambda mp: mp.setattr("confiance.proxy.domain.new_session_id", _counter_ids()),
        {"session.id_random"},
    ),
    (
        "psc_session_never_ended",
        lambda mp: mp.setattr("confiance.proxy.oauth.PscClient.end_session", _no_end_session),
        {"disconnect.psc_session"},
    ),
    (
        "api_tokens_never_revoked",
        lambda mp: mp.setattr("confiance.proxy.oauth.TokenExchanger.revoke", _no_end_session),
        {"disconnect.api_tokens_revoked"},
    ),
    (
        "lps_cookie_relayed",
        lambda mp: mp.setattr(
            "confiance.proxy.forwarding.DEFAULT_REQUEST_HEADERS",
            forwarding_module().DEFAULT_REQUEST_HEADERS | {b"cookie"},
        ),
        {"send.headers_isolated"},
    ),
]


def forwarding_module() -> Any:
    import confiance.proxy.forwarding as forwarding

    return forwarding


@pytest.mark.parametrize(("name", "patch", "expected"), INTERNAL, ids=[m[0] for m in INTERNAL])
def test_internal_mutant_fails_exactly_its_checks(
    name: str,
    patch: Callable[[pytest.MonkeyPatch], None],
    expected: set[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    baseline: Any,
    pki: Pki,
    server_cert: IssuedCertificate,
    psc_sandbox: PscHandle,
    api: ApiHandle,
) -> None:
    patch(monkeypatch)
    cfg, tool = _config(pki, server_cert, psc_sandbox, api, tmp_path)
    proxy = proxy_harness.start_proxy(cfg, pki)
    front = _through_front(proxy, pki, server_cert, (None, None))
    try:
        got = _campaign(front.url, psc_sandbox, api, **tool)
    finally:
        front.stop()
        proxy.stop()
    _assert_only(got, expected, baseline)


TIMEOUTS = [
    ("idle_longer_than_declared", {"idle_ttl": 12.0, "absolute_ttl": 12.0}, {"session.idle_timeout"}),
    ("absolute_never_enforced", {"idle_ttl": 5.0, "absolute_ttl": 3600.0}, {"session.absolute_timeout"}),
    ("unmodified", {"idle_ttl": 5.0, "absolute_ttl": 12.0}, set()),
]


@pytest.mark.parametrize(("name", "sessions", "expected"), TIMEOUTS, ids=[t[0] for t in TIMEOUTS])
def test_timeouts_are_measured_not_assumed(
    name: str,
    sessions: dict[str, float],
    expected: set[str],
    tmp_path: Path,
    pki: Pki,
    server_cert: IssuedCertificate,
    psc_sandbox: PscHandle,
    api: ApiHandle,
) -> None:
    """The operator declares 5 s idle and 12 s absolute; the mutant does not enforce one of them."""
    cfg = proxy_harness.proxy_config(
        pki, server_cert, psc_sandbox, api, tmp_path, sessions={**sessions, "sweep_interval": 0.2}
    )
    clock = ManualClock()
    proxy = proxy_harness.start_proxy(cfg, pki, clock=clock)
    try:
        results = run_against(
            proxy.url,
            psc_sandbox,
            api,
            idle_timeout=5.0,
            absolute_timeout=12.0,
            wait=clock.advance,
            only={"connect.ciba", "session.idle_timeout", "session.absolute_timeout", "disconnect"},
        )
    finally:
        proxy.stop()
    assert {k for k, v in statuses(results).items() if v == "fail"} == expected, explain(results)
    for r in results:
        if r.id not in expected:
            assert r.status.value == "pass", explain(results)
