"""CLI and `confiance up` integration: config, admin commands, a real `serve` subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from confiance.core.jose import verify_jwt
from confiance.core.launch import DEFAULT_PORTS, LaunchContext
from confiance.guichet.cli import app
from confiance.guichet.launch import prepare
from confiance.pki import IssuedCertificate, Pki

runner = CliRunner()


def test_admin_commands(tmp_path: Path) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    r = runner.invoke(
        app,
        ["admin", "create-user", "-c", str(cfg), "--email", "a@ans.example", "--name", "A", "--role", "administrateur"],
    )
    assert r.exit_code == 0, r.output
    assert "cgt_" in r.output
    r = runner.invoke(
        app, ["admin", "create-user", "-c", str(cfg), "--email", "b@ans.example", "--name", "B", "--role", "pirate"]
    )
    assert r.exit_code == 2 and "rôle inconnu" in r.output
    r = runner.invoke(
        app,
        [
            "admin",
            "create-user",
            "-c",
            str(cfg),
            "--email",
            "m@x.example",
            "--name",
            "M",
            "--role",
            "mandataire",
            "--organisation",
            "X",
            "--siren",
            "123456789",
        ],
    )
    assert r.exit_code == 1 and "SIREN invalide" in r.output
    assert runner.invoke(app, ["demo", "-c", str(cfg)]).exit_code == 0
    r = runner.invoke(app, ["admin", "verify-audit", "-c", str(cfg)])
    assert r.exit_code == 0 and "intègre" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text('data_dirr = "x"\n')
    r = runner.invoke(app, ["migrate", "-c", str(bad)])
    assert r.exit_code == 2 and "data_dirr" in r.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_launch_prepare_and_serve(tmp_path: Path, pki: Pki, server_cert: IssuedCertificate) -> None:
    ports = {**DEFAULT_PORTS, "guichet": _free_port()}
    ctx = LaunchContext(state_dir=tmp_path, pki=pki, server_cert=server_cert, ports=ports)
    launch = prepare(ctx)
    svc = ctx.endpoints["services"]["guichet"]
    assert (
        svc["url"] == f"http://127.0.0.1:{ports['guichet']}"
        and svc["trust_list"].endswith("/trust-list")
        and svc["jwks"].endswith("/trust-list/jwks")
    )
    proc = subprocess.Popen(
        launch.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ}, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                if httpx.get(launch.health_url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "guichet did not start"
            time.sleep(0.2)
        token = httpx.get(svc["trust_list"]).text
        claims = verify_jwt(token, httpx.get(svc["jwks"]).json(), issuer=svc["url"])
        assert claims["habilitations"] == []  # demo data has no granted habilitation yet
        assert httpx.get(svc["url"] + "/openapi.json").json()["info"]["title"] == "Guichet EDC PSC"
        login = httpx.post(
            svc["url"] + "/api/auth/token", json={"email": "admin@ans.demo", "password": "demo-guichet-2025"}
        )
        assert login.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert sys.executable in launch.argv[0] or launch.argv[0] == sys.executable
