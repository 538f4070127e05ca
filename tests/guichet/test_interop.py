"""End-to-end contract with the conformity tool: its signed report is what the guichet accepts.

Assembles two components (allowed in tests): the report is built and signed by
``confiance.conformity.report`` exactly as ``confiance conformity run`` does, and verified by
the guichet with the JWKS file the tool publishes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from confiance.conformity.model import CheckResult, Status
from confiance.conformity.report import build_report, key_paths, load_keys, sign_report
from confiance.guichet.domain import conformity
from confiance.guichet.services import JwksFileReportVerifier


def _signed(tmp_path: Path, statuses: list[Status], version: str | None = "2.1.0") -> tuple[str, Path]:
    keys = load_keys(tmp_path)
    checks = [CheckResult(f"C{i}", f"contrôle {i}", "TOK-02", st) for i, st in enumerate(statuses)]
    report = build_report(checks, proxy_url="https://127.0.0.1:8443", proxy_version=version)
    _payload, jws = sign_report(report, keys)
    return jws, key_paths(tmp_path)[1]


def _verdict(jws: str, jwks: Path, version: str = "2.1.0") -> conformity.ConformityVerdict:
    payload = JwksFileReportVerifier(jwks).verify(jws)
    return conformity.check_report(
        conformity.parse_payload(payload), proxy_version=version, today=dt.datetime.now(dt.UTC).date(), max_age_days=90
    )


def test_tool_report_accepted_when_every_check_passes(tmp_path: Path) -> None:
    jws, jwks = _signed(tmp_path, [Status.PASS, Status.PASS, Status.NOT_APPLICABLE])
    v = _verdict(jws, jwks)
    assert v.accepted, v.problems


def test_tool_report_refused_on_failure_unverifiable_or_other_version(tmp_path: Path) -> None:
    jws, jwks = _signed(tmp_path, [Status.PASS, Status.FAIL])
    assert not _verdict(jws, jwks).accepted
    jws, jwks = _signed(tmp_path, [Status.PASS, Status.UNVERIFIABLE])
    assert not _verdict(jws, jwks).accepted
    jws, jwks = _signed(tmp_path, [Status.PASS])
    assert not _verdict(jws, jwks, version="3.0").accepted
