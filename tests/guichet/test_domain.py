"""Pure domain rules: identifiers, state machines, pentest/conformity checks, référentiel, parcours, dependencies."""

from __future__ import annotations

import datetime as dt
from importlib import resources

import pytest

from confiance.guichet.domain import conformity, dependencies, pentest
from confiance.guichet.domain import workflow as wf
from confiance.guichet.domain.errors import DomainError, IllegalTransition
from confiance.guichet.domain.identifiers import luhn_ok, validate_registration, validate_siren, validate_siret
from confiance.guichet.domain.model import ComponentKind, EvidenceKind, HabilitationStatus, Level, Role, needs_cnda
from confiance.guichet.domain.parcours import Parcours, StepStatus, checklist, require_reachable
from confiance.guichet.domain.referentiel import Catalogue, diff_for

PARCOURS = Parcours.from_yaml(resources.files("confiance.guichet").joinpath("data", "parcours.yaml").read_text())
CATALOGUE = Catalogue.from_yaml(resources.files("confiance.guichet").joinpath("data", "referentiel.yaml").read_text())
TODAY = dt.date(2026, 6, 1)


# ---------------------------------------------------------------- identifiers
def test_siren_luhn() -> None:
    assert validate_siren("732 829 320") == "732829320"
    assert luhn_ok("732829320")
    for bad in ("732829321", "73282932", "abcdefghi", "７３２８２９３２０"):
        with pytest.raises(DomainError):
            validate_siren(bad)


def test_siret_luhn_and_la_poste() -> None:
    assert validate_siret("73282932000074") == "73282932000074"
    with pytest.raises(DomainError, match="clé de contrôle"):
        validate_siret("73282932000075")
    assert validate_siret("35600000000010")  # La Poste: digit sum multiple of 5
    with pytest.raises(DomainError):
        validate_siret("35600000000011")


def test_registration_rules() -> None:
    validate_registration("FR", "732829320", "73282932000074", None)
    validate_registration("DE", None, None, "HRB 12345")
    with pytest.raises(DomainError, match="Union européenne"):
        validate_registration("US", None, None, "123")
    with pytest.raises(DomainError, match="SIREN"):
        validate_registration("FR", None, None, None)
    with pytest.raises(DomainError, match="n'appartient pas"):
        validate_registration("FR", "732829320", "35600000000010", None)
    with pytest.raises(DomainError, match="immatriculation"):
        validate_registration("IT", None, None, " ")


# ---------------------------------------------------------------- state machines
def test_candidature_happy_path_and_illegal_transitions() -> None:
    s: object = wf.CandidatureStatus.DRAFT
    for name, actor in [
        ("soumettre_formulaire", wf.Actor.CANDIDATE),
        ("valider_formulaire", wf.Actor.VERIFIER),
        ("transmettre_college", wf.Actor.SYSTEM),
        ("accorder", wf.Actor.COLLEGE),
    ]:
        s = wf.fire(wf.CANDIDATURE_TRANSITIONS, name, s, actor)  # type: ignore[arg-type]
    assert s is wf.CandidatureStatus.GRANTED
    with pytest.raises(IllegalTransition, match="impossible depuis"):
        wf.fire(wf.CANDIDATURE_TRANSITIONS, "accorder", wf.CandidatureStatus.DRAFT, wf.Actor.COLLEGE)
    with pytest.raises(IllegalTransition, match="réservée"):
        wf.fire(
            wf.CANDIDATURE_TRANSITIONS, "valider_formulaire", wf.CandidatureStatus.FORM_SUBMITTED, wf.Actor.CANDIDATE
        )
    with pytest.raises(IllegalTransition, match="motif"):
        wf.fire(wf.CANDIDATURE_TRANSITIONS, "refuser", wf.CandidatureStatus.COLLEGE, wf.Actor.COLLEGE, "  ")
    with pytest.raises(IllegalTransition):
        wf.fire(wf.CANDIDATURE_TRANSITIONS, "abandonner", wf.CandidatureStatus.GRANTED, wf.Actor.CANDIDATE)


