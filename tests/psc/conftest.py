"""Domain-level fixtures: a Provider with a controllable clock and no server."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from confiance.core.jose import KeyStore
from confiance.psc.config import SIGNING_ALGS, EcpsPolicy, Lifetimes
from confiance.psc.domain import Client, Credentials, Provider
from confiance.psc.identities import seeded_identities
from confiance.psc.store import MemoryStore
from confiance.psc.tokens import JwtSigner

ISSUER = "https://psc.test/auth/realms/esante-wallet"
CIBA = "urn:openid:params:grant-type:ciba"


@dataclass
class Clock:
    t: float = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture(scope="session")
def keystore() -> KeyStore:
    return KeyStore(None, algs=SIGNING_ALGS)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider(keystore: KeyStore) -> Provider:
    p = Provider(
        issuer=ISSUER,
        store=MemoryStore(),
        signer=JwtSigner(keystore),
        lifetimes=Lifetimes(ciba_interval=5),
        ecps_default=EcpsPolicy(mode="approve", delay_ms=0),
    )
    for ident in seeded_identities():
        p.add_identity(ident)
    p.add_client(Client("lps", secret="s3cret-s3cret"))
    p.add_client(Client("edc", subject_dn="CN=lps,OU=390000000001017,C=FR", espace_de_confiance=True))
    p.add_client(
        Client(
            "web",
            secret="web-secret-123",
            redirect_uris=("https://rp.test/cb",),
            post_logout_redirect_uris=("https://rp.test/bye",),
        )
    )
    return p


def nid(provider: Provider, index: int = 0) -> str:
    return list(provider.identities)[index]


def ciba_params(provider: Provider, **over: str) -> dict[str, str]:
    return {
        "scope": "openid scope_all",
        "acr_values": "eidas1",
        "login_hint": nid(provider),
        "binding_message": "42",
        "channel": "CARD",
        **over,
    }


def secret_creds() -> Credentials:
    return Credentials(client_id="lps", secret_post="s3cret-s3cret")
