"""Pytest fixtures that start the API Pro Santé Connectée (AS + resource services) over HTTPS.

Wired to the real PSC sandbox (``psc_sandbox``): the AS introspects PSC access tokens at
PSC with its own mTLS client, registered through PSC's admin API.

Usage (registered in ``tests/conftest.py``)::

    def test_x(api_services, psc_sandbox):      # module-scoped
        api = api_services
        api.as_url, api.token_endpoint, api.introspection_endpoint, api.revocation_endpoint, api.jwks_uri
        api.rs_url, api.rs_jwks_uri, api.rs_jwks()          # keys verifying signsessiondata signatures
        api.services["signsessiondata"]  # {"url", "audience", "scopes", "token_endpoint", "jwks_uri"}
        api.services["insi"], api.services["dmp"]
        api.endpoints()                   # the endpoints.json "services" entries (api_as + 3 services)
        api.proxy_cert                    # IssuedCertificate registered as client "proxy" (every scope)
        api.proxy_identity                # ClientIdentity of it
        # psc_sandbox.mtls_cert is registered as client "lps-mtls" (every scope)
        api.register_client("my-client", dn, scopes=None, level="espace_confiance", secret=None)
        api.client(cert_or_identity)      # httpx.Client presenting that certificate
        api.exchange(psc_access_token, cert=api.proxy_cert, scope="signsessiondata") -> httpx.Response

    def test_y(api_services_factory):           # private instance with its own settings
        api = api_services_factory(psc_mode="jwks", token_lifetime=3600, refresh_tokens=True,
                                   clients=[ApiClient(...)], cache_seconds=0, psc=other_psc_handle,
                                   access_log=tmp_path / "log.jsonl", trusted_proxies=["127.0.0.1/32"])

The ``services`` dict and ``endpoints()`` have the same keys as ``endpoints.json`` written
by ``confiance up``, so code configured from one works with the other.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from confiance.api.config import (
    SERVICE_NAMES,
    ApiClient,
    ApiConfig,
    AuthorizationServerConfig,
    PscValidation,
    ResourceServerConfig,
    TlsFiles,
)
from confiance.api.domain import GRANT_TOKEN_EXCHANGE, TT_ACCESS_TOKEN, secret_hash
from confiance.api.runtime import ApiRuntime, build_runtime
from confiance.api.service import build_apps, server_tls
from confiance.core.server import ServerThread, ServiceConfig
from confiance.core.tls import ClientIdentity, client_context
from confiance.core.trustlist import TrustListSettings
from confiance.pki import IssuedCertificate, Pki
from tests.fixtures_psc import PscHandle

API_STRUCT_ID = "3" + "44306184100047"  # fictitious SIRET-based structure id
ALL_SCOPES = list(SERVICE_NAMES)


@dataclass
class ApiHandle:
    runtime: ApiRuntime
    as_server: ServerThread
    rs_server: ServerThread
    pki: Pki
    psc: PscHandle
    proxy_cert: IssuedCertificate

    # ----- addresses
    @property
    def as_url(self) -> str:
        return self.runtime.as_url

    @property
    def issuer(self) -> str:
        return self.runtime.issuer

    @property
    def token_endpoint(self) -> str:
        return f"{self.as_url}/token"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.as_url}/introspect"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.as_url}/revoke"

    @property
    def jwks_uri(self) -> str:
        return f"{self.as_url}/jwks"

    @property
    def rs_url(self) -> str:
        return self.runtime.rs_url

    @property
    def rs_jwks_uri(self) -> str:
        return f"{self.rs_url}/.well-known/jwks.json"

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        return self.runtime.describe_services()

    def endpoints(self) -> dict[str, dict[str, Any]]:
        return {
            "api_as": {
                "url": self.as_url,
                "issuer": self.issuer,
                "token_endpoint": self.token_endpoint,
                "introspection_endpoint": self.introspection_endpoint,
                "revocation_endpoint": self.revocation_endpoint,
                "jwks_uri": self.jwks_uri,
            },
            **self.services,
        }

    def rs_jwks(self) -> dict[str, Any]:
        return self.runtime.rs_keys.jwks()

    @property
    def proxy_identity(self) -> ClientIdentity:
        return ClientIdentity(Path(self.proxy_cert.cert_path), Path(self.proxy_cert.key_path))

    # ----- clients
    def register_client(
        self,
        client_id: str,
        dn: str,
        scopes: list[str] | None = None,
        level: str = "espace_confiance",
        secret: str | None = None,
    ) -> ApiClient:
        client = ApiClient.model_validate(
            {
                "client_id": client_id,
                "dn": dn,
                "scopes": ALL_SCOPES if scopes is None else scopes,
                "level": level,
                **({"secret_sha256": secret_hash(secret)} if secret else {}),
            }
        )
        self.runtime.registry.add(client)
        return client

    def client(self, cert: IssuedCertificate | ClientIdentity | None = None) -> httpx.Client:
        identity: ClientIdentity | None
        if isinstance(cert, IssuedCertificate):
            identity = ClientIdentity(Path(cert.cert_path), Path(cert.key_path))
        else:
            identity = cert
        return httpx.Client(verify=client_context(self.pki.ca_bundle, identity), timeout=10)

    def exchange(
        self,
        psc_access_token: str,
        cert: IssuedCertificate | ClientIdentity | None = None,
        *,
        client_id: str | None = None,
        scope: str | None = None,
        audience: str | None = None,
        **extra: str,
    ) -> httpx.Response:
        """One RFC 8693 exchange as the CI-SIS volet shows it (``subject_issuer=psc``)."""
        form = {
            "grant_type": GRANT_TOKEN_EXCHANGE,
            "subject_token": psc_access_token,
            "subject_token_type": TT_ACCESS_TOKEN,
            "subject_issuer": "psc",
            **({"client_id": client_id} if client_id else {}),
            **({"scope": scope} if scope else {}),
            **({"audience": audience} if audience else {}),
            **extra,
        }
        with self.client(cert if cert is not None else self.proxy_cert) as http:
            return http.post(self.token_endpoint, data=form)

    def stop(self) -> None:
        self.rs_server.stop()
        self.as_server.stop()


def _register_at_psc(psc: PscHandle, client_id: str, cert: IssuedCertificate) -> None:
    """The AS is a PSC client (introspection needs one): registered via PSC's admin API."""
    with psc.client("none") as http:
        r = http.post(
            f"{psc.url}/sandbox/admin/clients",
            headers={"Authorization": f"Bearer {psc.admin_token}"},
            json={
                "client_id": client_id,
                "name": "Serveur d'autorisation API PSC (tests)",
                "tls_client_auth_subject_dn": cert.subject_dn,
                "espace_de_confiance": True,
            },
        )
        assert r.status_code == 201, r.text


