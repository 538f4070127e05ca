"""``GET /traces``: every trace of a window, never silently cut.

ANS's contract (docs/specs/ans-proxy-esante.openapi.json) gives ``start`` (required) and
``end`` and a JSON list back. Without ``limit`` the whole window is streamed (chunked
transfer coding, pages of traces read in turn from the store: memory stays bounded however
many traces the window holds). With ``limit`` (1–10,000) at most that many come back and,
when more remain, the answer says so: ``Link: </traces?…&cursor=C>; rel="next"`` and
``X-Next-Cursor: C``; passing ``cursor=C`` continues after the last trace returned. The
cursor is opaque (the last trace's block and position). ``end`` before ``start``, a bad
date, cursor or limit: 400. If the store fails before the first byte: 503; after it, the
connection is cut without the body's end, so a reader never takes a partial list for all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .domain import parse_iso
from .traces import Cursor, TraceStore, format_cursor, parse_cursor
from .tracewriter import TraceWriter

LIMIT_MAX = 10_000
STREAM_PAGE = 1_000  # traces per read while streaming


def _bad(code: str, message: str, field: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "field": field}, 400)


async def traces_response(
    request: Request, store: TraceStore, writer: TraceWriter, db_timeout: float
) -> tuple[int, Response]:
    """The answer to an authorised ``GET /traces`` and its status (for the metrics)."""
    q = request.query_params
    if not q.get("start"):
        return 400, _bad("MISSING_FIELD", "paramètre start manquant", "start")
    try:
        start = parse_iso(q["start"])
        end = parse_iso(q["end"]) if q.get("end") else None
    except ValueError:
        return 400, _bad("INVALID_FIELD", "date ISO 8601 invalide", "start" if "end" not in q else "end")
    if end is not None and end < start:
        return 400, _bad("INVALID_FIELD", "end est antérieur à start", "end")
    after: Cursor | None = None
    limit: int | None = None
    try:
        if q.get("cursor"):
            after = parse_cursor(q["cursor"])
        if q.get("limit") is not None:
            limit = int(q["limit"])
            if not 1 <= limit <= LIMIT_MAX:
                raise ValueError
    except ValueError:
        field = "limit" if q.get("limit") is not None and (limit is None or not 1 <= limit <= LIMIT_MAX) else "cursor"
        return 400, _bad("INVALID_FIELD", f"{field} invalide (limit : 1 à {LIMIT_MAX})", field)
    # Every request this instance has answered is in what we return (batched SEND traces
    # wait up to flush_interval); if the database is down the reads below say so.
    await writer.flush(timeout=db_timeout)
    unavailable = JSONResponse({"code": "TRACES_UNAVAILABLE", "message": "base des traces indisponible"}, 503)
    page_size = limit if limit is not None else STREAM_PAGE
    try:
        rows, next_cursor = await asyncio.wait_for(
            asyncio.to_thread(store.page, start, end, after, page_size), db_timeout
        )
    except Exception:
        return 503, unavailable
    headers = {"Cache-Control": "no-store"}
    if limit is not None:
        if next_cursor is not None:
            c = format_cursor(next_cursor)
            params: dict[str, Any] = {"start": q["start"], "limit": limit, "cursor": c}
            if q.get("end"):
                params["end"] = q["end"]
            headers["Link"] = f'</traces?{urlencode(params)}>; rel="next"'
            headers["X-Next-Cursor"] = c
        return 200, Response(_json_list(rows), media_type="application/json", headers=headers)
    return 200, StreamingResponse(
        _stream(store, start, end, rows, next_cursor, db_timeout), media_type="application/json", headers=headers
    )


def _json_list(rows: list[dict[str, Any]]) -> bytes:
    return b"[" + b",".join(orjson.dumps(r) for r in rows) + b"]"


async def _stream(
    store: TraceStore,
    start: float,
    end: float | None,
    rows: list[dict[str, Any]],
    after: Cursor | None,
    db_timeout: float,
) -> AsyncIterator[bytes]:
    """``[`` + every trace + ``]``, a page at a time. A store error raises here, which
    cuts the connection before the closing bracket and the body's terminator."""
    first = True
    while True:
        if rows:
            yield (b"[" if first else b",") + b",".join(orjson.dumps(r) for r in rows)
            first = False
        if after is None:
            break
        rows, after = await asyncio.wait_for(asyncio.to_thread(store.page, start, end, after, STREAM_PAGE), db_timeout)
    yield b"[]" if first else b"]"
