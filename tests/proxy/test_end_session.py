"""Ending a session at PSC (issue 16 §3): RP-initiated logout with ``id_token_hint`` as a
POST, and as a GET when the provider refuses the POST; a refusal is logged with its HTTP
status. The provider is a scripted OpenID provider over real HTTPS on 127.0.0.1 (the PSC
sandbox accepts both methods, so it cannot show the fallback)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from confiance.core.tls import ClientAuth
from confiance.pki import IssuedCertificate, Pki
from confiance.proxy.config import ProxyConfig
from confiance.proxy.core import ProxyCore
from confiance.proxy.domain import new_session
from tests.support import start_https


class Provider:
    """Answers logout as told: ``post`` and ``get`` are the statuses for each method."""

    def __init__(self) -> None:
        self.post = 405
        self.get = 200
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.url = ""

    def app(self) -> Starlette:
        async def discovery(_request: Request) -> Response:
            return JSONResponse(
                {
                    "issuer": self.url,
                    "token_endpoint": f"{self.url}/token",
                    "end_session_endpoint": f"{self.url}/logout",
                }
            )

        async def logout(request: Request) -> Response:
            if request.method == "POST":
                form = dict(await request.form())
                self.calls.append(("POST", {k: str(v) for k, v in form.items()}))
                return Response(status_code=self.post)
            self.calls.append(("GET", dict(request.query_params)))
            return Response("déconnecté", status_code=self.get)

        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", discovery),
                Route("/logout", logout, methods=["GET", "POST"]),
            ]
        )


@pytest.fixture(scope="module")
def provider(pki: Pki, server_cert: IssuedCertificate) -> Iterator[Provider]:
    p = Provider()
    srv = start_https(p.app(), pki, server_cert, ClientAuth.NONE)
    p.url = srv.url
    yield p
    srv.stop()


def _core(pki: Pki, server_cert: IssuedCertificate, provider: Provider, tmp: Path) -> ProxyCore:
    cfg = ProxyConfig.model_validate(
        {
            "server": {"port": 0, "cert": server_cert.cert_path, "key": server_cert.key_path},
            "outbound": {"ca_bundle": str(pki.ca_bundle), "psc_timeout": 10},
            "psc": {"discovery_url": f"{provider.url}/.well-known/openid-configuration"},
            "lps_clients": [{"client_id": "lps-x", "auth": "secret", "secret": "s" * 24}],
            "traces": {"url": f"sqlite:///{tmp}/traces-{secrets.token_hex(4)}.db"},
        }
    )
    return ProxyCore(cfg)


def _end(core: ProxyCore, caplog: pytest.LogCaptureFixture) -> None:
    async def run() -> None:
        s = new_session(
            client_id="lps-x",
            national_id="899700000001",
            tokens={"access_token": "at", "id_token": "the-id-token", "expires_in": 60},
            now=1000.0,
            absolute_ttl=3600,
            idle_ttl=600,
            dn=None,
        )
        await core.store.create(s)
        with caplog.at_level(logging.WARNING, logger="confiance.proxy"):
            await core.end_session(s.id, "disconnect")
        await core.factory.aclose()
        core.trace_store.close()

    asyncio.run(run())


def test_get_with_id_token_hint_when_post_is_refused(
    pki: Pki, server_cert: IssuedCertificate, provider: Provider, tmp_path: Path, caplog: Any
) -> None:
    provider.calls.clear()
    provider.post, provider.get = 405, 200
    _end(_core(pki, server_cert, provider, tmp_path), caplog)
    assert [m for m, _ in provider.calls] == ["POST", "GET"]
    assert provider.calls[0][1]["id_token_hint"] == "the-id-token"
    assert provider.calls[1][1] == {"id_token_hint": "the-id-token", "client_id": "lps-x"}
    assert "end-session" not in caplog.text  # ended: nothing to warn about


def test_post_accepted_needs_no_get(
    pki: Pki, server_cert: IssuedCertificate, provider: Provider, tmp_path: Path, caplog: Any
) -> None:
    provider.calls.clear()
    provider.post, provider.get = 204, 200
    _end(_core(pki, server_cert, provider, tmp_path), caplog)
    assert [m for m, _ in provider.calls] == ["POST"]


def test_both_refused_warning_names_the_http_status(
    pki: Pki, server_cert: IssuedCertificate, provider: Provider, tmp_path: Path, caplog: Any
) -> None:
    provider.calls.clear()
    provider.post, provider.get = 405, 403
    _end(_core(pki, server_cert, provider, tmp_path), caplog)
    assert [m for m, _ in provider.calls] == ["POST", "GET"]
    assert "PSC end-session refused (disconnect): HTTP 403" in caplog.text
    assert "HTTP 405" in caplog.text  # the POST's status too