def test_chapter_review_cycle() -> None:
    c = wf.ChapterStatus
    assert wf.fire(wf.CHAPTER_TRANSITIONS, "soumettre_chapitre", c.OPEN, wf.Actor.CANDIDATE) is c.SUBMITTED
    assert (
        wf.fire(wf.CHAPTER_TRANSITIONS, "demander_complement", c.SUBMITTED, wf.Actor.VERIFIER, "pièce illisible")
        is c.COMPLEMENT
    )
    assert wf.fire(wf.CHAPTER_TRANSITIONS, "soumettre_chapitre", c.COMPLEMENT, wf.Actor.CANDIDATE) is c.SUBMITTED
    with pytest.raises(IllegalTransition):  # a chapter is reviewed only once submitted
        wf.fire(wf.CHAPTER_TRANSITIONS, "accepter_chapitre", c.OPEN, wf.Actor.VERIFIER)
    with pytest.raises(IllegalTransition):
        wf.fire(wf.CHAPTER_TRANSITIONS, "rejeter_chapitre", c.SUBMITTED, wf.Actor.VERIFIER)  # no reason


# ---------------------------------------------------------------- pentest
def _report(
    medium: int = 0,
    high: int = 0,
    *,
    age: int = 10,
    version: str = "1.0",
    result: str | None = None,
    provider: str = "PASSI A",
) -> pentest.PentestReport:
    crit = tuple(pentest.Criterion(f"m{i}", pentest.Severity.MEDIUM, pentest.CriterionResult.KO) for i in range(medium))
    crit += tuple(pentest.Criterion(f"h{i}", pentest.Severity.HIGH, pentest.CriterionResult.KO) for i in range(high))
    crit += (pentest.Criterion("ok", pentest.Severity.LOW, pentest.CriterionResult.OK),)
    res = result or pentest.RESULT_ELIGIBLE
    return pentest.PentestReport(
        provider,
        "Auditrice",
        TODAY - dt.timedelta(days=age),
        "App",
        version,
        pentest.AppType.WEB,
        crit,
        pentest.Summary("App", version, "", pentest.AppType.WEB, res),
    )


def _check(report: pentest.PentestReport, role: Role = Role.ELU) -> pentest.PentestVerdict:
    return pentest.check_report(
        report,
        role=role,
        software_name="App",
        software_version="1.0",
        passi_providers={"PASSI A"},
        rules=PARCOURS.pentest,
        today=TODAY,
    )


@pytest.mark.parametrize(
    ("role", "medium", "high", "ok"),
    [
        (Role.ELU, 9, 0, True),
        (Role.ELU, 10, 0, False),
        (Role.ELU, 0, 1, False),
        (Role.ELP, 1, 0, False),
        (Role.ELP, 0, 0, True),
        (Role.OSP, 1, 0, False),
    ],
)
def test_pentest_eligibility_thresholds(role: Role, medium: int, high: int, ok: bool) -> None:
    eligible, _ = pentest.eligibility(role, _report(medium, high).criteria, PARCOURS.pentest)
    assert eligible is ok


def test_pentest_age_boundary_and_future() -> None:
    assert _check(_report(age=365)).accepted
    v = _check(_report(age=366))
    assert not v.accepted and any("366 jours" in p for p in v.problems)
    assert not _check(_report(age=-1)).accepted


def test_pentest_other_rules() -> None:
    assert any("PASSI" in p for p in _check(_report(provider="Inconnu")).problems)
    assert any("version" in p for p in _check(_report(version="0.9")).problems)
    # the first page must say what the criteria say
    v = _check(_report(medium=10, result=pentest.RESULT_ELIGIBLE))
    assert any("contredit" in p for p in v.problems)
    v = _check(_report(result=pentest.RESULT_NOT_ELIGIBLE))
    assert not v.accepted and any("contredit" in p for p in v.problems)


