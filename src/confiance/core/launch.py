"""What a component tells `confiance up` to start it as its own process.

Each component module ``confiance.<name>.launch`` exposes ``prepare(ctx) -> ServiceLaunch``:
it writes its config file in the state dir, says which command serves it, and adds its
keys to ``endpoints.json``. Components run as separate processes exactly as separate
deployments would, so `up` also proves they only talk over HTTP(S).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confiance.pki import IssuedCertificate, Pki

DEFAULT_PORTS = {"guichet": 8000, "proxy": 8443, "psc": 9443, "api_as": 9444, "api_rs": 9445}


@dataclass
class LaunchContext:
    state_dir: Path
    pki: Pki
    server_cert: IssuedCertificate
    ports: dict[str, int]
    host: str = "127.0.0.1"
    endpoints: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # the [components.X] tables of the up config

    @property
    def ca_bundle(self) -> Path:
        return self.pki.ca_bundle

    @property
    def crl(self) -> Path:
        return self.pki.crl_path

    def url(self, port_name: str, scheme: str = "https") -> str:
        return f"{scheme}://{self.host}:{self.ports[port_name]}"

    def service(self, name: str) -> dict[str, Any]:
        services: dict[str, dict[str, Any]] = self.endpoints.setdefault("services", {})
        svc: dict[str, Any] = services.setdefault(name, {})
        return svc


@dataclass
class ServiceLaunch:
    name: str
    argv: list[str]
    url: str
    health_url: str
    env: dict[str, str] = field(default_factory=dict)


def confiance_argv(*args: str) -> list[str]:
    """Run the `confiance` CLI with the current interpreter (works in any venv)."""
    return [sys.executable, "-m", "confiance", *args]
