"""`confiance api log verify`: a broken, unreadable or missing log is reported, never a traceback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from confiance.api.audit import AccessLog
from confiance.api.cli import app as api_cli


def _log(tmp_path: Path, n: int = 3) -> Path:
    path = tmp_path / "access.jsonl"
    log = AccessLog(path)
    for i in range(n):
        log.record(route="/insi/rechercher", status=200, i=i)
    log.flush()
    return path


def test_an_unreadable_line_breaks_the_chain_where_it_is(tmp_path: Path) -> None:
    path = _log(tmp_path)
    assert AccessLog.verify(path).ok
    with path.open("a") as fh:
        fh.write('{"record": {"i": 9}, "prev": \n')
    check = AccessLog.verify(path)
    assert not check.ok and check.first_bad == 3 and "illisible" in (check.reason or "")
    r = CliRunner().invoke(api_cli, ["log", "verify", str(path)])
    assert r.exit_code == 1 and "ligne 4" in r.output and "illisible" in r.output


def test_an_edited_line_before_a_broken_one_is_reported_first(tmp_path: Path) -> None:
    path = _log(tmp_path)
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"status":200', '"status":500')
    path.write_text("\n".join([*lines, "pas du json"]) + "\n")
    check = AccessLog.verify(path)
    assert not check.ok and check.first_bad == 1 and "modifiée" in (check.reason or "")


def test_missing_log_is_one_line_exit_2(tmp_path: Path) -> None:
    r = CliRunner().invoke(api_cli, ["log", "verify", str(tmp_path / "absent.jsonl")])
    assert r.exit_code == 2 and "journal illisible" in r.stderr and "Traceback" not in r.output


def test_a_log_ending_in_a_broken_line_is_refused_at_start(tmp_path: Path) -> None:
    import pytest

    from confiance.core.config import ConfigError

    path = _log(tmp_path)
    with path.open("a") as fh:
        fh.write('{"record": {"i"\n')
    with pytest.raises(ConfigError, match="dernière ligne"):
        AccessLog(path)
