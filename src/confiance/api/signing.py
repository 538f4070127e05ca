"""Compact JWS signing on the hot path.

joserfc's generic encoder rebuilds the header and key wrappers on every call (≈ 9k ES256
JWTs/s here against ≈ 24k for the raw signature). The token endpoint and
``/signsessiondata`` sign on every request, so the protected header of the current key
is encoded once and the signing input is signed directly with the ``cryptography`` key.
Verification stays on the shared strict ``confiance.core.jose.verify_jwt``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from confiance.core.encoding import b64url
from confiance.core.jose import KeyStore

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


class FastSigner:
    """Signs with the current key of one algorithm of a KeyStore; follows rotations by kid."""

    def __init__(self, keys: KeyStore, alg: str) -> None:
        self.keys = keys
        self.alg = alg
        self._cache: dict[str, tuple[str, str, Any]] = {}  # typ -> (kid, header b64, private key)

    def _prepared(self, typ: str | None) -> tuple[str, Any]:
        key = self.keys.signing_key(self.alg)
        kid = key.kid or ""
        tkey = typ or ""
        cached = self._cache.get(tkey)
        if cached is None or cached[0] != kid:
            header: dict[str, str] = {"alg": self.alg, "kid": kid}
            if typ:
                header["typ"] = typ
            cached = (kid, b64url(json.dumps(header, separators=(",", ":")).encode()), key.private_key)
            self._cache[tkey] = cached
        return cached[1], cached[2]

    def sign_bytes(self, payload: bytes, typ: str | None = None) -> str:
        h64, priv = self._prepared(typ)
        signing_input = f"{h64}.{b64url(payload)}"
        data = signing_input.encode("ascii")
        if self.alg == "ES256":
            assert isinstance(priv, ec.EllipticCurvePrivateKey)
            r, s = decode_dss_signature(priv.sign(data, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            assert isinstance(priv, rsa.RSAPrivateKey)
            sig = priv.sign(data, padding.PKCS1v15() if self.alg == "RS256" else _PSS, hashes.SHA256())
        return f"{signing_input}.{b64url(sig)}"

    def sign_claims(self, claims: Mapping[str, Any], typ: str = "at+jwt") -> str:
        return self.sign_bytes(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), typ)