# ---------------------------------------------------------------- conformity
def _conf(**over: object) -> dict:
    data = {
        "tool": {"name": "t", "version": "1"},
        "proxy": {"url": "https://p", "version": "2.0"},
        "date": "2026-05-30T10:00:00Z",
        "checks": [
            {"id": "a", "name": "a", "requirement": "r", "passed": True, "evidence": "e"},
            {"id": "b", "passed": False, "status": "not_applicable"},
        ],
        "summary": {"passed": 1, "failed": 0},
    }
    data.update(over)
    return data


def test_conformity_content_checks() -> None:
    assert conformity.check_report(_conf(), proxy_version="2.0", today=TODAY, max_age_days=90).accepted
    v = conformity.check_report(_conf(), proxy_version="2.1", today=TODAY, max_age_days=90)
    assert not v.accepted and "version" in v.problems[0]
    failing = _conf(checks=[{"id": "a", "passed": False}], summary={"passed": 0, "failed": 1})
    assert not conformity.check_report(failing, proxy_version="2.0", today=TODAY, max_age_days=90).accepted
    old = _conf(date="2025-01-01T00:00:00Z")
    assert not conformity.check_report(old, proxy_version="2.0", today=TODAY, max_age_days=90).accepted
    lying = _conf(summary={"passed": 5, "failed": 0})
    assert not conformity.check_report(lying, proxy_version="2.0", today=TODAY, max_age_days=90).accepted
    with pytest.raises(DomainError):
        conformity.check_report(_conf(proxy={"url": "x"}), proxy_version="2.0", today=TODAY, max_age_days=90)


# ---------------------------------------------------------------- référentiel
def test_chapters_follow_profile_level_and_cnda() -> None:
    elp = {c.id for c, _ in CATALOGUE.chapters_for(Role.ELP, Level.EDC, needs_cnda=False)}
    assert {"test_intrusion", "conformite", "certificats"} <= elp and "homologation" not in elp
    assert "homologation" in {c.id for c, _ in CATALOGUE.chapters_for(Role.ELP, Level.EDC, needs_cnda=True)}
    communaute = CATALOGUE.applicable(Role.ELU, Level.COMMUNAUTE, needs_cnda=True)
    assert [r.id for r in communaute] == ["TLS-01"]
    osu = {c.id for c, _ in CATALOGUE.chapters_for(Role.OSU, Level.EDC, needs_cnda=True)}
    assert "test_intrusion" not in osu and "exploitation" in osu
    assert needs_cnda([ComponentKind.PROXY, ComponentKind.EAI]) and not needs_cnda([ComponentKind.PROXY])


def test_referentiel_diff_for_a_profile() -> None:
    data = CATALOGUE.as_dict()
    data["version"] = "2026.1"
    data["requirements"] = [r for r in data["requirements"] if r["id"] != "TRC-01"]
    data["requirements"][0]["text"] = "TLS 1.3 recommandé, 1.2 minimum."
    data["requirements"].append(
        {
            "id": "ELP-NEW",
            "chapter": "jetons",
            "text": "nouvelle",
            "actors": ["ELP"],
            "level": "edc",
            "evidence": ["document"],
        }
    )
    new = Catalogue.parse(data)
    d = diff_for(CATALOGUE, new, Role.ELP, Level.EDC, False)
    assert (
        [r.id for r in d.added] == ["ELP-NEW"]
        and [r.id for r in d.removed] == ["TRC-01"]
        and [a.id for a, _ in d.changed] == ["TLS-01"]
    )
    d = diff_for(CATALOGUE, new, Role.ELU, Level.EDC, True)
    assert not d.added and not d.removed  # ELU is not subject to TRC-01 nor ELP-NEW


def test_referentiel_validation() -> None:
    bad = CATALOGUE.as_dict()
    bad["requirements"].append(dict(bad["requirements"][0]))
    with pytest.raises(DomainError, match="double"):
        Catalogue.parse(bad)
    bad = CATALOGUE.as_dict()
    bad["requirements"][0]["actors"] = ["XYZ"]
    with pytest.raises(DomainError):
        Catalogue.parse(bad)
    assert EvidenceKind.PENTEST in CATALOGUE.by_id["PEN-01"].evidence


