"""Configuration of `confiance guichet serve` (TOML, unknown keys refused)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from confiance.core.config import StrictModel


class TlsSection(StrictModel):
    cert: Path
    key: Path


class GuichetConfig(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str = "http://127.0.0.1:8000"  # issuer of the trust list
    database_url: str = ""  # default: sqlite in data_dir
    data_dir: Path = Path(".confiance/guichet")  # files/, keys.json
    pki_dir: Path | None = None  # test IGC-Santé used to issue certificates (absent: ordering refused)
    tls: TlsSection | None = None  # HTTPS if set (default plain HTTP on loopback)
    validity_years: int | None = Field(default=None, ge=1, le=10)  # default from parcours.yaml (3)
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    conformity_jwks_file: Path | None = None  # the conformity tool's published JWKS
    pentest_trust_bundle: Path | None = None  # roots for pentest PDF signers (default: pki_dir's root)
    conformity_max_age_days: int = Field(default=90, ge=1)
    trust_list_ttl_seconds: int = Field(default=3600, ge=60)
    token_ttl_days: int = Field(default=90, ge=1, le=3650)
    sweep_interval_seconds: int = Field(default=3600, ge=10)
    demo: bool = False  # seed demo data on first start

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'guichet.db').resolve()}"
