"""The fixture other components use: its knobs must do what its docstring says."""

from __future__ import annotations

import threading
import time

from tests.fixtures_psc import PscHandle


def test_manual_mode_pending_approve_deny(psc_sandbox: PscHandle) -> None:
    psc_sandbox.set_ecps("manual")
    try:
        results: list[dict] = []
        worker = threading.Thread(target=lambda: results.append(psc_sandbox.ciba_login(binding_message="31")))
        worker.start()
        deadline = time.monotonic() + 5
        while not psc_sandbox.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        (req,) = psc_sandbox.pending()
        assert req["binding_message"] == "31" and req["channel"] == "CARD"
        psc_sandbox.approve(req["auth_req_id"])
        worker.join(timeout=10)
        assert results and results[0]["access_token"]
    finally:
        psc_sandbox.reset()


def test_lifetimes_hook_and_reset(psc_sandbox: PscHandle) -> None:
    try:
        psc_sandbox.set_lifetimes(access_token=2, refresh_token=5)
        t = psc_sandbox.ciba_login()
        assert t["expires_in"] == 2 and t["refresh_expires_in"] == 5
    finally:
        psc_sandbox.reset()
    t = psc_sandbox.ciba_login()
    assert t["expires_in"] == 120 and t["refresh_expires_in"] == 1800


def test_per_identity_policy(psc_sandbox: PscHandle) -> None:
    other = psc_sandbox.identities[5]["national_id"]
    psc_sandbox.set_ecps("deny", national_id=other)
    try:
        try:
            psc_sandbox.ciba_login(national_id=other)
        except AssertionError as exc:
            assert "access_denied" in str(exc)
        else:
            raise AssertionError("la politique deny n'a pas été appliquée")
        assert psc_sandbox.ciba_login()["access_token"]  # others unaffected
    finally:
        psc_sandbox.reset()