# ---------------------------------------------------------------- parcours
def test_parcours_steps_by_role() -> None:
    elp = [s.id for s in PARCOURS.steps_for("trust_space", Role.ELP)]
    osu = [s.id for s in PARCOURS.steps_for("trust_space", Role.OSU)]
    elu = [s.id for s in PARCOURS.steps_for("trust_space", Role.ELU)]
    assert "conformity_tool" in elp and "conformity_tool" not in elu
    assert "test_certificate" in elu and "test_certificate" not in osu
    assert "production_connection" in osu and "production_connection" not in elp
    assert [s.id for s in PARCOURS.steps_for("direct", Role.ELU)] == [
        "isc_account",
        "psc_api_access",
        "authenticated_space",
        "production_connection",
    ]


def test_parcours_reachability() -> None:
    items = checklist(PARCOURS, "trust_space", Role.ELU, {"isc_account"})
    assert items[0].status is StepStatus.DONE and items[1].reachable and not items[2].reachable
    with pytest.raises(DomainError, match="pas encore atteinte"):
        require_reachable(PARCOURS, "trust_space", Role.ELU, {"isc_account"}, "test_certificate")
    with pytest.raises(DomainError, match="ne concerne pas"):
        require_reachable(PARCOURS, "trust_space", Role.OSU, set(), "test_certificate")


# ---------------------------------------------------------------- dependencies
def _hab(
    i: int, role: Role, sol: int, relies: tuple[int, ...] = (), status: HabilitationStatus = HabilitationStatus.VALID
) -> dependencies.HabView:
    return dependencies.HabView(i, role, sol, 1, status, dt.datetime(2030, 1, 1, tzinfo=dt.UTC), relies)


def test_dependencies_resolution_and_cascade() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    habs = [
        _hab(1, Role.ELP, 10),
        _hab(2, Role.ELU, 20, (1,)),
        _hab(3, Role.OSP, 10, (1,)),
        _hab(4, Role.OSU, 20, (2, 3)),
    ]
    needs = dependencies.needs_for(Role.OSU, 20, None, 3, PARCOURS.dependencies)
    found, problems = dependencies.resolve(needs, habs, now)
    assert sorted(found) == [2, 3] and not problems
    _, problems = dependencies.resolve(dependencies.needs_for(Role.OSU, 99, None, 3, PARCOURS.dependencies), habs, now)
    assert problems and "ELU" in problems[0]
    with pytest.raises(DomainError):
        dependencies.needs_for(Role.ELU, 20, None, None, PARCOURS.dependencies)
    assert dependencies.dependents_closure([1], habs) == {2, 3, 4}
    assert dependencies.dependents_closure([3], habs) == {4}
    withdrawn = [_hab(1, Role.ELP, 10, status=HabilitationStatus.WITHDRAWN), *habs[1:]]
    by_id = {h.id: h for h in withdrawn}
    assert dependencies.still_at_risk(by_id[4], by_id, now)
    assert not dependencies.still_at_risk(habs[3], {h.id: h for h in habs}, now)


def test_conformity_jwks_file_is_reloaded_on_rotation(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import os

    from confiance.core.jose import KeyStore
    from confiance.guichet.services import JwksFileReportVerifier

    tool = KeyStore(None, algs=("ES256",))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(tool.jwks()))
    verifier = JwksFileReportVerifier(path)
    assert verifier.verify(tool.sign_bytes(b"{}", alg="ES256")) == b"{}"
    rotated = KeyStore(None, algs=("ES256",))
    token = rotated.sign_bytes(b"{}", alg="ES256")
    with pytest.raises(DomainError):
        verifier.verify(token)
    path.write_text(json.dumps(rotated.jwks()))
    os.utime(path, (1, 1))  # a different mtime, whatever the clock resolution
    assert verifier.verify(token) == b"{}"
