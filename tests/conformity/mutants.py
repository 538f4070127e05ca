"""Deliberately defective proxies, built at test time from our own proxy.

Two seams only, both stable across the proxy's internal refactors:

- **configuration**: the real proxy started with one setting changed (``/traces`` open,
  ``X-Forwarded-For`` trusted from anyone, timeouts longer than the operator declares);
- **a pass-through front**: a small ASGI app in front of the real proxy that relays every
  request byte for byte (raw request target, so path probes arrive unchanged) and changes
  one thing on the wire (a cookie attribute, a field of a body, a status).

Each mutation is a pair of functions on the request and on the response; everything else
the tool sees is the real proxy's behaviour.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import h11

Headers = list[tuple[bytes, bytes]]


@dataclass
class Wire:
    """One exchange as the front sees it; mutations edit it in place."""

    method: str
    target: bytes
    headers: Headers
    body: bytes
    status: int = 0
    resp_headers: Headers = field(default_factory=list)
    resp_body: bytes = b""
    answer: tuple[int, Headers, bytes] | None = None  # set by a request mutation: answer without relaying
    memo: Any = None  # what a request mutation leaves for its response mutation

    @property
    def path(self) -> str:
        return self.target.split(b"?")[0].decode("latin-1")

    def json(self, data: bytes) -> Any:
        try:
            return json.loads(data)
        except ValueError:
            return None


Mutation = tuple[Callable[[Wire, dict[str, Any]], None] | None, Callable[[Wire, dict[str, Any]], None] | None]


async def _relay(host: str, port: int, ctx: ssl.SSLContext, w: Wire) -> None:
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
    try:
        conn = h11.Connection(h11.CLIENT)
        headers = [(k, v) for k, v in w.headers if k.lower() not in (b"host", b"connection", b"content-length")]
        headers += [(b"host", f"{host}:{port}".encode()), (b"connection", b"close")]
        headers.append((b"content-length", str(len(w.body)).encode()))
        writer.write(conn.send(h11.Request(method=w.method, target=w.target, headers=headers)))
        writer.write(conn.send(h11.Data(data=w.body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.Response):
                w.status, w.resp_headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        w.resp_body = body
    finally:
        writer.close()


class Front:
    """ASGI pass-through to ``upstream_url`` applying one mutation."""

    def __init__(self, upstream_url: str, ctx: ssl.SSLContext, mutation: Mutation) -> None:
        parts = urlsplit(upstream_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 443
        self.ctx = ctx
        self.on_request, self.on_response = mutation
        self.state: dict[str, Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        w = Wire(scope["method"], target, list(scope["headers"]), body)
        if self.on_request:
            self.on_request(w, self.state)
        if w.answer is not None:
            w.status, w.resp_headers, w.resp_body = w.answer
        else:
            await _relay(self.host, self.port, self.ctx, w)
            if self.on_response:
                self.on_response(w, self.state)
        headers = [
            (k, v)
            for k, v in w.resp_headers
            if k.lower() not in (b"content-length", b"connection", b"transfer-encoding")
        ]
        headers.append((b"content-length", str(len(w.resp_body)).encode()))
        await send({"type": "http.response.start", "status": w.status, "headers": headers})
        await send({"type": "http.response.body", "body": w.resp_body})


# ----------------------------------------------------------------- the mutations


def _json_body(w: Wire, data: Any) -> None:
    w.resp_body = json.dumps(data).encode()


def _cookie_insecure(w: Wire, _s: dict[str, Any]) -> None:
    if w.path == "/connect":
        w.resp_headers = [
            (k, v.replace(b"; Secure", b"").replace(b"; HttpOnly", b"")) if k.lower() == b"set-cookie" else (k, v)
            for k, v in w.resp_headers
        ]


def _rewrite_connect(change: Callable[[dict[str, Any]], None]) -> Callable[[Wire, dict[str, Any]], None]:
    def on_request(w: Wire, _s: dict[str, Any]) -> None:
        if w.path == "/connect" and w.method == "POST":
            data = w.json(w.body)
            if isinstance(data, dict):
                change(data)
                w.body = json.dumps(data).encode()

    return on_request


def _binding_replaced(d: dict[str, Any]) -> None:
    if isinstance(d.get("bindingMessage"), str) and len(d["bindingMessage"]) == 2 and d["bindingMessage"].isdigit():
        d["bindingMessage"] = f"{(int(d['bindingMessage']) + 1) % 100:02d}"  # the proxy's own digits


def _channel_card(d: dict[str, Any]) -> None:
    if d.get("channel") in ("CARD", "MOBILE"):
        d["channel"] = "CARD"


def _binding_number(d: dict[str, Any]) -> None:
    if isinstance(d.get("bindingMessage"), int) and not isinstance(d["bindingMessage"], bool):
        d["bindingMessage"] = f"{d['bindingMessage']:02d}"[-2:]


def _replay_200(w: Wire, s: dict[str, Any]) -> None:
    if w.path != "/connect":
        return
    if w.status == 200:
        s.setdefault("bodies", {})[json.loads(w.resp_body).get("proxy_session_id")] = (w.resp_headers, w.resp_body)
    elif w.status == 304:
        cookie = next((v for k, v in w.headers if k == b"cookie"), b"").decode()
        sid = cookie.partition("proxy_session_id=")[2].split(";")[0]
        if sid in s.get("bodies", {}):
            w.status, (w.resp_headers, w.resp_body) = 200, s["bodies"][sid]


def _post_only(w: Wire, _s: dict[str, Any]) -> None:
    if w.path.startswith("/send/") and w.method != "POST":
        w.answer = (405, [(b"content-type", b"application/json")], b'{"code":"METHOD","message":"POST seulement"}')


def _edit_traces(change: Callable[[dict[str, Any]], None]) -> Callable[[Wire, dict[str, Any]], None]:
    def on_response(w: Wire, _s: dict[str, Any]) -> None:
        if w.path == "/traces" and w.status == 200:
            items = w.json(w.resp_body)
            if isinstance(items, list):
                for t in items:
                    change(t)
                _json_body(w, items)

    return on_response


def _no_ports(t: dict[str, Any]) -> None:
    t.pop("ports", None)


def _api_request_everywhere(t: dict[str, Any]) -> None:
    t.setdefault("apiRequest", {"nomApiPsc": None, "methode": None, "path": None})


def _no_window(w: Wire, _s: dict[str, Any]) -> None:
    if w.path == "/traces":
        w.target = b"/traces?start=2000-01-01T00:00:00Z"


def _tokens_in_body(issuer: str) -> Callable[[Wire, dict[str, Any]], None]:
    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    def on_response(w: Wire, _s: dict[str, Any]) -> None:
        if w.path == "/connect" and w.status == 200:
            data = json.loads(w.resp_body)
            data["access_token"] = f"{b64({'alg': 'RS256'})}.{b64({'iss': issuer, 'typ': 'Bearer'})}.c2ln"
            _json_body(w, data)

    return on_response


def _normalise_send_path(w: Wire, _s: dict[str, Any]) -> None:
    """A proxy without path safety: decodes and resolves the path, then relays what remains."""
    if not w.target.startswith(b"/send/"):
        return
    path, _, query = w.target.partition(b"?")
    text = path.decode("latin-1")
    for enc, dec in (("%2e", "."), ("%2E", "."), ("%2f", "/"), ("%2F", "/"), ("%5c", "/"), ("%5C", "/")):
        text = text.replace(enc, dec)
    out: list[str] = []
    for seg in text.split("/"):
        if seg == "..":
            if len(out) > 1:
                out.pop()
        elif seg not in (".", "") or not out:
            out.append(seg)
    w.target = "/".join(out).encode() + (b"?" + query if query else b"")


def _sessions_by_user(clients: set[str]) -> Callable[[Wire, dict[str, Any]], None]:
    return lambda w, s: _by_user(clients, w, s)


def _by_user(clients: set[str], w: Wire, s: dict[str, Any]) -> None:
    """Request side: a user with a live session at any LPS gets 304 (the session is keyed by user).

    Like the proxy it stands for, it validates the clientId first (``clients``: those the
    proxy is configured with), so unknown-client and malformed probes keep their answers.
    """
    live: dict[str, tuple[str, str]] = s.setdefault("live", {})  # proxy_session_id -> (nationalId, clientId)
    if w.path == "/disconnect":
        cookie = next((v for k, v in w.headers if k == b"cookie"), b"").decode()
        live.pop(cookie.partition("proxy_session_id=")[2].split(";")[0], None)
    elif w.path == "/connect":
        data = w.json(w.body)
        if (
            isinstance(data, dict)
            and data.get("clientId") in clients
            and any(nid == data.get("nationalId") and cid != data.get("clientId") for nid, cid in live.values())
        ):
            w.answer = (304, [], b"")
        w.memo = data


def _remember_sessions(w: Wire, s: dict[str, Any]) -> None:
    data = w.memo
    if w.path == "/connect" and w.status == 200 and isinstance(data, dict):
        body = json.loads(w.resp_body)
        s.setdefault("live", {})[body["proxy_session_id"]] = (data.get("nationalId"), data.get("clientId"))


def _drop_query(w: Wire, _s: dict[str, Any]) -> None:
    if w.target.startswith(b"/send/"):
        w.target = w.target.split(b"?")[0]


def _upstream_errors_as_500(w: Wire, _s: dict[str, Any]) -> None:
    if w.path.startswith("/send/") and w.status in (502, 503, 504):
        w.status = 500


def _psc_failure_as_500(w: Wire, _s: dict[str, Any]) -> None:
    if w.path == "/connect" and w.status == 503:
        w.status = 500


def front_mutations(psc_issuer: str, clients: set[str]) -> dict[str, tuple[Mutation, set[str]]]:
    """Wire-level defects and the checks that must fail on each, and only those."""
    return {
        "cookie_insecure": ((None, _cookie_insecure), {"exposure.cookies"}),
        "binding_replaced": ((_rewrite_connect(_binding_replaced), None), {"connect.binding"}),
        "channel_always_card": ((_rewrite_connect(_channel_card), None), {"connect.binding"}),
        "binding_number_accepted": ((_rewrite_connect(_binding_number), None), {"connect.malformed"}),
        "replay_200": ((None, _replay_200), {"connect.replay"}),
        "send_post_only": ((_post_only, None), {"send.methods"}),
        "traces_without_ports": ((None, _edit_traces(_no_ports)), {"traces.fields"}),
        "api_request_everywhere": ((None, _edit_traces(_api_request_everywhere)), {"traces.api_request"}),
        "traces_no_window": ((_no_window, None), {"traces.window"}),
        "psc_token_to_lps": ((None, _tokens_in_body(psc_issuer)), {"exposure.psc_tokens"}),
        "query_dropped": ((_drop_query, None), {"send.query"}),
        "upstream_failures_as_500": ((None, _upstream_errors_as_500), {"send.upstream_failures"}),
        "psc_failure_as_500": ((None, _psc_failure_as_500), {"connect.psc_unavailable"}),
        "no_path_safety": ((_normalise_send_path, None), {"send.path_safety"}),
        "sessions_keyed_by_user": ((_sessions_by_user(clients), _remember_sessions), {"connect.other_lps"}),
    }
