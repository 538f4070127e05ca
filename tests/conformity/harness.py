"""Start a test double proxy (or any ASGI proxy) and run the conformity tool against it."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confiance.conformity.config import RunConfig
from confiance.conformity.model import CheckResult
from confiance.conformity.runner import run
from confiance.core.server import ServerThread
from confiance.core.tls import ClientAuth
from confiance.pki import IssuedCertificate, Pki
from tests.conformity.double import TRACES_TOKEN, DoubleConfig, DoubleProxy
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle
from tests.support import start_https

SLOW = {
    "connect.no_answer",
    "beyond.refresh",
    "beyond.idle_expiry",
    "session.idle_timeout",
    "session.absolute_timeout",
}


class ManualClock:
    """The proxy's clock in tests: epoch seconds that move only when the tool waits.

    The proxy under test reads it for every session decision, and the tool's ``wait`` moves
    it: whether a session is alive at half its idle timeout cannot depend on how loaded the
    machine is. The wait also sleeps for real, for the sandbox (its short lifetimes only
    ever need *more* time to pass, which load cannot take away).
    """

    def __init__(self) -> None:
        self._now = time.time()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds

    def wait(self, seconds: float) -> None:
        self.advance(seconds)
        time.sleep(seconds)


def double_config(
    psc: PscHandle,
    api: ApiHandle,
    defects: Iterable[str] = (),
    idle_ttl: float = 3600.0,
    absolute_ttl: float = 4 * 3600.0,
    clock: ManualClock | None = None,
) -> DoubleConfig:
    sd = api.services["signsessiondata"]
    return DoubleConfig(
        ciba_endpoint=psc.ciba_endpoint,
        token_endpoint=psc.token_endpoint,
        end_session_endpoint=psc.end_session_endpoint,
        ca_bundle=psc.ca_bundle,
        clients={psc.mtls_client_id: psc.mtls_identity},
        proxy_identity=api.proxy_identity,
        api_token_endpoint=api.token_endpoint,
        services={"signsessiondata": {"url": sd["url"], "audience": sd["audience"], "scope": " ".join(sd["scopes"])}},
        defects=frozenset(defects),
        idle_ttl=idle_ttl,
        absolute_ttl=absolute_ttl,
        **({"clock": clock} if clock is not None else {}),
    )


def start_double(pki: Pki, cert: IssuedCertificate, cfg: DoubleConfig) -> ServerThread:
    return start_https(DoubleProxy(cfg).app, pki, cert, ClientAuth.NONE)


def tool_config(proxy_url: str, psc: PscHandle, api: ApiHandle, **over: object) -> RunConfig:
    others = [i["national_id"] for i in psc.identities if i["national_id"] != psc.national_id]
    values: dict[str, object] = {
        "proxy_url": proxy_url,
        "client_id": psc.mtls_client_id,
        "national_id": psc.national_id,
        "deny_national_id": others[0],
        "never_national_id": others[1],
        "ca_bundle": psc.ca_bundle,
        "client_cert": Path(psc.mtls_cert.cert_path),
        "psc_url": psc.url,
        "psc_admin_token": psc.admin_token,
        "api_jwks_url": api.rs_jwks_uri,
        "api_identity": psc.mtls_identity,
        "service": "signsessiondata",
        "connect_timeout": 30.0,
        "traces_auth": f"Bearer {TRACES_TOKEN}",
        **over,
    }
    return RunConfig(**values)  # type: ignore[arg-type]


def statuses(results: list[CheckResult]) -> dict[str, str]:
    return {r.id: r.status.value for r in results}


def run_against(url: str, psc: PscHandle, api: ApiHandle, **over: object) -> list[CheckResult]:
    return run(tool_config(url, psc, api, **over)).results


def explain(results: list[CheckResult]) -> str:
    return "\n".join(f"{r.id}: {r.status.value} {r.reason}" for r in results)


@dataclass
class Faults:
    """Three services of the proxy that fail on purpose, and what the tool must be told."""

    proxy_services: dict[str, dict[str, Any]]
    tool: dict[str, Any]


def _free_port() -> int:
    """A port free now and unlikely to be taken before the tool binds it, minutes later.

    Why not port 0: the kernel hands out port-0 binds and every outgoing connection's
    source port from the ephemeral range (32768–60999 on Linux), so under a parallel suite
    the port was sometimes taken by then ("Address already in use"). Below that range
    only explicit binds compete, and those of this suite go through this function."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


def faults(api: ApiHandle, cert: IssuedCertificate) -> Faults:
    """Proxy config for the fault services (token exchange as signsessiondata's, 1 s timeout)."""
    sd = api.services["signsessiondata"]
    base = {
        "token_endpoint": api.token_endpoint,
        "scope": " ".join(sd["scopes"]),
        "audience": sd["audience"],
        "timeout": 1.0,
    }
    ports = {"down": _free_port(), "timeout": _free_port(), "broken": _free_port()}
    names = {"down": "conformite-panne", "timeout": "conformite-lent", "broken": "conformite-erreur"}
    return Faults(
        proxy_services={names[k]: {**base, "base_url": f"https://127.0.0.1:{p}"} for k, p in ports.items()},
        tool={
            "fault_services": names,
            "fault_ports": {k: ports[k] for k in ("timeout", "broken")},
            "fault_tls": (Path(cert.cert_path), Path(cert.key_path)),
        },
    )
