"""Verifiers of the conformity tool's signed reports (the ``conformity.ReportVerifier``
protocol): against a JWKS given in memory, or the tool's published JWKS file, re-read when
it changes."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from confiance.core.jose import TokenError, verify_jws

from ..domain.errors import DomainError


class JwksReportVerifier:
    """Conformity reports verified against the tool's published JWKS (RS/PS/ES256 only)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
            raise ValueError("JWKS de l'outil de conformité vide ou invalide")
        self.jwks = jwks

    def verify(self, token: str) -> bytes:
        token = token.strip()
        if token.count(".") != 2:
            raise DomainError(
                "rapport_non_signe", "le rapport de conformité doit être un JWS compact signé par l'outil"
            )
        try:
            return verify_jws(token, self.jwks)
        except (TokenError, ValueError) as exc:
            raise DomainError(
                "signature_invalide", "la signature du rapport de conformité ne correspond à aucune clé de l'outil"
            ) from exc


class JwksFileReportVerifier:
    """The conformity tool's JWKS read from its published file, re-read when the file changes
    (the tool may rotate its keys while the guichet runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._inner: JwksReportVerifier | None = None
        self._lock = threading.Lock()

    def verify(self, token: str) -> bytes:
        with self._lock:
            try:
                mtime = self.path.stat().st_mtime
            except OSError as exc:
                raise DomainError("verification_indisponible", "clés de l'outil de conformité introuvables") from exc
            if self._inner is None or mtime != self._mtime:
                try:
                    self._inner = JwksReportVerifier(json.loads(self.path.read_text()))
                except (OSError, ValueError) as exc:
                    raise DomainError("verification_indisponible", "clés de l'outil de conformité illisibles") from exc
                self._mtime = mtime
            inner = self._inner
        return inner.verify(token)
