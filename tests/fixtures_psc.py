"""Pytest fixtures that start a real PSC sandbox over HTTPS, for any component's tests.

Usage (fixtures are registered in ``tests/conftest.py``)::

    def test_my_proxy(psc_sandbox):            # module-scoped, shared by a test module
        psc = psc_sandbox
        psc.url, psc.issuer, psc.discovery_url, psc.token_endpoint, psc.ciba_endpoint
        psc.introspection_endpoint, psc.jwks_uri, psc.end_session_endpoint, psc.userinfo_endpoint
        psc.revocation_endpoint, psc.authorization_endpoint, psc.ecps_url
        psc.mtls_client_id, psc.mtls_cert (IssuedCertificate), psc.mtls_identity (ClientIdentity)
        psc.secret_client_id, psc.secret_client_secret
        psc.web_client_id, psc.web_client_secret, psc.web_redirect_uri   # code + PKCE client
        psc.client("mtls"|"secret"|"none") -> httpx.Client trusting the test CA (mTLS: LPS cert)
        psc.client_auth("mtls"|"secret") -> form fields authenticating the client
        psc.national_id            # an identity the e-CPS approves immediately
        psc.identities             # [{"national_id", "given_name", "family_name", ...}, ...]
        psc.admin_token, psc.ca_bundle
        psc.set_lifetimes(access_token=2, refresh_token=5, session_idle=10, ciba_interval=0)
        psc.set_ecps("deny" | "approve" | "never" | "manual", delay_ms=0, national_id=None)
        psc.approve(auth_req_id) / psc.deny(auth_req_id)   # manual mode decisions
        psc.pending()              # pending CIBA requests [{"auth_req_id", "binding_message", ...}]
        psc.ciba_login(national_id=None, kind="mtls"|"secret", binding_message="42") -> token response
        psc.sandbox                # the PscSandbox (provider, keys, set_base_url, rotate_keys …)
        psc.reset()                # default lifetimes and e-CPS policy back

    def test_custom(psc_sandbox_factory):      # a private instance with its own settings
        psc = psc_sandbox_factory(lifetimes={"access_token": 2}, signing_alg="ES256")

Defaults of the fixture instance (chosen for fast tests, unlike PSC): ``ciba_interval`` 0 s
(no ``slow_down``), e-CPS approves immediately; other lifetimes are PSC's. Lifetime and
policy changes apply to the live instance, so restore them (``reset()``) if a module
shares the instance. The mTLS client is an "Espace de Confiance" client: it must present
``mtls_identity`` (an ORG AUTH_CLI certificate from the session ``pki``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from confiance.core.server import ServerThread
from confiance.core.tls import ClientAuth, ClientIdentity, client_context
from confiance.pki import IssuedCertificate, Pki
from confiance.psc.app import OIDC, PscSandbox
from confiance.psc.config import ClientConfig, Lifetimes, PscConfig, TlsConfig
from tests.support import start_https

MTLS_STRUCT_ID = "3" + "90000000002023"  # "3" + a fictitious SIRET (valid Luhn key)
FAST_DEFAULTS = {"ciba_interval": 0.0}


@dataclass
class PscHandle:
    """A running sandbox plus everything a client needs to talk to it."""

    sandbox: PscSandbox
    server: ServerThread
    pki: Pki
    mtls_client_id: str
    mtls_cert: IssuedCertificate
    secret_client_id: str
    secret_client_secret: str
    web_client_id: str
    web_client_secret: str
    web_redirect_uri: str
    admin_token: str | None
    defaults: dict[str, Any] = field(default_factory=dict)

    # ----- addresses
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def issuer(self) -> str:
        return self.sandbox.issuer

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def token_endpoint(self) -> str:
        return f"{self.url}{OIDC}/token"

    @property
    def ciba_endpoint(self) -> str:
        return f"{self.url}{OIDC}/ext/ciba/auth"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.url}{OIDC}/token/introspect"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.url}{OIDC}/revoke"

    @property
    def userinfo_endpoint(self) -> str:
        return f"{self.url}{OIDC}/userinfo"

    @property
    def end_session_endpoint(self) -> str:
        return f"{self.url}{OIDC}/logout"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.url}{OIDC}/auth"

    @property
    def jwks_uri(self) -> str:
        return f"{self.url}{OIDC}/certs"

    @property
    def ecps_url(self) -> str:
        return f"{self.url}/sandbox/ecps"

    @property
    def ca_bundle(self) -> Path:
        return self.pki.ca_bundle

    @property
    def mtls_identity(self) -> ClientIdentity:
        return ClientIdentity(Path(self.mtls_cert.cert_path), Path(self.mtls_cert.key_path))

    @property
    def identities(self) -> list[dict[str, Any]]:
        return [i.summary() for i in self.sandbox.provider.identities.values()]

    @property
    def national_id(self) -> str:
        """The first seeded identity (its e-CPS follows the default policy)."""
        return next(iter(self.sandbox.provider.identities))

    def stop(self) -> None:
        """Stop without waiting for idle keep-alive connections of the test's clients."""
        self.server.server.config.timeout_graceful_shutdown = 1
        self.server.stop()

    # ----- knobs
    def set_lifetimes(self, **values: float) -> Lifetimes:
        return self.sandbox.set_lifetimes(**values)

    def set_ecps(self, mode: str, delay_ms: int = 0, national_id: str | None = None) -> None:
        self.sandbox.set_ecps(mode, delay_ms, national_id)

    def approve(self, auth_req_id: str) -> None:
        self.sandbox.provider.ciba_decide(auth_req_id, True, self.sandbox.clock())

    def deny(self, auth_req_id: str) -> None:
        self.sandbox.provider.ciba_decide(auth_req_id, False, self.sandbox.clock())

    def pending(self) -> list[dict[str, Any]]:
        now = self.sandbox.clock()
        return [
            {
                "auth_req_id": r.id,
                "national_id": r.national_id,
                "binding_message": r.binding_message,
                "channel": r.channel,
            }
            for r in self.sandbox.provider.pending_ciba(now)
        ]

    def reset(self) -> None:
        self.sandbox.set_lifetimes(**{**Lifetimes().model_dump(), **self.defaults})
        self.sandbox.set_ecps("approve", 0)
        self.sandbox.clear_ecps_overrides()

    # ----- clients
    def client(self, kind: str = "mtls") -> httpx.Client:
        """An httpx client trusting the test CA; ``kind="mtls"`` presents the LPS certificate."""
        identity = self.mtls_identity if kind == "mtls" else None
        return httpx.Client(verify=client_context(self.ca_bundle, identity))

    def client_auth(self, kind: str = "mtls") -> dict[str, str]:
        """Form fields authenticating the client (``client_secret_post`` for ``secret``)."""
        if kind == "mtls":
            return {"client_id": self.mtls_client_id}
        return {"client_id": self.secret_client_id, "client_secret": self.secret_client_secret}

    def ciba_login(self, national_id: str | None = None, kind: str = "mtls", binding_message: str = "42") -> dict:
        """A complete CIBA authentication (e-CPS must approve); returns the token response."""
        with self.client(kind) as http:
            r = http.post(
                self.ciba_endpoint,
                data={
                    **self.client_auth(kind),
                    "scope": "openid scope_all",
                    "acr_values": "eidas1",
                    "login_hint": national_id or self.national_id,
                    "binding_message": binding_message,
                    "channel": "CARD",
                },
            )
            r.raise_for_status()
            rid = r.json()["auth_req_id"]
            for _ in range(200):
                t = http.post(
                    self.token_endpoint,
                    data={
                        **self.client_auth(kind),
                        "grant_type": "urn:openid:params:grant-type:ciba",
                        "auth_req_id": rid,
                    },
                )
                if t.status_code == 200:
                    result: dict = t.json()
                    return result
                if t.json().get("error") not in ("authorization_pending", "slow_down"):
                    raise AssertionError(f"CIBA refusée: {t.text}")
                import time

                time.sleep(0.02)
            raise AssertionError("CIBA: pas de réponse de l'e-CPS simulée")


