"""How a session is written into a shared store (JSON, optionally sealed with AES-GCM)."""

from __future__ import annotations

import json

from ..domain import Session
from .base import StoreUnavailable


def decode_key(key_b64: str) -> bytes:
    """The 32 bytes of an AES-256 key written as base64url (padding optional), nothing
    else in the string; ValueError otherwise. The configuration checks keys with it at
    load (config.py), so a key the codec would refuse never gets as far as a store."""
    import base64
    import binascii

    try:
        key = base64.b64decode(key_b64 + "=" * (-len(key_b64) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ValueError("sessions.encryption_key: 32 octets en base64url attendus")
    return key


class SessionCodec:
    """Serialises sessions for shared stores; with a key, AES-256-GCM so that a Redis dump or
    a copied SQLite file does not hand out PSC refresh tokens and API tokens.

    The session id is bound as associated data: a blob moved under another id fails to open.
    """

    def __init__(self, key_b64: str | None = None) -> None:
        self._aead = None
        if key_b64:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead = AESGCM(decode_key(key_b64))

    def dump(self, s: Session) -> str:
        raw = json.dumps(s.to_dict(), separators=(",", ":"))
        if self._aead is None:
            return raw
        import base64
        import os

        nonce = os.urandom(12)
        ct = self._aead.encrypt(nonce, raw.encode(), s.id.encode())
        return "v1." + base64.urlsafe_b64encode(nonce + ct).decode()

    def load(self, data: str | bytes, sid: str | None = None) -> Session:
        text = data.decode() if isinstance(data, bytes) else data
        if text.startswith("v1."):
            if self._aead is None:
                raise StoreUnavailable("session chiffrée mais aucune clé configurée (sessions.encryption_key)")
            import base64

            blob = base64.urlsafe_b64decode(text[3:])
            if sid is None:
                raise StoreUnavailable("identifiant de session requis pour déchiffrer")
            try:
                text = self._aead.decrypt(blob[:12], blob[12:], sid.encode()).decode()
            except Exception as exc:
                raise StoreUnavailable("session illisible (clé de chiffrement différente ?)") from exc
        return Session.from_dict(json.loads(text))
