"""`confiance up`: the whole trust space on 127.0.0.1 in one command.

Generates the PKI on first run, lets each component prepare its configuration, starts each
service as its own process, waits until every one answers its health URL over HTTPS,
writes ``endpoints.json`` and stops everything cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import httpx
from pydantic import Field, field_validator

from confiance import __version__
from confiance.core.config import ConfigError, StrictModel, parse_config
from confiance.core.errors import ConfianceError
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


class _TrustListOptions(StrictModel):
    """How the PSC sandbox and the API AS started by `up` follow the guichet's trust list."""

    trust_list_environment: Literal["BAS", "production"] | None = None
    trust_list_refresh_seconds: float | None = Field(None, gt=0)
    trust_list_enforce: Literal["all", "flagged"] | None = None


class PscOptions(_TrustListOptions):
    signing_alg: Literal["RS256", "ES256", "PS256"] | None = None
    lifetimes: dict[str, Any] | None = None
    ecps_default: dict[str, Any] | None = None
    identities_file: str | None = None


class ApiOptions(_TrustListOptions):
    psc_mode: Literal["introspection", "jwks"] | None = None
    token_alg: Literal["RS256", "ES256", "PS256"] | None = None
    token_lifetime: int | None = None
    refresh_tokens: bool | None = None


class ProxyOptions(StrictModel):
    web_lps_url: str | None = None
    trusted_proxies: list[str] | None = None
    session_store: Literal["memory", "sqlite", "redis"] | None = None
    session_url: str | None = None
    traces_url: str | None = None
    conformity_mode: bool | None = None


class GuichetOptions(StrictModel):
    demo: bool | None = None


class ComponentOptions(StrictModel):
    """``[components.<name>]``: the options each component's ``launch.prepare`` reads.

    Listed here so that a misspelt component or option is an error naming it, rather than
    an option silently ignored (docs/psc.md, api.md, proxy.md, guichet.md describe them).
    """

    psc: PscOptions | None = None
    api: ApiOptions | None = None
    proxy: ProxyOptions | None = None
    guichet: GuichetOptions | None = None
    conformity: StrictModel | None = None


class UpFile(StrictModel):
    host: str = "127.0.0.1"
    ports: dict[str, int] = Field(default_factory=dict)
    components: ComponentOptions = Field(default_factory=ComponentOptions)

    @field_validator("ports")
    @classmethod
    def _known_ports(cls, v: dict[str, int]) -> dict[str, int]:
        bad = sorted(set(v) - set(DEFAULT_PORTS))
        if bad:
            raise ValueError(f"ports inconnus : {', '.join(bad)} (connus : {', '.join(DEFAULT_PORTS)})")
        out_of_range = sorted(k for k, port in v.items() if not 0 < port < 65536)
        if out_of_range:
            raise ValueError(f"port hors de [1, 65535] : {', '.join(out_of_range)}")
        return v


@dataclass
class UpConfig:
    host: str = "127.0.0.1"
    ports: dict[str, int] | None = None
    components: dict[str, dict[str, Any]] | None = None

    @classmethod
    def load(cls, path: Path | None) -> UpConfig:
        """The up config; ``ConfigError`` names a misspelt key, component, option or port."""
        if path is None:
            return cls()
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"fichier de configuration introuvable: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"TOML invalide dans {path}: {exc}") from None
        parsed = parse_config(data, UpFile, str(path))
        # the launches read the options as written (they apply their own defaults)
        components = {name: dict(opts) for name, opts in data.get("components", {}).items()}
        return cls(host=parsed.host, ports=parsed.ports, components=components)


class PortInUse(ConfianceError, RuntimeError):
    """A port `up` must listen on is taken: say which, instead of mistaking its owner for ours."""

    code = "port_in_use"


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Refuse to start when one of ``ports`` is already listened on.

    Without this, a stray server answering on a service's health URL (an earlier `up`, or
    anything else) is taken for the service, and the real one dies unseen in its log.
    Bound as the services bind (``SO_REUSEADDR``), so a port in TIME_WAIT is not "taken".
    """
    taken = []
    for name, port in ports.items():
        if port == 0:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                taken.append(f"{port} ({name})")
    if taken:
        raise PortInUse(
            f"port(s) déjà utilisé(s) sur {host} : {', '.join(taken)} — arrêtez ce qui les occupe "
            "(un `confiance up` précédent ?) ou choisissez d'autres ports dans la section [ports] de --config"
        )


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


def _last_line(log: Path) -> str:
    """The last line a dead child wrote (its one-line refusal, usually), to quote it."""
    try:
        with log.open("rb") as fh:
            fh.seek(max(0, log.stat().st_size - 4096))
            lines = [ln for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return f" : {lines[-1].strip()[:300]}" if lines else ""


class Supervisor:
    """Owns the child processes; every exit path terminates all of them."""

    def __init__(self, ctx: LaunchContext, launches: list[ServiceLaunch]) -> None:
        self.ctx = ctx
        self.launches = launches
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = False

    def start(self, timeout: float = 60.0) -> None:
        check_ports_free(self.ctx.host, self.ctx.ports)
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
                        log_path = logs / f"{launch.name}.log"
                        raise RuntimeError(
                            f"le service {launch.name} s'est arrêté (code {proc.returncode}){_last_line(log_path)}; "
                            f"voir {log_path}"
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
