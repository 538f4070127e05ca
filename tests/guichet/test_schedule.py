"""The periodic job (issue 19 §6): expiry at the end of validity, notices at 90 and 30 days,
renewal reminders while no renewal is filed; run through the API, the CLI (`tick --at`) and
the in-process schedule. Time is moved on the service's clock, never waited for."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from confiance.guichet.cli import app
from confiance.guichet.domain.schedule import EXPIRY_NOTICE_DAYS, RENEWAL_REMINDER_DAYS, due_thresholds
from confiance.guichet.services import GuichetService

from .helpers import Client, Guichet


def test_due_thresholds_are_the_ones_reached() -> None:
    assert due_thresholds(120, EXPIRY_NOTICE_DAYS) == []
    assert due_thresholds(90, EXPIRY_NOTICE_DAYS) == [90]
    assert due_thresholds(45, EXPIRY_NOTICE_DAYS) == [90]
    assert due_thresholds(20, EXPIRY_NOTICE_DAYS) == [90, 30]  # a late first run still sends both, once
    assert due_thresholds(59, RENEWAL_REMINDER_DAYS) == [60] and due_thresholds(3, RENEWAL_REMINDER_DAYS) == [60, 14]


def _kinds(co: Client, hid: int) -> list[str]:
    return sorted(n["kind"] for n in co.ok(co.get("/api/notifications")) if f"n° {hid} " in n["subject"])


def _fresh(svc: GuichetService, co: Client, email: str) -> None:
    """Tokens expire (token_ttl_days): after moving the clock years ahead, sign in again."""
    co.token = svc.issue_token_for(email).access_token


def test_tick_through_the_api_with_the_service_clock(guichet: Guichet, guichet_service: GuichetService) -> None:
    ed = guichet.company("Editeur Proxy")
    proxy = guichet.solution(ed, "ProxyP", "proxy")
    elp = guichet.habilitate(ed, "ELP", proxy)
    until = dt.datetime.fromisoformat(elp["valid_until"])
    granted = dt.datetime.fromisoformat(elp["granted_at"])
    assert until.year - granted.year == 3  # the validity the job enforces

    def at(days_before: int) -> dict[str, Any]:
        guichet_service.clock = lambda: until - dt.timedelta(days=days_before)
        _fresh(guichet_service, guichet.admin, "admin@ans.example")
        _fresh(guichet_service, ed, "mandataire@editeur-proxy.example")
        out: dict[str, Any] = guichet.admin.ok(guichet.admin.post("/api/admin/tick"))
        return out

    assert at(100) == {"expired": [], "flagged_at_risk": [], "notifications": 0, "reminders": 0}
    assert at(80)["notifications"] == 1 and _kinds(ed, elp["id"]) == ["expiration_90j"]
    assert at(80)["notifications"] == 0  # idempotent
    assert at(50)["reminders"] == 1  # no renewal filed: reminded
    assert at(20)["notifications"] == 1  # the 30-day notice
    # a renewal is filed: no further reminder
    renewal = ed.ok(guichet.candidature(ed, "ELP", proxy, version="3.0", renews_habilitation_id=elp["id"]), 201)
    assert at(10)["reminders"] == 0
    ed.ok(ed.post(f"/api/candidatures/{renewal['id']}/abandon"))
    assert at(9)["reminders"] == 1  # abandoned: the 14-day reminder comes
    out = at(-1)
    assert out["expired"] == [elp["id"]]
    assert guichet.admin.ok(guichet.admin.get(f"/api/habilitations/{elp['id']}"))["status"] == "expiree"
    assert _kinds(ed, elp["id"]) == [
        "expiration",
        "expiration_30j",
        "expiration_90j",
        "rappel_renouvellement",
        "rappel_renouvellement",
    ]
    # only administrators run it
    assert ed.post("/api/admin/tick").status_code == 403


def test_cli_tick_at_a_date(tmp_path: Path) -> None:
    from confiance.guichet import schemas as sc
    from confiance.guichet.cli import _service
    from confiance.guichet.db import Habilitation
    from confiance.guichet.domain.model import OrgRole, Role, SolutionKind

    runner = CliRunner()
    cfg = tmp_path / "g.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    svc = _service(cfg)
    org = sc.OrganisationIn(name="Horloge", country="FR", siren="732829320")
    acc = svc.bootstrap_account("m@h.example", "M", None, org=org, org_role=OrgRole.MANDATAIRE)
    me = svc.principal_for(acc.id)
    assert me is not None
    sol = svc.create_solution(
        me, sc.SolutionIn(name="PX", kind=SolutionKind.PROXY, components=[sc.ComponentIn(kind="PROXY", name="px")])
    )
    cand = svc.create_candidature(
        me, sc.CandidatureIn(role=Role.ELP, solution_id=sol.id, software_name="PX", software_version="1")
    )
    granted = dt.datetime(2030, 1, 15, tzinfo=dt.UTC)  # the job only compares dates it is given
    until = granted.replace(year=2033)
    with svc.db.transaction() as s:
        s.add(
            Habilitation(
                candidature_id=cand.id,
                organisation_id=me.organisation_id,
                role="ELP",
                environment="BAS",
                solution_id=sol.id,
                granted_at=granted,
                valid_until=until,
                status="valide",
                relies_on=[],
            )
        )
    svc.db.dispose()

    def tick(at: str) -> str:
        r = runner.invoke(app, ["tick", "-c", str(cfg), "--at", at])
        assert r.exit_code == 0, r.output
        return r.output

    assert "avis : 0" in tick("2032-06-01")
    out = tick((until - dt.timedelta(days=45)).date().isoformat())
    assert "expirées : []" in out and "avis : 1" in out and "rappels de renouvellement : 1" in out
    assert "avis : 0" in tick((until - dt.timedelta(days=44)).date().isoformat())  # deduplicated
    out = tick("2033-01-16")
    assert "expirées : [1]" in out, out
    r = runner.invoke(app, ["tick", "-c", str(cfg), "--at", "demain"])
    assert r.exit_code == 2 and "date invalide" in r.output


def test_schedule_runs_the_job_inside_the_service(guichet: Guichet, guichet_service: GuichetService) -> None:
    ed = guichet.company("Editeur Proxy")
    elp = guichet.habilitate(ed, "ELP", guichet.solution(ed, "ProxyP", "proxy"))
    until = dt.datetime.fromisoformat(elp["valid_until"])
    guichet_service.clock = lambda: until + dt.timedelta(days=1)
    _fresh(guichet_service, guichet.admin, "admin@ans.example")
    schedule = guichet_service.start_schedule(0.05)
    try:
        assert schedule.ran.wait(30)  # an event, not a duration: the first run has happened
    finally:
        schedule.stop()
    assert guichet.admin.ok(guichet.admin.get(f"/api/habilitations/{elp['id']}"))["status"] == "expiree"
    assert schedule.runs >= 1


def test_healthz_and_readyz(guichet: Guichet, guichet_service: GuichetService) -> None:
    live = guichet.http.get("/healthz")
    assert live.status_code == 200 and live.json() == {"status": "ok", "component": "guichet"}
    ready = guichet.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {
        "database": {"ok": True, "detail": ""},
        "trust_list_key": {"ok": True, "detail": ""},
    }
    guichet_service.db.engine.dispose()  # the pool is rebuilt on demand: still ready
    assert guichet.http.get("/readyz").status_code == 200
    original = guichet_service.keys.jwks
    guichet_service.keys.jwks = lambda: {"keys": []}  # type: ignore[method-assign]
    try:
        r = guichet.http.get("/readyz")
        assert r.status_code == 503 and r.json()["checks"]["trust_list_key"]["ok"] is False
    finally:
        guichet_service.keys.jwks = original  # type: ignore[method-assign]
