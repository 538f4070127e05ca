"""Configuration of the API Pro Santé Connectée (one TOML file for both servers).

Lifetimes follow the CI-SIS transport volet: API access tokens live 1 to 4 hours (ANS's
conformity API uses 4 h), so anything outside that range is a configuration error rather
than a silently clamped value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from confiance.core.clients_file import ClientsFile
from confiance.core.clients_file import merge_clients as _merge
from confiance.core.config import StrictModel, load_config
from confiance.core.trustlist import TrustListSettings
from confiance.pki import normalize_dn

TOKEN_ALGS = ("RS256", "ES256", "PS256")
TokenAlg = Literal["RS256", "ES256", "PS256"]
ClientLevel = Literal["espace_confiance", "sandbox"]
SCOPE_RE = r"^[A-Za-z0-9._:/-]+$"

# The three resource services this package implements; their path prefix on the RS.
SERVICE_NAMES = ("signsessiondata", "insi", "dmp")


class TlsFiles(StrictModel):
    cert: Path
    key: Path
    ca_bundle: Path
    crl: Path | None = None


class ApiClient(StrictModel):
    """A registered API client: ``Client_ID_AS`` ↔ certificate subject DN ↔ allowed scopes."""

    client_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$")
    dn: str = Field(min_length=3, max_length=1024)
    scopes: list[str] = Field(default_factory=list)
    # "sandbox" clients may authenticate with a client secret; Espace de Confiance ones only by mTLS.
    level: ClientLevel = "espace_confiance"
    # SHA-256 (hex) of the client secret; generated secrets are long and random, so a fast
    # hash is enough and keeps the token endpoint fast (argon2 would cost ~50 ms per call).
    secret_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    # Resource servers of other editors may introspect tokens issued for these audiences.
    introspect_audiences: list[str] = Field(default_factory=list)
    description: str = ""
    # With trust_list.enforce = "flagged": this client's certificate must belong to a valid habilitation.
    trust_list_required: bool = False

    @field_validator("dn")
    @classmethod
    def _dn(cls, v: str) -> str:
        if "=" not in v:
            raise ValueError("DN attendu au format RFC 4514, p. ex. CN=mon-lps,OU=3123456789,C=FR")
        return normalize_dn(v)

    @model_validator(mode="after")
    def _secret_only_for_sandbox(self) -> ApiClient:
        if self.secret_sha256 is not None and self.level != "sandbox":
            raise ValueError("un secret client n'est admis que pour le niveau « sandbox »")
        return self


class ServiceDef(StrictModel):
    """How a resource service is named to the AS: its audience and the scopes it accepts."""

    audience: str | None = None  # default: the service's base URL
    scopes: list[str] | None = None  # default: [name]


class PscValidation(StrictModel):
    """How the AS checks the PSC access token it receives as ``subject_token``."""

    issuer: str
    mode: Literal["introspection", "jwks"] = "introspection"
    introspection_endpoint: str | None = None  # default: {issuer}/protocol/openid-connect/token/introspect
    jwks_uri: str | None = None  # default: {issuer}/protocol/openid-connect/certs
    # Credentials of the AS at PSC (introspection needs an authenticated client).
    client_id: str | None = None
    client_secret: str | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    ca_bundle: Path | None = None
    # Sandbox convenience (`confiance up`): register the AS's introspection client at the PSC
    # sandbox through its admin API before the first introspection. Never set against real PSC.
    sandbox_admin_url: str | None = None
    sandbox_admin_token: str | None = None
    client_dn: str | None = None  # subject DN of client_cert, sent with the registration
    # An introspection result is reused at most this long, and never past the token's exp:
    # it bounds how long a PSC session ended at PSC can still be exchanged.
    cache_seconds: float = Field(10.0, ge=0, le=120)
    cache_max_entries: int = Field(100_000, ge=10)
    timeout_seconds: float = Field(5.0, gt=0, le=60)

    @property
    def introspection_url(self) -> str:
        return self.introspection_endpoint or f"{self.issuer}/protocol/openid-connect/token/introspect"

    @property
    def jwks_url(self) -> str:
        return self.jwks_uri or f"{self.issuer}/protocol/openid-connect/certs"

    @model_validator(mode="after")
    def _creds(self) -> PscValidation:
        if self.mode == "introspection" and self.client_id is None:
            raise ValueError("psc.client_id est requis en mode introspection")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("psc.client_cert et psc.client_key vont ensemble")
        return self


class AuthorizationServerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(9444, ge=0, le=65535)
    issuer: str | None = None  # default https://host:port
    token_alg: TokenAlg = "ES256"  # see docs/api.md: RS256 signing caps exchanges below target
    token_lifetime: int = Field(4 * 3600, ge=3600, le=4 * 3600)
    refresh_tokens: bool = False
    refresh_token_lifetime: int = Field(4 * 3600, ge=60, le=4 * 3600)
    keys_file: Path | None = None
    clients_file: Path | None = None  # JSON written by `confiance api clients …`
    revocations_file: Path | None = None  # revoked jti survive restarts (None = in memory)
    max_body_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)


class ResourceServerConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(9445, ge=0, le=65535)
    base_url: str | None = None  # default https://host:port
    signing_alg: TokenAlg = "ES256"
    keys_file: Path | None = None
    access_log: Path | None = None  # hash-chained JSON lines; None = in memory only
    admin_token: str | None = Field(None, min_length=16)  # GET /admin/access-log (operators, conformity)
    verified_token_cache: int = Field(50_000, ge=0)
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=1024 * 1024)
    services: dict[str, ServiceDef] = Field(default_factory=dict)

    @field_validator("services")
    @classmethod
    def _known(cls, v: dict[str, ServiceDef]) -> dict[str, ServiceDef]:
        unknown = set(v) - set(SERVICE_NAMES)
        if unknown:
            raise ValueError(f"services inconnus: {', '.join(sorted(unknown))} (connus: {', '.join(SERVICE_NAMES)})")
        return v


class ApiConfig(StrictModel):
    tls: TlsFiles
    psc: PscValidation
    authorization_server: AuthorizationServerConfig = Field(
        default_factory=lambda: AuthorizationServerConfig.model_validate({})
    )
    resource_server: ResourceServerConfig = Field(default_factory=lambda: ResourceServerConfig.model_validate({}))
    clients: list[ApiClient] = Field(default_factory=list)
    trusted_proxies: list[str] = Field(default_factory=list)
    # Trust-space mode: admit only certificates of valid habilitations (guichet trust list).
    trust_list: TrustListSettings | None = None

    @model_validator(mode="after")
    def _unique_clients(self) -> ApiConfig:
        ids = [c.client_id for c in self.clients]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"client_id en double: {', '.join(sorted(dup))}")
        return self

    @classmethod
    def load(cls, path: Path | str) -> ApiConfig:
        return load_config(path, cls)


def clients_file(path: Path) -> ClientsFile[ApiClient]:
    """The JSON file ``confiance api clients add`` writes and the running AS re-reads."""
    return ClientsFile(path, ApiClient)


def merge_clients(configured: list[ApiClient], registered: list[ApiClient]) -> list[ApiClient]:
    """Clients registered with the CLI replace configured ones of the same ``client_id``."""
    return _merge(configured, registered, key=lambda c: c.client_id, configured_wins=False)
