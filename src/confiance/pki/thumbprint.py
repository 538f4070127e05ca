"""Certificate identity helpers shared by every component.

RFC 8705 binds tokens to a certificate through ``x5t#S256``; the trust space compares
subject DNs. Both must be computed the same way everywhere, so they live here.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from confiance.core.encoding import b64url


def x5t_s256(cert: x509.Certificate | bytes) -> str:
    """RFC 8705 ``x5t#S256``: base64url(SHA-256(DER)). Accepts a certificate or its DER."""
    der = cert if isinstance(cert, bytes) else cert.public_bytes(serialization.Encoding.DER)
    return b64url(hashlib.sha256(der).digest())


def subject_dn(cert: x509.Certificate) -> str:
    """The subject DN as an RFC 4514 string: the one canonical form clients are registered with."""
    return cert.subject.rfc4514_string()


def issuer_dn(cert: x509.Certificate) -> str:
    return cert.issuer.rfc4514_string()


def normalize_dn(dn: str) -> str:
    """Canonicalise a DN written by a person (spaces after commas, any attribute case).

    Registered DNs come from configuration files; comparing them byte for byte with the
    RFC 4514 form would refuse ``CN=a, OU=b`` for ``CN=a,OU=b``.
    """
    parts = []
    for raw in _split_dn(dn):
        key, _, value = raw.partition("=")
        parts.append(f"{key.strip().upper()}={value.strip()}")
    return ",".join(parts)


def _split_dn(dn: str) -> list[str]:
    out: list[str] = []
    current = []
    escaped = False
    for ch in dn:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == ",":
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    if current:
        out.append("".join(current))
    return [p for p in out if p.strip()]


def load_pem_certificate(data: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data)


def der_to_certificate(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)
