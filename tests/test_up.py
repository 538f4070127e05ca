"""`confiance up`: PKI generated, every component started, endpoints.json written, SIGTERM stops all."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from confiance.core.launch import DEFAULT_PORTS


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


def test_up_starts_everything_and_sigterm_stops_it(tmp_path: Path):
    config = tmp_path / "up.toml"
    ports = {name: _free_port() for name in DEFAULT_PORTS}
    config.write_text("[ports]\n" + "".join(f"{k} = {v}\n" for k, v in ports.items()))
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "confiance", "up", "--state-dir", str(state), "--config", str(config)],
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
        data = json.loads(endpoints.read_text())
        for key in ("state_dir", "ca_bundle", "services", "lps_clients", "identities"):
            assert key in data
        assert Path(data["ca_bundle"]).exists()
        for name, svc in data["services"].items():
            assert svc["url"].startswith(("https://127.0.0.1:", "http://127.0.0.1:")), name
        for process in data["processes"]:
            # every process answers its health URL over real TLS with the generated CA
            r = httpx.get(process["health"], verify=ssl.create_default_context(cafile=data["ca_bundle"]), timeout=5)
            assert r.status_code < 500, (process["name"], r.status_code)
        children = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "arrêtés" in out
        for child in children:
            assert not _alive(child), f"child {child} survived SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_up_rejects_bad_config(tmp_path: Path):
    config = tmp_path / "bad.toml"
    config.write_text("[ports]\nnope = 1\n")
    r = subprocess.run(
        [sys.executable, "-m", "confiance", "up", "--state-dir", str(tmp_path / "s"), "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2 and "nope" in r.stdout
