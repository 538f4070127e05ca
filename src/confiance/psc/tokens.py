"""JWT signing on the hot path, and verification of tokens the sandbox issued.

Each grant signs an access token and an ID token. joserfc's generic encoder re-derives
headers and key objects on every call; here the protected header of each key is encoded
once and the payload is signed directly with the ``cryptography`` key, which is where the
time goes (RS256 ~1 ms, ES256 ~0.05 ms). Verification goes through the shared strict
``verify_jwt`` (explicit algorithm list, no ``none``/HMAC, known ``kid`` only).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from confiance.core.encoding import b64url
from confiance.core.jose import KeyStore, TokenError, verify_jws, verify_jwt

from .config import SIGNING_ALGS

__all__ = ["JwtSigner", "TokenError", "at_hash", "b64url"]


def at_hash(access_token: str) -> str:
    """OIDC ``at_hash``: left half of SHA-256 (all our algorithms use SHA-256)."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return b64url(digest[:16])


_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


class JwtSigner:
    """Signs JWTs with the current key of an algorithm; caches per-key header bytes."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self._cache: dict[tuple[str, str], tuple[str, Any]] = {}

    def _prepared(self, alg: str, typ: str) -> tuple[str, str, Any]:
        key = self.keys.signing_key(alg)
        kid = key.kid or ""
        cached = self._cache.get((alg, typ))
        if cached is None or cached[0] != kid:
            header = {"alg": alg, "typ": typ, "kid": kid}
            h64 = b64url(json.dumps(header, separators=(",", ":")).encode())
            priv = key.private_key
            self._cache[(alg, typ)] = (kid, (h64, priv))
            return kid, h64, priv
        h64, priv = cached[1]
        return kid, h64, priv

    def sign(self, claims: Mapping[str, Any], alg: str = "RS256", typ: str = "JWT") -> str:
        if alg not in SIGNING_ALGS:
            raise ValueError(f"algorithme de signature non supporté: {alg}")
        _kid, h64, priv = self._prepared(alg, typ)
        payload = b64url(orjson.dumps(claims))  # compact UTF-8, like json.dumps(separators, ensure_ascii=False)
        signing_input = f"{h64}.{payload}".encode("ascii")
        if alg == "ES256":
            assert isinstance(priv, ec.EllipticCurvePrivateKey)
            r, s = decode_dss_signature(priv.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            assert isinstance(priv, rsa.RSAPrivateKey)
            pad = padding.PKCS1v15() if alg == "RS256" else _PSS
            sig = priv.sign(signing_input, pad, hashes.SHA256())
        return f"{h64}.{payload}.{b64url(sig)}"

    def verify(self, token: str, issuer: str, *, require_exp: bool = True, now: float | None = None) -> dict[str, Any]:
        """Claims of a token we signed; raises ``TokenError`` (tampered, wrong kid/alg, expired)."""
        return verify_jwt(
            token,
            self.keys.keyset,
            algorithms=SIGNING_ALGS,
            issuer=issuer,
            require=("exp", "iat") if require_exp else ("iat",),
            now=now,
        )

    def verify_ignoring_expiry(self, token: str, issuer: str) -> dict[str, Any]:
        """Signature, algorithm, ``kid`` and issuer only: for ``id_token_hint``, which OIDC
        RP-Initiated Logout lets an expired ID token be."""
        if not isinstance(token, str) or token.count(".") != 2 or len(token) > 16384:
            raise TokenError("jeton mal formé")
        payload = verify_jws(token, self.keys.keyset, algorithms=SIGNING_ALGS)
        try:
            claims = json.loads(payload)
        except ValueError:
            raise TokenError("jeton mal formé") from None
        if not isinstance(claims, dict) or claims.get("iss") != issuer:
            raise TokenError("émetteur invalide")
        return claims

    def rotate(self, keep_for_seconds: float) -> None:
        """New keys for every algorithm; old ones stay published ``keep_for_seconds``."""
        self.keys.rotate(keep_for_seconds)
        self._cache.clear()
