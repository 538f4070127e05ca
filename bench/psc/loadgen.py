"""Load generator for the PSC sandbox benchmark (runs in its own process).

Keep-alive aiohttp connections on loopback; each worker loops for a fixed duration:
``refresh`` rotates its refresh token (every grant uses the token the previous one
returned, as a real client must); ``ciba`` runs backchannel request + token poll (with
auto-approve at zero delay the first poll returns tokens: one complete authentication).
Prints one JSON line with counts, errors and latency percentiles.

``--client raw`` (default): one TLS connection per worker, requests written as prepared
HTTP/1.1 bytes and answers read by ``Content-Length`` — about a tenth of aiohttp's CPU per
request, so on a 2-core machine the load generator leaves the cores to the server it
measures. ``--client aiohttp`` keeps the general-purpose client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson
import uvloop

CIBA = "urn:openid:params:grant-type:ciba"


class RawConnection:
    """A keep-alive HTTP/1.1 connection that only POSTs forms and reads JSON answers."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext) -> None:
        self.host, self.port, self.ctx = host, port, ctx
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, url: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, ssl=self.ctx)
        assert self.reader is not None
        body = urlencode(data).encode()
        path = urlsplit(url).path
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = await self.reader.readexactly(length)
        return status, orjson.loads(payload) if payload else {}


class AiohttpConnection:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.s = session

    async def post(self, url: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
        async with self.s.post(url, data=data) as r:
            return r.status, await r.json()


async def ciba_login(s: Any, a: argparse.Namespace, auth: dict[str, str]) -> dict[str, Any]:
    data = {**auth, "scope": "openid scope_all", "acr_values": "eidas1", "login_hint": a.national_id}
    data |= {"binding_message": "42", "channel": "CARD"}
    status, body = await s.post(a.ciba, data)
    if status != 200:
        raise RuntimeError(f"ciba {status} {body}")
    for _ in range(1000):
        status, tok = await s.post(a.token, {**auth, "grant_type": CIBA, "auth_req_id": body["auth_req_id"]})
        if status == 200:
            return tok
        if tok.get("error") not in ("authorization_pending", "slow_down"):
            raise RuntimeError(f"token {status} {tok}")
    raise RuntimeError("CIBA never approved")


async def worker(s: Any, a: argparse.Namespace, auth: dict[str, str], stop: float, out: dict) -> None:
    lat: list[float] = out["lat"]
    if a.mode == "refresh":
        tok = await ciba_login(s, a, auth)
        rt = tok["refresh_token"]
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            status, body = await s.post(a.token, {**auth, "grant_type": "refresh_token", "refresh_token": rt})
            lat.append(time.perf_counter() - t0)
            if status != 200:
                out["errors"] += 1
                tok = await ciba_login(s, a, auth)
                rt = tok["refresh_token"]
                continue
            rt = body["refresh_token"]
            out["ok"] += 1
    else:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                await ciba_login(s, a, auth)
            except RuntimeError:
                out["errors"] += 1
                continue
            lat.append(time.perf_counter() - t0)
            out["ok"] += 1


async def main(a: argparse.Namespace) -> None:
    ctx = ssl.create_default_context(cafile=a.ca)
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)
    auth = {"client_id": a.client_id}
    if a.secret:
        auth["client_secret"] = a.secret
    conn = aiohttp.TCPConnector(ssl=ctx, limit=a.concurrency)
    out: dict[str, Any] = {"ok": 0, "errors": 0, "lat": []}
    async with aiohttp.ClientSession(connector=conn) as session:
        if a.client == "raw":
            target = urlsplit(a.token)
            conns: list[Any] = [
                RawConnection(target.hostname or "127.0.0.1", target.port or 443, ctx) for _ in range(a.concurrency)
            ]
        else:
            conns = [AiohttpConnection(session)] * a.concurrency
        # warm-up: open the connections, sign a few tokens
        warm = time.perf_counter() + a.warmup
        warm_out: dict[str, Any] = {"ok": 0, "errors": 0, "lat": []}
        await asyncio.gather(*(worker(c, a, auth, warm, warm_out) for c in conns))
        start = time.perf_counter()
        stop = start + a.duration
        await asyncio.gather(*(worker(c, a, auth, stop, out) for c in conns))
        elapsed = time.perf_counter() - start
    lat = sorted(out["lat"])

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else 0.0

    print(
        json.dumps(
            {
                "mode": a.mode,
                "ok": out["ok"],
                "warmup_ok": warm_out["ok"],
                "errors": out["errors"],
                "seconds": round(elapsed, 2),
                "rate": round(out["ok"] / elapsed, 1),
                "p50_ms": pct(0.5),
                "p99_ms": pct(0.99),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["refresh", "ciba"], required=True)
    p.add_argument("--ciba", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--secret")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--national-id", required=True)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--client", choices=["raw", "aiohttp"], default="raw")
    uvloop.run(main(p.parse_args()))
