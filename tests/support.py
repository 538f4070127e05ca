"""Helpers for tests that start real HTTPS services."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from confiance.core.jose import KeyStore
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


def habilitation(
    hid: int, role: str, env: str, x5t: str, relies_on: Any = (), valid_until: str | None = None, **kw: Any
) -> dict[str, Any]:
    """One trust-list entry as the guichet publishes it."""
    return {
        "id": hid,
        "role": role,
        "environment": env,
        "holder": {"name": f"Org {hid}"},
        "valid_until": valid_until or (datetime.now(UTC) + timedelta(days=365)).isoformat(),
        "at_risk": kw.pop("at_risk", False),
        "relies_on": list(relies_on),
        "components": [{"kind": "LPS", "name": "c", "certificates": [{"x5t#S256": x5t, "subject_dn": "CN=c"}]}],
        **kw,
    }


class TrustListServer:
    """Stands for the guichet's /trust-list and /trust-list/jwks (signed like the real one).

    Enforcement tests need to publish, withdraw, go down and tamper at will; the real
    guichet's list is exercised end to end by the demo test.
    """

    def __init__(self, keys: KeyStore | None = None) -> None:
        keys = keys or KeyStore(None, algs=("ES256",))
        self.keys = keys
        self.habilitations: list[dict] = []
        self.up = True
        self.tamper = False

    def app(self) -> Starlette:
        async def trust_list(_request) -> Response:
            if not self.up:
                return PlainTextResponse("down", status_code=503)
            now = int(time.time())
            token = self.keys.sign(
                {"iss": "guichet", "iat": now, "exp": now + 3600, "habilitations": self.habilitations}
            )
            if self.tamper:
                h, _p, s = token.split(".")
                other = KeyStore(None).sign({"iss": "guichet", "iat": now, "exp": now + 3600, "habilitations": []})
                token = f"{h}.{other.split('.')[1]}.{s}"
            return PlainTextResponse(token)

        async def jwks(_request) -> Response:
            return JSONResponse(self.keys.jwks())

        return Starlette(routes=[Route("/trust-list", trust_list), Route("/trust-list/jwks", jwks)])

    def start(self) -> TrustListServer:
        self.server = ServerThread(self.app(), ServiceConfig(port=0)).start()
        self.url = self.server.url
        return self

    def stop(self) -> None:
        self.server.stop()
