"""Strict, bounded reading of requests and the JSON answers of the sandbox.

Bodies are read with a hard size limit (``Content-Length`` and while streaming) and forms
are parsed strictly (duplicate parameters refused, RFC 6749 §3.2), so hostile input ends as
an OAuth error with a 4xx status, never as a 500.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .errors import InvalidRequestError

MAX_FIELDS = 64
MAX_VALUE = 8192


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge
        except ValueError:
            raise InvalidRequestError("Content-Length invalide") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: Request, limit: int) -> dict[str, str]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, limit)
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequestError("Content-Type application/x-www-form-urlencoded attendu")
    return parse_form(body)


def parse_form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError("corps de requête mal formé") from None
    form: dict[str, str] = {}
    for k, v in pairs:
        if k in form:
            raise InvalidRequestError(f"paramètre répété : {k[:40]}")
        if len(v) > MAX_VALUE:
            raise InvalidRequestError(f"paramètre trop long : {k[:40]}")
        form[k] = v
    return form


async def read_json(request: Request, limit: int) -> Any:
    body = await read_body(request, limit)
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequestError("JSON invalide") from None


def json_response(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def query_params(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in request.query_params.multi_items():
        if k in out:
            raise InvalidRequestError(f"paramètre répété : {k[:40]}")
        out[k] = v
    return out


def with_query(uri: str, params: dict[str, str]) -> str:
    parts = urlsplit(uri)
    query = parts.query + ("&" if parts.query and params else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
