"""`confiance up` then `confiance demo`, as a newcomer runs them, on free ports.

One trust space is started for the module: endpoints.json is checked, every service
answers over TLS, the demo story runs twice (fresh names each run) and ends with the
withdrawal refusal, and SIGTERM finally stops every process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from confiance.core.launch import DEFAULT_PORTS

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


@dataclass
class TrustSpace:
    proc: subprocess.Popen[str]
    state: Path
    data: dict


@pytest.fixture(scope="module")
def trust_space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrustSpace]:
    tmp = tmp_path_factory.mktemp("up")
    config = tmp / "up.toml"
    ports = {name: _free_port() for name in DEFAULT_PORTS}
    # a short trust-list refresh so the withdrawal takes effect within seconds
    config.write_text(
        "[ports]\n"
        + "".join(f"{k} = {v}\n" for k, v in ports.items())
        + "[components.psc]\ntrust_list_refresh_seconds = 1\n"
        + "[components.api]\ntrust_list_refresh_seconds = 1\n"
    )
    state = tmp / "state"
    # a relative state dir, run from its parent, exactly as `make up` does with `.confiance`
    proc = subprocess.Popen(
        [sys.executable, "-m", "confiance", "up", "--state-dir", "state", "--config", str(config)],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 120
        endpoints = state / "endpoints.json"
        while not endpoints.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "endpoints.json never written"
            time.sleep(0.2)
        yield TrustSpace(proc, state, json.loads(endpoints.read_text()))
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    """Stop `up` as an operator would (SIGTERM: it stops its services), and whatever it
    left if it did not: a SIGKILL alone would orphan the services it started, still
    listening after the tests (when the SIGTERM test did not run: -k, an earlier failure)."""
    if proc.poll() is not None:
        return
    children = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    for child in children:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_endpoints_json_and_every_service_answers(trust_space: TrustSpace) -> None:
    data = trust_space.data
    for key in ("state_dir", "ca_bundle", "services", "lps_clients", "identities"):
        assert key in data
    assert Path(data["ca_bundle"]).exists()
    for name in ("psc", "api_as", "signsessiondata", "proxy", "guichet"):
        assert data["services"][name]["url"].startswith(("https://127.0.0.1:", "http://127.0.0.1:")), name
    assert {"lps-demo-mtls", "lps-demo-secret"} <= {c["client_id"] for c in data["lps_clients"]}
    assert len(data["identities"]) >= 20
    ca = ssl.create_default_context(cafile=data["ca_bundle"])
    for process in data["processes"]:
        r = httpx.get(process["health"], verify=ca, timeout=5)
        assert r.status_code == 200, (process["name"], r.status_code)


def _demo(trust_space: TrustSpace) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "confiance", "demo", "--state-dir", "state"],
        cwd=trust_space.state.parent,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def test_demo_tells_the_whole_story_twice(trust_space: TrustSpace) -> None:
    for _run in range(2):
        r = _demo(trust_space)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
        out = r.stdout
        assert "habilitation ELP" in out and "accordée" in out
        assert "INSi" in out and "DMP" in out
        assert "chaîne de traces vérifiée" in out
        # the pentest report is a real PDF, signed by the demo PASSI auditor, and the guichet says so
        assert "signé par « Audit Sécurité Démo », signature valide" in out, out[-3000:]
        # the refusal names why: the withdrawn habilitation the LPS relied on
        assert "connexion refusée" in out and "n'est plus valide" in out, out[-3000:]
        assert "toutes les étapes ont réussi" in out


def test_sigterm_stops_every_process(trust_space: TrustSpace) -> None:
    proc = trust_space.proc
    children = _children(proc.pid)
    assert children, "up started no process"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "arrêtés" in out
    for child in children:
        assert not _alive(child), f"child {child} survived SIGTERM"


def test_up_rejects_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[ports]\nnope = 1\n")
    r = subprocess.run(
        [sys.executable, "-m", "confiance", "up", "--state-dir", str(tmp_path / "s"), "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2 and "nope" in r.stderr  # errors go to stderr (issue 17)
    assert "Traceback" not in r.stderr and r.stdout == ""


# ----------------------------------------------------------------------------- refusals, one screen each
def _write(tmp: Path, text: str) -> Path:
    path = tmp / "up.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[components.psc]\ntrust_list_enfroce = 'all'\n", "components.psc.trust_list_enfroce"),
        ("[components.pcs]\nsigning_alg = 'ES256'\n", "components.pcs"),
        ("[components.proxy]\nsession_store = 'mongo'\n", "components.proxy.session_store"),
        ("[components.api]\nrefresh_tokens = 'peut-être'\n", "components.api.refresh_tokens"),
        ("[ports]\npsc = 70000\n", "ports"),
        ("[ports]\nkeycloak = 8080\n", "keycloak"),
        ("hots = '0.0.0.0'\n", "hots"),
        ("[components.psc\n", "TOML invalide"),
    ],
)
def test_up_config_typos_are_errors_naming_the_key(tmp_path: Path, toml: str, named: str) -> None:
    from typer.testing import CliRunner

    from confiance.cli import app

    r = CliRunner().invoke(app, ["up", "--state-dir", str(tmp_path / "state"), "--config", str(_write(tmp_path, toml))])
    assert r.exit_code == 2, r.output
    assert named in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "state").exists()  # refused before anything is prepared


def test_up_config_options_reach_the_components_as_written(tmp_path: Path) -> None:
    from confiance.up import UpConfig

    cfg = UpConfig.load(
        _write(
            tmp_path,
            "host = '127.0.0.1'\n[ports]\npsc = 19443\n[components.psc]\ntrust_list_refresh_seconds = 1\n"
            "[components.proxy]\nconformity_mode = true\nsession_store = 'sqlite'\n[components.guichet]\ndemo = false\n",
        )
    )
    assert cfg.ports == {"psc": 19443}
    assert cfg.components == {
        "psc": {"trust_list_refresh_seconds": 1},
        "proxy": {"conformity_mode": True, "session_store": "sqlite"},
        "guichet": {"demo": False},
    }


def test_up_refuses_a_port_already_taken_naming_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from confiance.cli import app

    ports = {name: _free_port() for name in DEFAULT_PORTS}
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", ports["psc"]))
        squatter.listen()
        config = _write(tmp_path, "[ports]\n" + "".join(f"{k} = {v}\n" for k, v in ports.items()))
        r = CliRunner().invoke(app, ["up", "--state-dir", str(tmp_path / "state"), "--config", str(config)])
    assert r.exit_code == 1, r.output
    assert f"{ports['psc']} (psc)" in r.stderr and "déjà utilisé" in r.stderr
    assert "Traceback" not in r.output
    assert not (tmp_path / "state" / "logs").exists()  # no service was started


def test_check_ports_free_ignores_closed_ports() -> None:
    from confiance.up import PortInUse, check_ports_free

    free = _free_port()
    check_ports_free("127.0.0.1", {"psc": free})
    with socket.socket() as s:
        s.bind(("127.0.0.1", free))
        s.listen()
        with pytest.raises(PortInUse, match=f"{free} \\(psc\\)"):
            check_ports_free("127.0.0.1", {"psc": free, "zero": 0})


def test_version_flag_and_unexpected_errors_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from confiance import __version__, cli

    r = subprocess.run(
        [sys.executable, "-m", "confiance", "--version"], capture_output=True, text=True, check=False, timeout=60
    )
    assert r.returncode == 0 and r.stdout.strip() == f"confiance {__version__}"

    def broken() -> None:
        raise KeyError("proxy_session_id")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.delenv("CONFIANCE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 70
    err = capsys.readouterr().err
    assert "erreur inattendue : KeyError" in err and "CONFIANCE_DEBUG=1" in err and "Traceback" not in err
    monkeypatch.setenv("CONFIANCE_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main()


def test_a_service_that_dies_at_start_is_quoted(tmp_path: Path, pki, server_cert) -> None:
    from confiance.core.launch import LaunchContext, ServiceLaunch
    from confiance.up import Supervisor

    ctx = LaunchContext(state_dir=tmp_path, pki=pki, server_cert=server_cert, ports={})
    dying = ServiceLaunch(
        name="api",
        argv=[
            sys.executable,
            "-c",
            "import sys; print('démarrage'); print(\"impossible d'écouter sur 127.0.0.1:9444 : déjà utilisé\"); sys.exit(1)",
        ],
        url="https://127.0.0.1:1",
        health_url="https://127.0.0.1:1/health",
    )
    sup = Supervisor(ctx, [dying])
    try:
        with pytest.raises(RuntimeError) as exc:
            sup.start(timeout=120)
    finally:
        sup.stop()
    msg = str(exc.value)
    assert "le service api s'est arrêté (code 1) : impossible d'écouter sur 127.0.0.1:9444 : déjà utilisé" in msg
    assert str(tmp_path / "logs" / "api.log") in msg
