"""The client certificate of a request, from the TLS layer or a trusted reverse proxy.

Behind nginx/HAProxy the TLS connection ends at the reverse proxy, which forwards the
certificate in the RFC 9440 ``Client-Cert`` header (``:base64(DER):``). That header is
believed only from configured reverse-proxy addresses; from anyone else it is ignored,
otherwise any caller could claim any identity. Header certificates are re-verified
(chain to the bundle, CRL) because the header crosses a hop we do not control.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509 import verification

from confiance.pki.thumbprint import x5t_s256

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ClientCertificate:
    der: bytes
    source: str = "tls"  # "tls" or "header"

    @cached_property
    def cert(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @cached_property
    def subject_dn(self) -> str:
        return self.cert.subject.rfc4514_string()

    @cached_property
    def x5t_s256(self) -> str:
        return x5t_s256(self.der)

    @property
    def serial(self) -> int:
        return self.cert.serial_number

    def attribute(self, oid: x509.ObjectIdentifier) -> str | None:
        values = self.cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else None


def parse_networks(items: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(i, strict=False) for i in items)


def peer_is_trusted(scope: Mapping[str, Any], trusted: tuple[IPNetwork, ...]) -> bool:
    client = scope.get("client")
    if not client or not trusted:
        return False
    try:
        addr = ipaddress.ip_address(client[0])
    except ValueError:
        return False
    return any(addr in net for net in trusted)


@dataclass
class CertificateVerifier:
    """Chain + CRL check for certificates that did not come through our own TLS handshake."""

    ca_bundle: Path
    crl: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _crl_mtime: float | None = None
    _revoked: frozenset[int] = frozenset()

    @cached_property
    def _verifier(self) -> Any:
        certs = x509.load_pem_x509_certificates(self.ca_bundle.read_bytes())
        store = verification.Store(certs)
        # IGC-Santé ORG AUTH_CLI certificates identify a structure by subject DN and carry no
        # SAN, which the Web PKI default policy would require.
        ee = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
            x509.SubjectAlternativeName, verification.Criticality.AGNOSTIC, None
        )
        return (
            verification.PolicyBuilder()
            .store(store)
            .extension_policies(ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
            .build_client_verifier()
        )

    def revoked_serials(self) -> frozenset[int]:
        if self.crl is None:
            return frozenset()
        try:
            mtime = os.stat(self.crl).st_mtime
        except FileNotFoundError:
            return frozenset()
        if mtime != self._crl_mtime:
            with self._lock:
                serials: set[int] = set()
                data = self.crl.read_bytes()
                for block in data.split(b"-----END X509 CRL-----"):
                    if b"-----BEGIN X509 CRL-----" in block:
                        crl = x509.load_pem_x509_crl(block + b"-----END X509 CRL-----\n")
                        serials.update(r.serial_number for r in crl)
                self._revoked = frozenset(serials)
                self._crl_mtime = mtime
        return self._revoked

    def verify(self, cert: x509.Certificate) -> str | None:
        """None when valid, else the reason."""
        try:
            self._verifier.verify(cert, [])
        except verification.VerificationError as exc:
            return f"chaîne de certificat invalide: {exc}"
        if cert.serial_number in self.revoked_serials():
            return "certificat révoqué"
        if cert.not_valid_after_utc < dt.datetime.now(dt.UTC):
            return "certificat expiré"
        return None


def from_header(value: str) -> bytes | None:
    """Decode an RFC 9440 ``Client-Cert`` value (``:base64:``); None if malformed."""
    value = value.strip()
    if len(value) < 3 or not (value.startswith(":") and value.endswith(":")):
        return None
    try:
        return base64.b64decode(value[1:-1], validate=True)
    except (binascii.Error, ValueError):
        return None


def client_certificate(
    scope: Mapping[str, Any],
    trusted_proxies: tuple[IPNetwork, ...] = (),
    verifier: CertificateVerifier | None = None,
) -> ClientCertificate | None:
    """The caller's verified certificate, or None.

    The TLS extension is filled by ``core.server`` only with certificates OpenSSL already
    verified. The header is read only when the TCP peer is a trusted reverse proxy.
    """
    tls = scope.get("extensions", {}).get("tls") if scope.get("extensions") else None
    if tls and tls.get("client_cert_der"):
        return ClientCertificate(tls["client_cert_der"], "tls")
    if trusted_proxies and peer_is_trusted(scope, trusted_proxies):
        for name, value in scope.get("headers", []):
            if name == b"client-cert":
                der = from_header(value.decode("latin-1"))
                if der is None:
                    return None
                cc = ClientCertificate(der, "header")
                try:
                    cert = cc.cert
                except ValueError:
                    return None
                if verifier is not None and verifier.verify(cert) is not None:
                    return None
                return cc
    return None


def encode_header(der: bytes) -> str:
    """RFC 9440 encoding, for reverse proxies and tests."""
    return ":" + base64.b64encode(der).decode("ascii") + ":"
