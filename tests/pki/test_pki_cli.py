"""`confiance pki …` refusals: one line on stderr with an exit status, never a traceback."""

from __future__ import annotations

import stat
from pathlib import Path

from typer.testing import CliRunner

from confiance.cli import app
from confiance.pki import Pki


def _refused(args: list[str], code: int) -> str:
    r = CliRunner().invoke(app, ["pki", *args])
    assert r.exit_code == code, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output and r.stdout == ""
    return r.stderr


def test_missing_pki_garbage_certificate_and_unknown_name(tmp_path: Path) -> None:
    assert "confiance pki init" in _refused(["list", "--dir", str(tmp_path / "none")], 2)
    garbage = tmp_path / "g.pem"
    garbage.write_text("pas un certificat")
    assert f"certificat illisible : {garbage}" in _refused(["show", str(garbage)], 2)
    Pki.init(tmp_path / "pki")
    err = _refused(["export-p12", "inconnu", "--out", str(tmp_path / "x.p12"), "--dir", str(tmp_path / "pki")], 2)
    assert "inconnu" in err


def test_export_p12_is_owner_only_and_an_unwritable_target_is_named(tmp_path: Path) -> None:
    pki = Pki.init(tmp_path / "pki")
    pki.issue_client("3123456789", "p12-cli", name="p12-cli")
    out = tmp_path / "c.p12"
    r = CliRunner().invoke(app, ["pki", "export-p12", "p12-cli", "--out", str(out), "--dir", str(pki.dir)])
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.stat().st_size > 0
    missing_dir = tmp_path / "absent" / "c.p12"
    err = _refused(["export-p12", "p12-cli", "--out", str(missing_dir), "--dir", str(pki.dir)], 1)
    assert f"écriture impossible : {missing_dir}" in err
