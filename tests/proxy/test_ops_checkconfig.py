"""`confiance proxy check-config`, `serve` start-up failures and `clients add`: every problem
in one pass, each naming its key and file or host:port, on stderr, without a traceback."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from confiance.cli import app as cli_app
from confiance.core.config import dump_toml
from confiance.pki import Pki
from confiance.proxy import checkconfig
from confiance.proxy.config import load

runner = CliRunner()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pki = Pki.init(tmp_path_factory.mktemp("pki-ops"))
    return {
        "pki": pki,
        "server": pki.issue_server("ops-server"),
        "lps": pki.issue_client("31234567890001", "lps-ops", name="ops-lps"),
        "other": pki.issue_client("31234567890002", "lps-other", name="ops-other"),
    }


def _config(tmp_path: Path, certs: dict[str, Any], **over: Any) -> Path:
    data: dict[str, Any] = {
        "server": {"port": 0, "cert": certs["server"].cert_path, "key": certs["server"].key_path},
        "outbound": {"ca_bundle": str(certs["pki"].ca_bundle)},
        "psc": {"discovery_url": "https://127.0.0.1:9/.well-known/openid-configuration"},
        "lps_clients": [
            {"client_id": "lps", "auth": "mtls", "cert": certs["lps"].cert_path, "key": certs["lps"].key_path}
        ],
        "traces": {"url": f"sqlite:///{tmp_path}/traces.db"},
    }
    for section, values in over.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    path = tmp_path / "proxy.toml"
    path.write_text(dump_toml(data))
    return path


def _witness(tmp_path: Path) -> dict[str, str]:
    """What a PostgreSQL trace store requires besides its URL (checkpoints, issue 16)."""
    return {"checkpoint_key": str(tmp_path / "checkpoint-key.json"), "witness": str(tmp_path / "witness.jsonl")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_valid_config_passes(tmp_path: Path, certs: dict[str, Any]) -> None:
    r = runner.invoke(cli_app, ["proxy", "check-config", "-c", str(_config(tmp_path, certs))])
    assert r.exit_code == 0, r.output
    assert "configuration valide" in r.stdout


def test_every_problem_in_one_pass(tmp_path: Path, certs: dict[str, Any]) -> None:
    closed = _free_port()
    path = _config(
        tmp_path,
        certs,
        server={"key": certs["lps"].key_path},  # not the server certificate's key
        lps_clients=[
            # mismatched pair: today accepted, then /connect answers 500
            {"client_id": "a", "auth": "mtls", "cert": certs["lps"].cert_path, "key": certs["other"].key_path},
            # a server certificate is not an ORG AUTH_CLI certificate
            {"client_id": "b", "auth": "mtls", "cert": certs["server"].cert_path, "key": certs["server"].key_path},
            {"client_id": "c", "auth": "mtls", "cert": str(tmp_path / "absent.pem"), "key": str(tmp_path / "k.pem")},
        ],
        traces={"url": f"postgresql://127.0.0.1:{closed}/test", **_witness(tmp_path)},
    )
    r = runner.invoke(cli_app, ["proxy", "check-config", "-c", str(path)])
    assert r.exit_code == 2
    err = r.stderr
    assert "Traceback" not in err
    assert f"server.key: la clé {certs['lps'].key_path} ne correspond pas au certificat" in err
    assert f"lps_clients.0.key: la clé {certs['other'].key_path} ne correspond pas" in err
    assert "lps_clients.1.cert" in err and "clientAuth" in err
    assert f"lps_clients.2.cert: fichier introuvable {tmp_path / 'absent.pem'}" in err
    assert f"lps_clients.2.key: fichier introuvable {tmp_path / 'k.pem'}" in err
    assert f"traces.url: base injoignable à postgresql://127.0.0.1:{closed}/test" in err
    assert "7 erreur(s)" in err, err


def test_dates_and_chain_checked_at_an_injected_time(tmp_path: Path, certs: dict[str, Any]) -> None:
    cfg = load(_config(tmp_path, certs), check=False)
    not_after = dt.datetime.fromisoformat(certs["lps"].not_after)
    soon = checkconfig.check(cfg, now=lambda: not_after - dt.timedelta(days=3), stores=False)
    assert any(p.severity == "warning" and p.key == "lps_clients.0.cert" and "expire" in p.message for p in soon)
    later = checkconfig.check(cfg, now=lambda: not_after + dt.timedelta(days=1), stores=False)
    assert any(p.severity == "error" and p.key == "lps_clients.0.cert" and "expiré" in p.message for p in later)
    # a chain the bundle does not vouch for
    foreign = Pki.init(tmp_path / "foreign").issue_client("31234567890003", "lps-x", name="x")
    cfg.lps_clients[0].cert, cfg.lps_clients[0].key = Path(foreign.cert_path), Path(foreign.key_path)
    now = checkconfig.check(cfg, stores=False)
    assert [p.key for p in checkconfig.errors(now)] == ["lps_clients.0.cert"]
    assert "chaîne non vérifiée" in now[0].message


def _serve(path: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "confiance", "proxy", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_serve_on_a_busy_port_is_one_screen(tmp_path: Path, certs: dict[str, Any]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = _serve(_config(tmp_path, certs, server={"port": port}))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) <= 3, r.stderr
    assert f"127.0.0.1:{port}" in r.stderr and "déjà utilisé" in r.stderr


def test_serve_with_postgresql_on_a_closed_port_is_one_screen(tmp_path: Path, certs: dict[str, Any]) -> None:
    closed = _free_port()
    r = _serve(
        _config(tmp_path, certs, traces={"url": f"postgresql://u:secret@127.0.0.1:{closed}/test", **_witness(tmp_path)})
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) <= 3, r.stderr
    assert f"traces.url: base injoignable à postgresql://127.0.0.1:{closed}/test" in r.stderr
    assert "secret" not in r.stderr


def test_clients_add_refuses_a_mismatched_key(tmp_path: Path, certs: dict[str, Any]) -> None:
    path = _config(tmp_path, certs, lps_clients_file=str(tmp_path / "clients.json"))
    args = ["proxy", "clients", "add", "-c", str(path), "--client-id", "new"]
    r = runner.invoke(cli_app, [*args, "--cert", certs["lps"].cert_path, "--key", certs["other"].key_path])
    assert r.exit_code == 2 and "ne correspond pas au certificat" in r.stderr
    assert not (tmp_path / "clients.json").exists()
    r = runner.invoke(cli_app, [*args, "--cert", certs["other"].cert_path, "--key", certs["other"].key_path])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "clients.json").stat().st_mode & 0o777 == 0o600


def test_session_encryption_key_checked_at_load_naming_how_to_make_one() -> None:
    """deploy/proxy.example.toml's placeholder (or any string that is not base64url of 32
    bytes) stops the configuration from loading, with the command that makes a key."""
    import base64
    import secrets
    import tomllib

    from pydantic import ValidationError

    from confiance.proxy.config import ProxyConfig

    example = tomllib.loads((Path(__file__).parents[2] / "deploy" / "proxy.example.toml").read_text())
    good = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    for bad in (example["sessions"]["encryption_key"], good[:-2], good[:42] + "*", good.rstrip("=")[:-1] + "!"):
        with pytest.raises(ValidationError) as err:
            ProxyConfig.model_validate({**example, "sessions": {**example["sessions"], "encryption_key": bad}})
        assert "sessions.encryption_key" in str(err.value) and "secrets.token_bytes(32)" in str(err.value)
    for key in (good, good.rstrip("=")):
        cfg = ProxyConfig.model_validate({**example, "sessions": {**example["sessions"], "encryption_key": key}})
        assert cfg.sessions.encryption_key == key


def test_checkpoint_key_and_witness_checked(tmp_path: Path, certs: dict[str, Any]) -> None:
    """What the trace chain's checkpoints need (issue 16): a key that loads, kept owner-only,
    a witness that can be appended to and whose lines verify with that key, a witness
    command that exists. check-config verifies the witness line by line; serve does not
    (it grows by a line a minute) but still refuses what it could not create."""
    import os

    from confiance.core.jose import KeyStore
    from confiance.proxy.checkpoint import ALG, sign
    from confiance.proxy.traces import ChainHead

    key, witness = tmp_path / "cp" / "key.json", tmp_path / "cp" / "witness.jsonl"
    paths = {"checkpoint_key": str(key), "witness": str(witness)}
    cfg = load(_config(tmp_path, certs, traces=paths), check=False)
    assert checkconfig.check_checkpoints(cfg, verify_witness=True) == []  # both created at first start

    keys = KeyStore(key, algs=(ALG,))
    witness.write_text(sign(keys, ChainHead(1, "ab" * 32, 3), 1_800_000_000.0) + "\n")
    assert checkconfig.check_checkpoints(cfg, verify_witness=True) == []
    r = runner.invoke(
        cli_app, ["proxy", "check-config", "--offline", "-c", str(_config(tmp_path, certs, traces=paths))]
    )
    assert r.exit_code == 0, r.output

    # a witness line signed by another key (or edited): found by check-config only
    other = KeyStore(tmp_path / "other.json", algs=(ALG,))
    with witness.open("a") as fh:
        fh.write(sign(other, ChainHead(2, "cd" * 32, 5), 1_800_000_060.0) + "\n")
    found = checkconfig.check_checkpoints(cfg, verify_witness=True)
    assert [p.key for p in found] == ["traces.witness"] and "ligne 2" in found[0].message
    assert checkconfig.check_checkpoints(cfg) == []
    r = runner.invoke(
        cli_app, ["proxy", "check-config", "--offline", "-c", str(_config(tmp_path, certs, traces=paths))]
    )
    assert r.exit_code == 2 and "traces.witness" in r.stderr and "Traceback" not in r.stderr

    # a key readable by others is a warning; an unreadable key file an error
    witness.unlink()
    os.chmod(key, 0o644)
    found = checkconfig.check_checkpoints(cfg, verify_witness=True)
    assert [(p.key, p.severity) for p in found] == [("traces.checkpoint_key", "warning")] and "chmod 600" in str(
        found[0]
    )
    key.write_text("{not json")
    os.chmod(key, 0o600)
    found = checkconfig.check_checkpoints(cfg, verify_witness=True)
    assert [(p.key, p.severity) for p in found] == [("traces.checkpoint_key", "error")]

    # nowhere to create them, and a witness command that does not exist
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    cfg = load(
        _config(
            tmp_path,
            certs,
            traces={
                "checkpoint_key": str(blocked / "key.json"),
                "witness": str(blocked / "w.jsonl"),
                "witness_command": ["no-such-command-for-confiance", "x"],
            },
        ),
        check=False,
    )
    keys_found = sorted(p.key for p in checkconfig.check(cfg, stores=False))
    assert keys_found == ["traces.checkpoint_key", "traces.witness", "traces.witness_command"]
