"""Assembling a running guichet from its configuration (used by `serve`, `up` and tests)."""

from __future__ import annotations

from typing import Any

from confiance.core.jose import KeyStore
from confiance.pki import Pki

from .config import GuichetConfig
from .db import Database
from .files import FileStore
from .services import GuichetService, JwksFileReportVerifier, ServiceSettings


def build_service(cfg: GuichetConfig, **overrides: Any) -> GuichetService:
    """Database (migrated), file store, trust-list keys, optional PKI and conformity keys."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(cfg.resolved_database_url())
    verifier = None
    if cfg.conformity_jwks_file is not None:
        verifier = JwksFileReportVerifier(cfg.conformity_jwks_file)
    service = GuichetService(
        db,
        FileStore(cfg.data_dir / "files"),
        KeyStore(cfg.data_dir / "trust-list-keys.json", algs=("ES256",)),
        settings=ServiceSettings(
            validity_years=cfg.validity_years,
            max_upload_bytes=cfg.max_upload_bytes,
            conformity_max_age_days=cfg.conformity_max_age_days,
            trust_list_ttl_seconds=cfg.trust_list_ttl_seconds,
            token_ttl_days=cfg.token_ttl_days,
            issuer=cfg.public_url.rstrip("/"),
            pentest_trust_bundle=cfg.pentest_trust_bundle,
        ),
        pki=Pki(cfg.pki_dir) if cfg.pki_dir is not None else None,
        conformity_verifier=verifier,
        **overrides,
    )
    service.initialize()
    return service
