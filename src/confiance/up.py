"""`confiance up`: the whole trust space on 127.0.0.1 in one command.

Generates the PKI on first run, lets each component prepare its configuration, starts each
service as its own process, waits until every one answers its health URL over HTTPS,
writes ``endpoints.json`` and stops everything cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import importlib
import os
import signal
import ssl
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from confiance import __version__
from confiance.core.launch import DEFAULT_PORTS, LaunchContext, ServiceLaunch
from confiance.pki import Pki

# Start order matters: each component may read what earlier ones added to endpoints.json.
COMPONENTS: list[str] = [
    "confiance.psc.launch",
    "confiance.api.launch",
    "confiance.proxy.launch",
    "confiance.conformity.launch",
    "confiance.guichet.launch",
]


@dataclass
class UpConfig:
    host: str = "127.0.0.1"
    ports: dict[str, int] | None = None
    components: dict[str, dict[str, Any]] | None = None

    @classmethod
    def load(cls, path: Path | None) -> UpConfig:
        if path is None:
            return cls()
        data = tomllib.loads(path.read_text())
        unknown = set(data) - {"host", "ports", "components"}
        if unknown:
            raise ValueError(f"clés inconnues dans {path}: {', '.join(sorted(unknown))}")
        ports = data.get("ports", {})
        bad = set(ports) - set(DEFAULT_PORTS)
        if bad:
            raise ValueError(f"ports inconnus dans {path}: {', '.join(sorted(bad))}")
        return cls(host=data.get("host", "127.0.0.1"), ports=ports, components=data.get("components", {}))


def prepare(state_dir: Path, config: UpConfig) -> tuple[LaunchContext, list[ServiceLaunch]]:
    state_dir = state_dir.resolve()  # every path written into a config must work from any directory
    state_dir.mkdir(parents=True, exist_ok=True)
    pki = Pki.init(state_dir / "pki")
    server_cert = pki.ensure_server("localhost", dns=["localhost"], ips=["127.0.0.1"])
    ports = {**DEFAULT_PORTS, **(config.ports or {})}
    ctx = LaunchContext(
        state_dir=state_dir.resolve(),
        pki=pki,
        server_cert=server_cert,
        ports=ports,
        host=config.host,
        options=config.components or {},
    )
    ctx.endpoints.update(
        {
            "version": __version__,
            "state_dir": str(ctx.state_dir),
            "ca_bundle": str(pki.ca_bundle.resolve()),
            "crl": str(pki.crl_path.resolve()),
            "services": {},
            "lps_clients": [],
            "identities": [],
        }
    )
    launches: list[ServiceLaunch] = []
    for module_name in COMPONENTS:
        module = importlib.import_module(module_name)
        launch = module.prepare(ctx)
        if launch is not None:
            launches.extend(launch if isinstance(launch, list) else [launch])
    return ctx, launches


class Supervisor:
    """Owns the child processes; every exit path terminates all of them."""

    def __init__(self, ctx: LaunchContext, launches: list[ServiceLaunch]) -> None:
        self.ctx = ctx
        self.launches = launches
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = False

    def start(self, timeout: float = 60.0) -> None:
        logs = self.ctx.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        for launch in self.launches:
            log = open(logs / f"{launch.name}.log", "ab")  # noqa: SIM115 - owned by the child
            self.procs[launch.name] = subprocess.Popen(
                launch.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **launch.env},
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        with httpx.Client(verify=ssl.create_default_context(cafile=str(self.ctx.ca_bundle)), timeout=2.0) as client:
            for launch in self.launches:
                while True:
                    proc = self.procs[launch.name]
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"le service {launch.name} s'est arrêté (code {proc.returncode}); "
                            f"voir {logs / (launch.name + '.log')}"
                        )
                    try:
                        if client.get(launch.health_url).status_code < 500:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"le service {launch.name} ne répond pas sur {launch.health_url}")
                    time.sleep(0.1)

    def wait(self) -> int:
        """Block until a signal or a child dies; return the exit code for `up`."""

        def _handler(_sig: int, _frame: FrameType | None) -> None:
            self._stop = True

        signal.signal(signal.SIGTERM, _handler)
        signal.signal(signal.SIGINT, _handler)
        while not self._stop:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    print(f"le service {name} s'est arrêté (code {proc.returncode})", file=sys.stderr)
                    return 1
            time.sleep(0.2)
        return 0

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