def build_api(
    pki: Pki,
    server_cert: IssuedCertificate,
    psc: PscHandle,
    *,
    clients: list[ApiClient] | None = None,
    psc_mode: str = "introspection",
    cache_seconds: float = 10.0,
    access_log: Path | None = None,
    trusted_proxies: list[str] | None = None,
    trust_list: TrustListSettings | None = None,
    rs_admin_token: str | None = None,
    **as_options: Any,
) -> ApiHandle:
    """Start AS + RS on kernel-chosen ports; ``as_options`` are AuthorizationServerConfig fields."""
    proxy_cert = pki.ensure_client("api-test-proxy", API_STRUCT_ID, "proxy-esante-test")
    as_psc_cert = pki.ensure_client("api-test-as-psc", API_STRUCT_ID, "api-as-introspection")
    psc_client_id = "api-as-" + secrets.token_hex(4)
    if psc_mode == "introspection":
        _register_at_psc(psc, psc_client_id, as_psc_cert)
    registered = [
        ApiClient(client_id="proxy", dn=proxy_cert.subject_dn, scopes=ALL_SCOPES),
        ApiClient(client_id=psc.mtls_client_id, dn=psc.mtls_cert.subject_dn, scopes=ALL_SCOPES),
        *(clients or []),
    ]
    cfg = ApiConfig(
        tls=TlsFiles(
            cert=Path(server_cert.cert_path), key=Path(server_cert.key_path), ca_bundle=pki.ca_bundle, crl=pki.crl_path
        ),
        psc=PscValidation.model_validate(
            {
                "issuer": psc.issuer,
                "mode": psc_mode,
                "introspection_endpoint": psc.introspection_endpoint,
                "jwks_uri": psc.jwks_uri,
                "client_id": psc_client_id,
                "client_cert": as_psc_cert.cert_path,
                "client_key": as_psc_cert.key_path,
                "ca_bundle": pki.ca_bundle,
                "cache_seconds": cache_seconds,
            }
        ),
        authorization_server=AuthorizationServerConfig.model_validate({"port": 0, **as_options}),
        resource_server=ResourceServerConfig.model_validate(
            {
                "port": 0,
                **({"access_log": access_log} if access_log else {}),
                **({"admin_token": rs_admin_token} if rs_admin_token else {}),
            }
        ),
        clients=registered,
        trusted_proxies=trusted_proxies or [],
        trust_list=trust_list,
    )
    rt = build_runtime(cfg)
    as_app, rs_app = build_apps(rt)
    tls = server_tls(cfg)
    as_srv = ServerThread(as_app, ServiceConfig(port=0, tls=tls))
    rs_srv = ServerThread(rs_app, ServiceConfig(port=0, tls=tls))
    rt.set_urls(as_srv.url, rs_srv.url)
    as_srv.start()
    rs_srv.start()
    return ApiHandle(runtime=rt, as_server=as_srv, rs_server=rs_srv, pki=pki, psc=psc, proxy_cert=proxy_cert)


@pytest.fixture(scope="module")
def api_services(pki: Pki, server_cert: IssuedCertificate, psc_sandbox: PscHandle) -> Iterator[ApiHandle]:
    """AS + resource services wired to the module's PSC sandbox (see the module docstring)."""
    handle = build_api(pki, server_cert, psc_sandbox)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def api_services_factory(
    pki: Pki, server_cert: IssuedCertificate, psc_sandbox: PscHandle
) -> Iterator[Callable[..., ApiHandle]]:
    """Private instances: ``api_services_factory(psc_mode="jwks", refresh_tokens=True, clients=[...])``."""
    started: list[ApiHandle] = []

    def make(psc: PscHandle | None = None, **options: Any) -> ApiHandle:
        handle = build_api(pki, server_cert, psc or psc_sandbox, **options)
        started.append(handle)
        return handle

    yield make
    for h in started:
        h.stop()
