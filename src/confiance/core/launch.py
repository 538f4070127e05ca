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

    def trust_list_section(self, opts: dict[str, Any], cache: Path) -> dict[str, Any] | None:
        """``[trust_list]`` for a PSC/API config: the guichet `up` starts publishes it (its port is known now).

        ``enforce = "flagged"``: clients onboarded through the guichet (registered with
        ``trust_list_required``) are held to their habilitations, while the ready-made demo
        clients keep working before anyone has obtained one.
        """
        if "guichet" not in self.ports:  # assembled without a guichet (benchmarks): no trust list
            return None
        guichet = self.url("guichet", scheme="http")
        return {
            "url": f"{guichet}/trust-list",
            "jwks_url": f"{guichet}/trust-list/jwks",
            "issuer": guichet,
            "environment": opts.get("trust_list_environment", "BAS"),
            "refresh_seconds": float(opts.get("trust_list_refresh_seconds", 5)),
            "cache_path": str(cache),
            "enforce": opts.get("trust_list_enforce", "flagged"),
        }

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
