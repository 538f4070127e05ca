"""The state the authorization server and the resource services share in one process.

Both servers run in one process (two HTTPS listeners on one event loop), like an AS and
its resource servers shipped by one vendor. They share, in memory, the AS's public keys
and the revocation list: a token revoked at the AS is refused by the next resource
request, with no polling window and no extra network hop on the resource hot path.

``ApiRuntime`` is that shared state; the two apps (``auth_server``, ``resources``) read
it, and ``service`` assembles apps and runtime into servers. Keeping it in its own module
is what lets the apps depend on the runtime without the runtime depending on the apps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confiance.core.clientcert import CertificateVerifier, IPNetwork, client_certificate, parse_networks
from confiance.core.clients_file import ClientsFile
from confiance.core.health import CheckResult, ReadinessCheck
from confiance.core.http import ClientFactory
from confiance.core.jose import KeyStore
from confiance.core.trustlist import TrustListClient

from .audit import AccessLog
from .config import SERVICE_NAMES, ApiClient, ApiConfig, clients_file, merge_clients
from .domain import Catalog, ClientRegistry, RefreshStore, RevocationList, Service
from .psc_check import PscTokenChecker
from .signing import FastSigner

log = logging.getLogger("confiance.api")


@dataclass(frozen=True)
class CallerCert:
    """What the services need from the caller's certificate, computed once per certificate."""

    subject_dn: str
    x5t_s256: str


@dataclass
class ApiRuntime:
    cfg: ApiConfig
    as_keys: KeyStore
    rs_keys: KeyStore
    registry: ClientRegistry
    revocations: RevocationList
    refresh: RefreshStore
    psc: PscTokenChecker
    audit: AccessLog
    http: ClientFactory
    trusted_proxies: tuple[IPNetwork, ...]
    signer: FastSigner
    session_signer: FastSigner
    as_url: str = ""
    rs_url: str = ""
    issuer: str = ""
    catalog: Catalog = field(default_factory=lambda: Catalog(()))
    verifier: CertificateVerifier | None = None
    trust: TrustListClient | None = None
    clients: ClientsFile[ApiClient] | None = None
    _certs: dict[bytes, CallerCert] = field(default_factory=dict)
    pruners: list[Callable[[float], None]] = field(default_factory=list)

    def caller_cert(self, scope: Any) -> CallerCert | None:
        """The caller's certificate (TLS, or RFC 9440 header from a trusted reverse proxy).

        Parsing the DER and rendering the DN costs ≈ 60 µs, more than the rest of a
        resource request; a connection presents the same certificate on every request, so
        the result is memoised by DER (bounded).
        """
        cc = client_certificate(scope, self.trusted_proxies, self.verifier)
        if cc is None:
            return None
        info = self._certs.get(cc.der)
        if info is None:
            info = CallerCert(cc.subject_dn, cc.x5t_s256)
            if len(self._certs) >= 10_000:
                self._certs.clear()
            self._certs[cc.der] = info
        return info

    @property
    def refresh_enabled(self) -> bool:
        return self.cfg.authorization_server.refresh_tokens

    def set_urls(self, as_url: str, rs_url: str) -> None:
        """Fix public URLs once the listening ports are known (tests bind port 0)."""
        a, r = self.cfg.authorization_server, self.cfg.resource_server
        self.as_url = as_url.rstrip("/")
        self.rs_url = (r.base_url or rs_url).rstrip("/")
        self.issuer = (a.issuer or self.as_url).rstrip("/")
        services = []
        for name in SERVICE_NAMES:
            d = r.services.get(name)
            url = f"{self.rs_url}/{name}" if name != "signsessiondata" else self.rs_url
            services.append(
                Service(
                    name=name,
                    url=url,
                    audience=(d.audience if d and d.audience else f"{self.rs_url}/{name}"),
                    scopes=tuple(d.scopes) if d and d.scopes else (name,),
                )
            )
        self.catalog = Catalog(tuple(services))

    def service(self, name: str) -> Service:
        for s in self.catalog.services:
            if s.name == name:
                return s
        raise KeyError(name)

    def describe_services(self) -> dict[str, dict[str, Any]]:
        """What ``endpoints.json`` and the test fixture publish about each service."""
        return {
            s.name: {
                "url": s.url,
                "audience": s.audience,
                "scopes": list(s.scopes),
                "token_endpoint": f"{self.as_url}/token",
                "jwks_uri": f"{self.rs_url}/.well-known/jwks.json",
            }
            for s in self.catalog.services
        }

    def reload_clients_if_changed(self) -> None:
        """Pick up clients added by the admin CLI without a restart (checked at most once a second)."""
        if self.clients is None:
            return
        extra = self.clients.poll()
        if extra is not None:
            self.registry.replace(merge_clients(self.cfg.clients, extra))

    def readiness_checks(self, side: str) -> dict[str, ReadinessCheck]:
        """What ``/readyz`` checks on the AS (``side="as"``) or the resource services (``"rs"``)."""
        keys, alg = (
            (self.as_keys, self.cfg.authorization_server.token_alg)
            if side == "as"
            else (self.rs_keys, self.cfg.resource_server.signing_alg)
        )

        def signing_key() -> CheckResult:
            return CheckResult(True, f"{alg} kid={keys.signing_key(alg).kid}")

        checks: dict[str, ReadinessCheck] = {"signing_key": signing_key}
        if side == "rs":
            checks["as_keys"] = lambda: CheckResult(bool(self.as_keys.jwks().get("keys")), "clés publiques de l'AS")
            return checks
        clients = self.clients
        if clients is not None:
            checks["clients_file"] = lambda: CheckResult(
                clients.last_error is None, clients.last_error or str(clients.path)
            )
        trust = self.trust
        if trust is not None:

            def trust_list() -> CheckResult:
                tl = trust.trust_list()  # raises TrustListUnavailable with the reason
                return CheckResult(True, f"{len(tl.habilitations)} habilitation(s) ({trust.cfg.url})")

            checks["trust_list"] = trust_list
        return checks

    def housekeeping(self) -> None:
        now = time.time()
        self.revocations.prune(now)
        self.refresh.prune(now)
        self.psc.cache.prune(now)
        for prune in self.pruners:
            prune(now)
        self.audit.flush()


