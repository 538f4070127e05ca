"""Configuration of the PSC sandbox (TOML, validated; unknown keys are errors).

Every lifetime is configurable because other components' tests need to watch tokens and
sessions expire in seconds, not in the minutes PSC uses. Defaults are PSC's (CI-SIS
transport volet): access token 2 min, refresh 30 min, session 4 h absolute / 30 min idle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from confiance.core.config import StrictModel
from confiance.core.trustlist import TrustListSettings
from confiance.pki import normalize_dn

REALM = "esante-wallet"
SIGNING_ALGS = ("RS256", "ES256", "PS256")
EcpsMode = Literal["approve", "deny", "never", "manual"]


class Lifetimes(StrictModel):
    """Durations in seconds (floats so tests can use sub-second values)."""

    access_token: float = Field(default=120, gt=0)
    refresh_token: float = Field(default=1800, gt=0)
    session_absolute: float = Field(default=4 * 3600, gt=0)
    session_idle: float = Field(default=1800, gt=0)
    id_token: float = Field(default=120, gt=0)
    authorization_code: float = Field(default=60, gt=0)
    ciba_request: float = Field(default=120, gt=0)
    ciba_interval: float = Field(default=5, ge=0)
    login_transaction: float = Field(default=600, gt=0)


class EcpsPolicy(StrictModel):
    """What the simulated e-CPS app does with a CIBA request.

    ``approve``/``deny`` answer after ``delay_ms``; ``never`` lets the request expire;
    ``manual`` waits for a person on the ``/sandbox/ecps`` page or the CLI.
    """

    mode: EcpsMode = "approve"
    delay_ms: int = Field(default=0, ge=0, le=3_600_000)


class ClientConfig(StrictModel):
    """A relying party (LPS, proxy, web application) registered with the sandbox."""

    client_id: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._:@-]+$")
    name: str = ""
    secret: str | None = Field(default=None, min_length=8, max_length=512)
    tls_client_auth_subject_dn: str | None = None
    espace_de_confiance: bool = False
    # With trust_list.enforce = "flagged": its certificate must belong to a valid habilitation.
    trust_list_required: bool = False
    redirect_uris: list[str] = Field(default_factory=list)
    post_logout_redirect_uris: list[str] = Field(default_factory=list)
    grant_types: list[str] = Field(
        default_factory=lambda: [
            "urn:openid:params:grant-type:ciba",
            "authorization_code",
            "refresh_token",
        ]
    )
    id_token_signed_response_alg: Literal["RS256", "ES256", "PS256"] | None = None
    access_token_signed_response_alg: Literal["RS256", "ES256", "PS256"] | None = None
    userinfo_signed_response_alg: Literal["RS256", "ES256", "PS256"] | None = None

    @field_validator("tls_client_auth_subject_dn")
    @classmethod
    def _norm_dn(cls, v: str | None) -> str | None:
        return normalize_dn(v) if v else v

    @model_validator(mode="after")
    def _auth_method(self) -> ClientConfig:
        if self.secret is None and self.tls_client_auth_subject_dn is None:
            raise ValueError("un client doit avoir un secret ou un DN de certificat (tls_client_auth_subject_dn)")
        if self.espace_de_confiance and self.tls_client_auth_subject_dn is None:
            raise ValueError("un client « Espace de Confiance » doit déclarer tls_client_auth_subject_dn (mTLS)")
        return self


class TlsConfig(StrictModel):
    cert: Path
    key: Path
    ca_bundle: Path | None = None
    crl: Path | None = None


class PscConfig(StrictModel):
    """The whole sandbox configuration (``confiance psc serve --config psc.toml``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=9443, ge=0, le=65535)
    # Public base URL (scheme://host:port) used to build the issuer; defaults to https://host:port.
    base_url: str | None = None
    tls: TlsConfig | None = None
    keys_path: Path | None = None
    signing_alg: Literal["RS256", "ES256", "PS256"] = "RS256"
    admin_token: str | None = Field(default=None, min_length=16)
    trusted_proxies: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=10 * 1024 * 1024)
    lifetimes: Lifetimes = Field(default_factory=lambda: Lifetimes())
    ecps_default: EcpsPolicy = Field(default_factory=lambda: EcpsPolicy())
    clients: list[ClientConfig] = Field(default_factory=list)
    # Extra identities (YAML file, same format as the seeded data file) and whether to seed.
    identities_file: Path | None = None
    seed_identities: bool = True
    # Legacy JSON file of admin-API additions (read at start if present; the store keeps them now).
    state_file: Path | None = None
    # Live state (sessions, refresh families, CIBA requests, revocations, admin additions):
    # "memory", "sqlite:///path/to/file.sqlite3" or "redis://host:port/db". Default: SQLite
    # next to state_file or keys_path, else memory (one process only).
    store: str | None = Field(default=None, pattern=r"^(memory|sqlite:.+|rediss?://.+|unix://.+)$")
    store_prefix: str = Field(default="psc:", min_length=1, max_length=64)
    # Worker processes of `confiance psc serve` (they share the store; memory needs 1).
    workers: int = Field(default=1, ge=1, le=64)
    # Trust-space mode: admit a client only while the guichet lists a valid habilitation for its certificate.
    trust_list: TrustListSettings | None = None

    def store_url(self) -> str:
        if self.store:
            return self.store
        if self.state_file is not None:
            return f"sqlite:///{self.state_file.with_suffix('.sqlite3').resolve()}"
        if self.keys_path is not None:
            return f"sqlite:///{self.keys_path.with_name('psc-state.sqlite3').resolve()}"
        return "memory"

    def issuer_base(self, bound_port: int | None = None) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{bound_port if bound_port is not None else self.port}"
