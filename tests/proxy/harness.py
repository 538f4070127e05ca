"""Start a real proxy (HTTPS, uvicorn thread) wired to the real PSC sandbox and API services."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from confiance.core.server import ServerThread, ServiceConfig
from confiance.core.tls import ServerTLS, client_context
from confiance.pki import IssuedCertificate, Pki
from confiance.proxy.app import ProxyApp
from confiance.proxy.config import ProxyConfig
from confiance.proxy.core import ProxyCore
from confiance.proxy.serve import build_server
from tests.fixtures_api import ApiHandle
from tests.fixtures_psc import PscHandle

ADMIN = "admin-" + "x" * 24


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def services_from(api: ApiHandle | None) -> dict[str, Any]:
    if api is None:
        return {}
    out = {}
    for name, svc in api.services.items():
        out[name] = {
            "base_url": svc["url"],
            "token_endpoint": api.token_endpoint,
            "revocation_endpoint": api.revocation_endpoint,
            "scope": " ".join(svc["scopes"]),
            "audience": svc["audience"],
        }
    return out


def proxy_config(
    pki: Pki,
    server_cert: IssuedCertificate,
    psc: PscHandle,
    api: ApiHandle | None,
    tmp: Path,
    /,
    **over: Any,
) -> ProxyConfig:
    data: dict[str, Any] = {
        "server": {"port": 0, "cert": server_cert.cert_path, "key": server_cert.key_path, "proxy_id": "test-proxy"},
        "outbound": {"ca_bundle": str(pki.ca_bundle), "upstream_timeout": 5, "psc_timeout": 5},
        "psc": {"discovery_url": psc.discovery_url, "ciba_max_wait": 10},
        "lps_clients": [
            {
                "client_id": psc.mtls_client_id,
                "auth": "mtls",
                "cert": psc.mtls_cert.cert_path,
                "key": psc.mtls_cert.key_path,
                "web_redirect_url": "https://lps.example/accueil",
            },
            {"client_id": psc.secret_client_id, "auth": "secret", "secret": psc.secret_client_secret},
        ],
        "services": services_from(api),
        "sessions": {"sweep_interval": 0.2},
        "traces": {"url": f"sqlite:///{tmp}/traces-{secrets.token_hex(4)}.db", "admin_token": ADMIN},
    }
    return ProxyConfig.model_validate(merge(data, over))


@dataclass
class RunningProxy:
    server: ServerThread
    app: ProxyApp
    pki: Pki

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def core(self) -> ProxyCore:
        return self.app.core

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=client_context(self.pki.ca_bundle), timeout=20, **kw)

    def traces(self, start: str = "2000-01-01T00:00:00Z") -> list[dict[str, Any]]:
        # No waiting here: GET /traces itself waits for the SEND traces still queued.
        with self.client() as c:
            r = c.get("/traces", params={"start": start}, headers={"Authorization": f"Bearer {ADMIN}"})
            assert r.status_code == 200, r.text
            out: list[dict[str, Any]] = r.json()
            return out

    def stop(self) -> None:
        self.server.stop()


class ManualClock:
    """The proxy's clock in tests: epoch seconds that move only when the test says so.

    Session and token rules (idle and absolute expiry, renewal margins) read this clock, so
    a test moves it past a deadline instead of sleeping towards it: the outcome cannot depend
    on how loaded the machine is. It starts at the real time so that traces and tokens
    issued by the other (real-clock) components stay plausible.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


def start_proxy(cfg: ProxyConfig, pki: Pki, store: Any = None, clock: ManualClock | None = None) -> RunningProxy:
    # The proxy's own server (confiance.proxy.serve), exactly as `confiance proxy serve` runs it.
    front = build_server(cfg, store=store, clock=clock)
    tls = ServerTLS(cert=cfg.server.cert, key=cfg.server.key)
    server = ServerThread(front.app, ServiceConfig(port=0, tls=tls), server=front)
    server.start()
    return RunningProxy(server, front.app, pki)


def connect_body(psc: PscHandle, national_id: str | None = None, client_id: str | None = None) -> dict[str, str]:
    return {
        "nationalId": national_id or psc.national_id,
        "bindingMessage": "42",
        "clientId": client_id or psc.mtls_client_id,
        "channel": "CARD",
    }
