"""Helpers for tests that start real HTTPS services."""

from __future__ import annotations

from pathlib import Path

from confiance.core.server import ServerThread, ServiceConfig
from confiance.core.tls import ClientAuth, ServerTLS
from confiance.pki import IssuedCertificate, Pki


def server_tls(pki: Pki, cert: IssuedCertificate, client_auth: ClientAuth = ClientAuth.REQUIRED) -> ServerTLS:
    return ServerTLS(
        cert=Path(cert.cert_path),
        key=Path(cert.key_path),
        ca_bundle=pki.ca_bundle,
        crl=pki.crl_path,
        client_auth=client_auth,
    )


def start_https(app: object, pki: Pki, cert: IssuedCertificate, client_auth: ClientAuth) -> ServerThread:
    return ServerThread(app, ServiceConfig(port=0, tls=server_tls(pki, cert, client_auth))).start()
