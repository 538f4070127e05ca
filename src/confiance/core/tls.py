"""TLS contexts for servers and clients of the trust space.

Every service requires TLS 1.2 or later (PSC référentiel). Servers that check client
certificates also check them against the CRL; because revocation must take effect on a
running service, the server context is rebuilt when the CRL file changes, and swapped in
for each new handshake through the SNI callback (called for every ClientHello, with or
without SNI).
"""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class ClientAuth(StrEnum):
    """Whether a server asks for a client certificate."""

    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"


@dataclass(frozen=True)
class ServerTLS:
    """What a server needs to speak TLS: its certificate and, for mTLS, whom to trust."""

    cert: Path
    key: Path
    ca_bundle: Path | None = None
    crl: Path | None = None
    client_auth: ClientAuth = ClientAuth.NONE


@dataclass(frozen=True)
class ClientIdentity:
    """An outbound TLS identity (certificate + key); ``None`` fields mean no client certificate."""

    cert: Path | None = None
    key: Path | None = None

    @property
    def key_id(self) -> str:
        return f"{self.cert}|{self.key}"


def _base_server_context(cfg: ServerTLS) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    # ECDHE + AEAD only for TLS 1.2; TLS 1.3 suites are always AEAD.
    ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!MD5:!DSS")
    ctx.load_cert_chain(str(cfg.cert), str(cfg.key))
    if cfg.client_auth is not ClientAuth.NONE:
        if cfg.ca_bundle is None:
            raise ValueError("client certificate authentication needs a CA bundle")
        ctx.load_verify_locations(cafile=str(cfg.ca_bundle))
        ctx.verify_mode = ssl.CERT_REQUIRED if cfg.client_auth is ClientAuth.REQUIRED else ssl.CERT_OPTIONAL
        if cfg.crl is not None and cfg.crl.exists():
            ctx.load_verify_locations(cafile=str(cfg.crl))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


class ReloadingServerContext:
    """A server context that follows its CRL file: a revoked certificate fails the next handshake."""

    def __init__(self, cfg: ServerTLS) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._mtime = self._crl_mtime()
        self._current = _base_server_context(cfg)
        self.context = _base_server_context(cfg)
        self.context.sni_callback = self._on_hello

    def _crl_mtime(self) -> float | None:
        if self.cfg.crl is None:
            return None
        try:
            return os.stat(self.cfg.crl).st_mtime_ns / 1e9
        except FileNotFoundError:
            return None

    def _on_hello(self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if self.cfg.client_auth is not ClientAuth.NONE and self.cfg.crl is not None:
            mtime = self._crl_mtime()
            if mtime != self._mtime:
                with self._lock:
                    if mtime != self._mtime:
                        self._current = _base_server_context(self.cfg)
                        self._mtime = mtime
            sslobj.context = self._current
        return None


def server_context(cfg: ServerTLS) -> ssl.SSLContext:
    return ReloadingServerContext(cfg).context


def client_context(ca_bundle: Path | str | None, identity: ClientIdentity | None = None) -> ssl.SSLContext:
    """An outbound context: TLS 1.2+, server verified against the trust-space bundle."""
    ctx = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if identity is not None and identity.cert is not None:
        ctx.load_cert_chain(str(identity.cert), str(identity.key) if identity.key else None)
    return ctx
