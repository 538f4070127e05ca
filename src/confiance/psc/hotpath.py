"""The token and CIBA endpoints' POSTs served straight from ASGI, everything else by Starlette.

Why: under a team's load these two endpoints are nearly all the traffic, and what a
request costs besides its RSA signatures is mostly framework: a ``Request`` object, header
parsing, routing through every route, a ``Response`` object. Here a POST to either path
is read (same size limit and strict form parsing as everywhere, ``http.parse_form``),
handed to the same ``PscSandbox`` methods the Starlette handlers call, and answered with
the same JSON and headers (``error_headers``); tests run against this path, since it is
the one a client hits. Other methods and paths go to the Starlette app unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import InvalidRequestError, OAuthError, error_headers
from .http import BodyTooLarge, parse_form

if TYPE_CHECKING:
    from .app import PscSandbox

log = logging.getLogger("confiance.psc")
Endpoint = Callable[[Scope, "str | None", dict[str, str]], dict[str, Any]]
_JSON_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"pragma", b"no-cache"),
]
_FORM = "application/x-www-form-urlencoded"
PROTOCOL_PREFIX = "/auth/"  # what relying parties call (Keycloak paths); not /sandbox/*, not health


class HotPath:
    """ASGI app: the hot POSTs here, the rest to ``app``."""

    def __init__(self, sandbox: PscSandbox, app: ASGIApp, oidc_prefix: str) -> None:
        self.app = app
        self.sandbox = sandbox
        self.limit = sandbox.config.max_body_bytes
        self.routes: dict[str, Endpoint] = {
            f"{oidc_prefix}/token": sandbox.token_request,
            f"{oidc_prefix}/ext/ciba/auth": sandbox.ciba_request,
        }

    @property
    def state(self) -> State:
        state: State = self.app.state  # type: ignore[attr-defined]
        return state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTOCOL_PREFIX) and self.sandbox.outage_now():
            # the admin outage switch: every protocol endpoint answers as a PSC that is down
            body = _error("temporarily_unavailable", "Pro Santé Connect indisponible (panne simulée)")
            headers = [*_JSON_HEADERS, (b"retry-after", b"1"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        endpoint = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        status, body, headers = await self._answer(endpoint, scope, receive)
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(
        self, endpoint: Endpoint, scope: Scope, receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        try:
            self.sandbox.shared.sync()
            ctype, length, authorization = "", None, None
            for name, value in scope["headers"]:
                if name == b"content-type":
                    ctype = value.decode("latin-1").split(";")[0].strip().lower()
                elif name == b"content-length":
                    length = value
                elif name == b"authorization":
                    authorization = value.decode("latin-1")
            body = await self._body(receive, length)
            if ctype != _FORM:
                raise InvalidRequestError("Content-Type application/x-www-form-urlencoded attendu")
            result = endpoint(scope, authorization, parse_form(body))
            return 200, orjson.dumps(result), _JSON_HEADERS
        except OAuthError as exc:
            extra = [(k.lower().encode(), v.encode()) for k, v in error_headers(exc, scope["path"]).items()]
            return exc.status, _error(exc.error, exc.description), _JSON_HEADERS + extra
        except BodyTooLarge:
            return 413, _error("invalid_request", "corps de requête trop volumineux"), _JSON_HEADERS
        except Exception:
            log.exception("unexpected error on %s", scope["path"])
            return 500, _error("server_error", "erreur interne du bac à sable"), _JSON_HEADERS

    async def _body(self, receive: Receive, declared: bytes | None) -> bytes:
        if declared is not None:
            try:
                if int(declared) > self.limit:
                    raise BodyTooLarge
            except ValueError:
                raise InvalidRequestError("Content-Length invalide") from None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidRequestError("connexion interrompue")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _error(error: str, description: str) -> bytes:
    return orjson.dumps({"error": error, "error_description": description})