def build_psc(
    pki: Pki, server_cert: IssuedCertificate, clock: Callable[[], float] | None = None, **overrides: Any
) -> PscHandle:
    """Start a sandbox; ``overrides`` are ``PscConfig`` fields (``lifetimes`` merged with fast defaults);
    ``clock`` replaces the real time (tests that watch requests expire advance it instead of sleeping)."""
    mtls = pki.ensure_client("psc-test-lps-mtls", MTLS_STRUCT_ID, "lps-test-mtls")
    admin_token = overrides.pop("admin_token", secrets.token_urlsafe(24))
    secret = secrets.token_urlsafe(24)
    web_secret = secrets.token_urlsafe(24)
    redirect = "https://127.0.0.1/callback"
    lifetimes = {**FAST_DEFAULTS, **overrides.pop("lifetimes", {})}
    clients = [
        ClientConfig(
            client_id="lps-mtls",
            name="LPS de test (Espace de Confiance)",
            tls_client_auth_subject_dn=mtls.subject_dn,
            espace_de_confiance=True,
        ),
        ClientConfig(client_id="lps-secret", name="LPS de test (secret)", secret=secret),
        ClientConfig(
            client_id="web-app",
            name="Application web de test",
            secret=web_secret,
            redirect_uris=[redirect],
            post_logout_redirect_uris=["https://127.0.0.1/logged-out"],
        ),
        *overrides.pop("clients", []),
    ]
    cfg = PscConfig(
        port=0,
        tls=TlsConfig(
            cert=Path(server_cert.cert_path), key=Path(server_cert.key_path), ca_bundle=pki.ca_bundle, crl=pki.crl_path
        ),
        admin_token=admin_token,
        lifetimes=Lifetimes.model_validate(lifetimes),
        clients=clients,
        **overrides,
    )
    sandbox = PscSandbox(cfg, clock) if clock is not None else PscSandbox(cfg)
    server = start_https(sandbox.app, pki, server_cert, ClientAuth.OPTIONAL)
    sandbox.set_base_url(server.url)
    return PscHandle(
        sandbox=sandbox,
        server=server,
        pki=pki,
        mtls_client_id="lps-mtls",
        mtls_cert=mtls,
        secret_client_id="lps-secret",
        secret_client_secret=secret,
        web_client_id="web-app",
        web_client_secret=web_secret,
        web_redirect_uri=redirect,
        admin_token=admin_token,
        defaults=lifetimes,
    )


@pytest.fixture(scope="module")
def psc_sandbox(pki: Pki, server_cert: IssuedCertificate) -> Iterator[PscHandle]:
    """A PSC sandbox shared by the test module (see the module docstring)."""
    handle = build_psc(pki, server_cert)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def psc_sandbox_factory(pki: Pki, server_cert: IssuedCertificate) -> Iterator[Callable[..., PscHandle]]:
    """Build private sandboxes: ``psc_sandbox_factory(lifetimes={...}, signing_alg="ES256")``."""
    started: list[PscHandle] = []

    def make(**overrides: Any) -> PscHandle:
        handle = build_psc(pki, server_cert, **overrides)
        started.append(handle)
        return handle

    yield make
    for h in started:
        h.stop()
