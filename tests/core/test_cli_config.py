"""The CLI config loader: errors name the bad key, go to stderr, exit 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from confiance.core.cli_config import fail, load_cli_config
from confiance.core.config import ConfigError, StrictModel
from confiance.pki import PkiError


class Section(StrictModel):
    port: int = 1


class Cfg(StrictModel):
    name: str
    section: Section = Section()


def _app(loader: object) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def run(config: Path) -> None:
        cfg = load_cli_config(config, loader)  # type: ignore[call-overload]
        print(f"ok {cfg}")

    return app


def _invoke(loader: object, path: Path) -> tuple[int, str, str]:
    res = CliRunner().invoke(_app(loader), [str(path)])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.stdout, res.stderr


def test_valid_config_is_returned(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('name = "x"\n[section]\nport = 8\n')
    code, out, err = _invoke(Cfg, path)
    assert code == 0 and "name='x'" in out and "port=8" in out and err == ""


def test_bad_key_is_named_on_stderr_with_status_2(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('name = "x"\n[section]\nprot = 8\n')
    code, out, err = _invoke(Cfg, path)
    assert code == 2 and out == ""
    assert "section.prot" in err and str(path) in err
    assert "Traceback" not in err


def test_missing_unreadable_and_broken_files(tmp_path: Path) -> None:
    code, _, err = _invoke(Cfg, tmp_path / "absent.toml")
    assert code == 2 and "introuvable" in err
    code, _, err = _invoke(Cfg, tmp_path)  # a directory
    assert code == 2 and "illisible" in err
    broken = tmp_path / "b.toml"
    broken.write_text("name = [\n")
    code, _, err = _invoke(Cfg, broken)
    assert code == 2 and "TOML invalide" in err


def test_loader_functions_and_their_errors(tmp_path: Path) -> None:
    def raises_config(_p: Path) -> Cfg:
        raise ConfigError("configuration invalide: proxy.port: trop grand")

    def raises_ours(_p: Path) -> Cfg:
        raise PkiError("aucune PKI")

    code, _, err = _invoke(raises_config, tmp_path / "x")
    assert code == 2 and "proxy.port" in err
    code, _, err = _invoke(raises_ours, tmp_path / "x")
    assert code == 2 and "aucune PKI" in err


def test_fail_prints_brackets_verbatim() -> None:
    app = typer.Typer()

    @app.command()
    def run() -> None:
        fail('attendu {"clients": [...]} et non [red]', 1)

    res = CliRunner().invoke(app, [])
    assert res.exit_code == 1
    assert 'attendu {"clients": [...]} et non [red]' in res.stderr
