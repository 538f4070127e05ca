"""What the proxy's HTTP routes share at their edge: the session cookie, answers in ANS's
error shape, the caller's address, request bodies read under a cap, French HTML pages.

Pure helpers over bytes and ASGI scopes: no I/O of their own beyond reading a body.
"""

from __future__ import annotations

import html
import json
from collections.abc import MutableMapping
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from .domain import ProxyError, client_address, internal_error
from .http1.answers import Answer, HttpError

__all__ = ["Answer"]

COOKIE = "proxy_session_id"
COOKIE_BYTES = COOKIE.encode()
STATE_COOKIE = "proxy_auth_state"
JSON_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


def json_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def session_cookie(sid: str, samesite: str) -> str:
    return f"{COOKIE}={sid}; Path=/; Secure; HttpOnly; SameSite={samesite.capitalize()}"


def erased_cookie(samesite: str) -> str:
    return f"{COOKIE}=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Secure; HttpOnly; SameSite={samesite.capitalize()}"


def cookie_from_headers(headers: list[tuple[bytes, bytes]], name: bytes = COOKIE_BYTES) -> str | None:
    for k, v in headers:
        if k == b"cookie":
            for part in v.split(b";"):
                n, _, val = part.strip().partition(b"=")
                if n == name:
                    return val.decode("latin-1")
    return None


def error_answer(exc: ProxyError) -> Answer:
    """A refusal as a complete response (ANS JSON body, Content-Length)."""
    body = json_bytes(exc.body())
    return exc.status, [*JSON_HEADERS, *exc.headers, (b"content-length", b"%d" % len(body))], body


def http_error_answer(exc: HttpError) -> Answer:
    """The HTTP layer's refusals (malformed, oversized…) in ANS's error shape."""
    if exc.status == 500:
        return error_answer(internal_error())
    return error_answer(ProxyError(exc.status, exc.code, exc.message, metadata={}))


def caller_address(
    client: tuple[str, int] | None, headers: list[tuple[bytes, bytes]], trusted: tuple[Any, ...]
) -> tuple[str | None, int | None]:
    """The caller's address for traces (X-Forwarded-For read only behind a trusted proxy)."""
    xff = None
    if trusted:
        for k, v in headers:
            if k == b"x-forwarded-for":
                xff = v.decode("latin-1") if xff is None else xff + "," + v.decode("latin-1")
    return client_address(client, xff, trusted)


def scope_address(scope: MutableMapping[str, Any], trusted: tuple[Any, ...]) -> tuple[str | None, int | None]:
    return caller_address(scope.get("client"), scope["headers"], trusted)


async def read_body(scope: MutableMapping[str, Any], receive: Any, limit: int) -> bytes:
    """The whole request body of an ASGI exchange, refused past ``limit`` bytes."""
    for k, v in scope["headers"]:
        if k == b"content-length":
            try:
                if int(v) > limit:
                    raise ProxyError(413, "BODY_TOO_LARGE", f"corps de requête trop volumineux (max {limit} octets)")
            except ValueError:
                raise ProxyError(400, "INVALID_REQUEST", "Content-Length invalide") from None
    chunks = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ProxyError(400, "CLIENT_DISCONNECTED", "requête interrompue")
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise ProxyError(413, "BODY_TOO_LARGE", f"corps de requête trop volumineux (max {limit} octets)")
            chunks.append(chunk)
        if not msg.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


NO_META = {"nationalId": None, "clientId": None}


def require_json(headers: list[tuple[bytes, bytes]]) -> None:
    """415 unless the request says its body is JSON (``application/json`` or ``…+json``)."""
    for k, v in headers:
        if k == b"content-type":
            media = v.split(b";", 1)[0].strip().lower()
            if media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json")):
                return
            break
    raise ProxyError(
        415, "UNSUPPORTED_MEDIA_TYPE", "corps JSON attendu (Content-Type: application/json)", metadata=NO_META
    )


class _NotStrictJson(ValueError):
    """Valid for Python's parser, refused here (a repeated key, NaN or Infinity)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _NotStrictJson(f"clé « {key[:64]} » répétée")
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise _NotStrictJson(f"{name} n'est pas une valeur JSON")


def parse_json(raw: bytes) -> Any:
    """The JSON value of a request body (RFC 8259, strictly); 400 when it is not JSON, or
    nested deeper than the parser's recursion limit (which would otherwise surface as a 500).

    Why strictly: an object with a repeated key means one thing to one parser (the first
    value) and another to the next (the last): what a filter in front of the proxy checked
    would not be what the proxy sends to PSC. So a repeated key is refused, as are NaN and
    Infinity, which Python's parser accepts and JSON does not define."""
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys, parse_constant=_no_constant) if raw else None
    except _NotStrictJson as exc:
        raise ProxyError(400, "INVALID_REQUEST", f"corps JSON invalide : {exc}", metadata=NO_META) from None
    except (ValueError, RecursionError):
        raise ProxyError(400, "INVALID_REQUEST", "corps JSON invalide", metadata=NO_META) from None


async def read_request_body(request: Request, limit: int) -> bytes:
    return await read_body(request.scope, request.receive, limit)


def page(status: int, title: str, text: str) -> HTMLResponse:
    """A short French HTML page (web login outcomes)."""
    body = (
        "<!doctype html><html lang='fr'><head><meta charset='utf-8'><title>"
        f"{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