def build_runtime(cfg: ApiConfig) -> ApiRuntime:
    a, r = cfg.authorization_server, cfg.resource_server
    as_keys = KeyStore(a.keys_file, algs=(a.token_alg,))
    rs_keys = KeyStore(r.keys_file, algs=(r.signing_alg,))
    http = ClientFactory(cfg.psc.ca_bundle or cfg.tls.ca_bundle)
    clients = clients_file(a.clients_file) if a.clients_file else None
    extra = clients.load() if clients is not None else []
    trusted = parse_networks(cfg.trusted_proxies)
    rt = ApiRuntime(
        cfg=cfg,
        as_keys=as_keys,
        rs_keys=rs_keys,
        registry=ClientRegistry(merge_clients(cfg.clients, extra)),
        revocations=RevocationList(a.revocations_file),
        refresh=RefreshStore(),
        psc=PscTokenChecker(cfg.psc, http),
        audit=AccessLog(r.access_log),
        http=http,
        trusted_proxies=trusted,
        verifier=CertificateVerifier(cfg.tls.ca_bundle, cfg.tls.crl) if trusted else None,
        signer=FastSigner(as_keys, a.token_alg),
        session_signer=FastSigner(rs_keys, r.signing_alg),
        clients=clients,
    )
    if cfg.trust_list is not None:
        rt.trust = cfg.trust_list.client(cfg.tls.ca_bundle)
    rt.set_urls(f"https://{a.host}:{a.port}", f"https://{r.host}:{r.port}")
    return rt
