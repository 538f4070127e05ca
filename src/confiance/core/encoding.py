"""Unpadded base64url (RFC 7515 §2), the one encoding JOSE, RFC 8705 and PKCE share.

A leaf module: it imports nothing from ``confiance``, so ``pki`` and every component can
use it without an import cycle.
"""

from __future__ import annotations

import base64
import binascii
import re

_ALPHABET = re.compile(rb"[A-Za-z0-9_-]*")


def b64url(data: bytes) -> str:
    """Unpadded base64url text of ``data`` (JWS segments, ``x5t#S256``, PKCE challenges)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """Bytes of unpadded (or padded) base64url text; ``ValueError`` on anything else.

    Strict on the alphabet: ``+``/``/`` or stray characters are refused rather than silently
    dropped, so two different strings never decode to the same bytes.
    """
    raw = text.encode("ascii") if isinstance(text, str) else text
    raw = raw.rstrip(b"=")
    if len(raw) % 4 == 1 or not _ALPHABET.fullmatch(raw):
        raise ValueError("base64url invalide")
    try:
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except binascii.Error as exc:
        raise ValueError(f"base64url invalide : {exc}") from None
