"""Each deliberately broken proxy is reported by exactly the right check.

The doubles run the real protocol against the real PSC sandbox and API services; only the
defect differs. The correct double is the baseline: a defect must turn exactly the
expected checks to "échoué" and leave every other verdict as in the baseline.
"""

from __future__ import annotations

import pytest

from confiance.pki import IssuedCertificate, Pki
from tests.conformity.harness import SLOW, double_config, explain, run_against, start_double, statuses
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle


@pytest.fixture(scope="module")
def baseline(pki: Pki, server_cert: IssuedCertificate, psc_sandbox: PscHandle, api_services: ApiHandle) -> dict:
    server = start_double(pki, server_cert, double_config(psc_sandbox, api_services))
    try:
        results = run_against(server.url, psc_sandbox, api_services, skip=SLOW)
    finally:
        server.stop()
    return {"statuses": statuses(results), "text": explain(results)}


def test_correct_double_passes_every_ans_check(baseline: dict) -> None:
    st = baseline["statuses"]
    failed = [k for k, v in st.items() if v == "fail"]
    assert not failed, baseline["text"]
    for check in (
        "connect.ciba",
        "connect.replay",
        "connect.unknown_client",
        "connect.malformed",
        "send.unauthenticated",
        "send.signsessiondata",
        "connect.session_state",
        "connect.denied",
        "disconnect",
        "disconnect.psc_session",
        "traces.fields",
        "traces.api_request",
        "traces.dn",
        "traces.window",
        "tls.legacy_refused",
    ):
        assert st[check] == "pass", baseline["text"]
    assert st["beyond.auth_code"] == "not_applicable"


DEFECTS = [
    ("replay_200", {"connect.replay"}, {}),
    ("omit_trace_field", {"traces.fields"}, {}),
    ("no_token_exchange", {"send.signsessiondata"}, {"connect.session_state": "unverifiable"}),
    ("one_cert", {"traces.dn"}, {}),
    ("no_end_session", {"disconnect.psc_session"}, {}),
    ("no_window", {"traces.window"}, {}),
    ("api_request_everywhere", {"traces.api_request"}, {}),
    ("lax_channel", {"connect.malformed"}, {}),
]


@pytest.mark.parametrize(("defect", "expected_failures", "other_changes"), DEFECTS, ids=[d[0] for d in DEFECTS])
def test_each_defect_is_reported_by_the_right_check(
    defect: str,
    expected_failures: set[str],
    other_changes: dict[str, str],
    baseline: dict,
    pki: Pki,
    server_cert: IssuedCertificate,
    psc_sandbox: PscHandle,
    api_services: ApiHandle,
) -> None:
    server = start_double(pki, server_cert, double_config(psc_sandbox, api_services, [defect]))
    try:
        results = run_against(server.url, psc_sandbox, api_services, skip=SLOW)
    finally:
        server.stop()
    st = statuses(results)
    text = explain(results)
    assert {k for k, v in st.items() if v == "fail"} == expected_failures, text
    for check, status in st.items():
        if check not in expected_failures:
            assert status == other_changes.get(check, baseline["statuses"][check]), f"{check}\n{text}"
    failing = next(r for r in results if r.id in expected_failures)
    assert failing.reason and failing.evidence.items  # says why, with evidence


def test_without_sandbox_admin_the_tool_says_unverifiable_never_passed(
    pki: Pki, server_cert: IssuedCertificate, psc_sandbox: PscHandle, api_services: ApiHandle
) -> None:
    server = start_double(pki, server_cert, double_config(psc_sandbox, api_services))
    try:
        results = run_against(
            server.url,
            psc_sandbox,
            api_services,
            psc_admin_token=None,
            only={"connect.ciba", "connect.replay", "connect.denied", "disconnect", "disconnect.psc_session"},
        )
    finally:
        server.stop()
    st = statuses(results)
    assert st == {
        "connect.ciba": "pass",
        "connect.replay": "unverifiable",
        "connect.denied": "unverifiable",
        "disconnect": "pass",
        "disconnect.psc_session": "unverifiable",
    }, explain(results)
    assert "jeton d'administration" in next(r.reason for r in results if r.id == "connect.replay")


def test_campaign_identity_is_made_to_approve_then_restored(
    pki: Pki, server_cert: IssuedCertificate, psc_sandbox: PscHandle, api_services: ApiHandle
) -> None:
    nid = psc_sandbox.identities[5]["national_id"]
    psc_sandbox.set_ecps("deny", national_id=nid)
    server = start_double(pki, server_cert, double_config(psc_sandbox, api_services))
    try:
        results = run_against(
            server.url, psc_sandbox, api_services, national_id=nid, only={"connect.ciba", "disconnect"}
        )
        assert {r.status.value for r in results} == {"pass"}, explain(results)
        assert psc_sandbox.sandbox.provider.policy_for(nid).mode == "deny"
    finally:
        server.stop()
        psc_sandbox.reset()
