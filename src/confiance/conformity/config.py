"""What a conformity run needs to know: the proxy, the LPS identity, the harness URLs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confiance.core.tls import ClientIdentity
from confiance.pki import normalize_dn


@dataclass
class RunConfig:
    """Everything a run uses; :func:`from_endpoints` fills it from ``endpoints.json``."""

    proxy_url: str
    client_id: str
    national_id: str
    # Identities used for the deny / never-answer scenarios (must differ from national_id).
    deny_national_id: str | None = None
    never_national_id: str | None = None
    ca_bundle: Path | None = None
    proxy_identity: ClientIdentity | None = None  # TLS identity the tool presents to the proxy
    client_cert: Path | None = None  # public certificate the proxy holds for client_id (mTLS)
    client_uses_secret: bool = False  # the LPS authenticates to PSC with a secret: traces carry no dn
    other_client_id: str | None = None  # a second LPS the proxy serves (sessions are per user *and* LPS)
    web_client_id: str | None = None  # client used for the authorization-code flow (default client_id)
    unknown_client_id: str = "client-inconnu-conformite"
    unknown_national_id: str = "899999999999"  # not a sandbox identity (fictitious range, never seeded)
    service: str = "signsessiondata"  # proxy's name for the signsessiondata service (/send/{service}/…)
    service_path: str = "signsessiondata"
    get_path: str | None = "hello"  # a GET endpoint of the same service (the resource server's /hello)
    get_body: str | None = "hello"  # what that endpoint answers
    traces_auth: str | None = None  # value of the Authorization header for /traces
    psc_url: str | None = None  # sandbox base URL (scheme://host:port)
    psc_admin_token: str | None = None
    api_jwks_url: str | None = None
    api_jwks: dict[str, Any] | None = None  # inline JWKS (endpoints.json), used when no URL answers
    api_identity: ClientIdentity | None = None  # the API servers require a client certificate
    api_access_log_url: str | None = None
    api_admin_token: str | None = None
    # Fault services the operator configured on the proxy: kind ("down", "timeout", "broken")
    # → service name; the tool listens on fault_ports for "timeout"/"broken" with fault_tls.
    fault_services: dict[str, str] = field(default_factory=dict)
    fault_ports: dict[str, int] = field(default_factory=dict)
    fault_tls: tuple[Path, Path] | None = None
    idle_timeout: float | None = None  # the proxy's configured idle timeout, if short enough to test
    absolute_timeout: float | None = None  # the proxy's configured absolute session lifetime, if short
    traces_open: bool = False  # the operator declares /traces open to anyone (conformity mode)
    spoofed_ip: str = "203.0.113.77"  # X-Forwarded-For the tool sends; must never become ipAddress
    id_sample: int = 8  # session ids sampled to judge their randomness
    observe_timeout: float = 15.0  # how long the tool watches the sandbox for the proxy's CIBA request
    max_wait: float = 90.0  # longest the tool waits for an expiry
    connect_timeout: float = 60.0
    only: set[str] | None = None  # run only these check ids (tests, debugging)
    skip: set[str] = field(default_factory=set)
    extra: dict[str, Any] = field(default_factory=dict)
    # The only way the tool lets time pass (expiry scenarios). Tests inject one that moves
    # the proxy's clock, so a verdict never depends on how loaded the machine is.
    wait: Callable[[float], None] = time.sleep

    @property
    def expected_dn(self) -> str | None:
        if self.client_cert is None:
            return None
        from cryptography import x509

        from confiance.pki import subject_dn

        return normalize_dn(subject_dn(x509.load_pem_x509_certificate(self.client_cert.read_bytes())))

    @property
    def expected_x5t(self) -> str | None:
        if self.client_cert is None:
            return None
        from cryptography import x509

        from confiance.pki import x5t_s256

        return x5t_s256(x509.load_pem_x509_certificate(self.client_cert.read_bytes()))


def from_endpoints(endpoints: dict[str, Any], **overrides: Any) -> RunConfig:
    """Defaults from ``endpoints.json`` (written by `confiance up`); explicit values win."""
    services: dict[str, dict[str, Any]] = endpoints.get("services", {})
    clients: list[dict[str, Any]] = endpoints.get("lps_clients", [])
    identities: list[dict[str, Any]] = endpoints.get("identities", [])
    psc = services.get("psc", {})
    rs = services.get("signsessiondata", {})
    proxy = services.get("proxy", {})

    client_id = overrides.pop("client_id", None)
    if client_id is None:
        mtls = [c for c in clients if c.get("cert")] or clients
        client_id = mtls[0]["client_id"] if mtls else None
    client = next((c for c in clients if c.get("client_id") == client_id), {})
    national_id = overrides.pop("national_id", None) or (identities[0]["national_id"] if identities else None)
    others = [i["national_id"] for i in identities if i.get("national_id") != national_id]
    if not client_id or not national_id:
        raise ValueError("clientId et nationalId requis (--client-id, --national-id ou endpoints.json)")
    psc_url = psc.get("base_url") or psc.get("url")
    jwks = rs.get("jwks_uri") or rs.get("jwks")
    values: dict[str, Any] = {
        "proxy_url": proxy.get("url"),
        "client_id": client_id,
        "national_id": national_id,
        "other_client_id": next((c["client_id"] for c in clients if c.get("client_id") != client_id), None),
        "deny_national_id": others[0] if others else None,
        "never_national_id": others[1] if len(others) > 1 else None,
        "ca_bundle": Path(endpoints["ca_bundle"]) if endpoints.get("ca_bundle") else None,
        "client_cert": Path(client["cert"]) if client.get("cert") else None,
        "client_uses_secret": client.get("auth") in ("client_secret", "secret") and not client.get("cert"),
        "psc_url": psc_url,
        "psc_admin_token": psc.get("admin_token"),
        "api_jwks_url": jwks if isinstance(jwks, str) else None,
        "api_jwks": jwks if isinstance(jwks, dict) else None,
        "api_identity": ClientIdentity(Path(client["cert"]), Path(client["key"]))
        if client.get("cert") and client.get("key")
        else None,
        "api_access_log_url": rs.get("access_log_url"),
        "api_admin_token": rs.get("admin_token"),
        "traces_auth": _traces_auth(proxy),
        "service": proxy.get("signsessiondata_service") or "signsessiondata",
        "idle_timeout": proxy.get("idle_ttl"),
        "absolute_timeout": proxy.get("absolute_ttl"),
        "traces_open": bool(proxy.get("conformity_mode", False)),
    }
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
    if not values.get("proxy_url"):
        raise ValueError("URL du proxy requise (--proxy)")
    return RunConfig(**values)


def _traces_auth(proxy: dict[str, Any]) -> str | None:
    """The Authorization value for /traces that `confiance up` published for the proxy."""
    auth = proxy.get("traces_auth")
    if isinstance(auth, dict) and isinstance(auth.get("value"), str):
        return str(auth["value"])
    if isinstance(auth, str):
        return auth
    return None
