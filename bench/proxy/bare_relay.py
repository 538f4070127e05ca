"""The "20-line Python relay" reference: uvicorn + httptools + aiohttp, static Bearer, no
session, no trace, no checks. Our proxy against it shows what the product logic costs on
top of the cheapest possible Python relay on the same stack.

    python bench/proxy/bare_relay.py PORT UPSTREAM_URL CERT KEY CA CLIENT_CERT CLIENT_KEY
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

import aiohttp  # noqa: E402

from confiance.core.server import ServiceConfig, bind_socket, make_server  # noqa: E402
from confiance.core.tls import ClientIdentity, ServerTLS, client_context  # noqa: E402

port, upstream, cert, key, ca, ccert, ckey = sys.argv[1:8]
state: dict[str, Any] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    session = state.get("s")
    if session is None:
        ctx = client_context(ca, ClientIdentity(Path(ccert), Path(ckey)))
        session = state["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=100))
    path = scope["path"].removeprefix("/send/bench")
    async with session.request(scope["method"], upstream + path, headers={"Authorization": "Bearer static"}) as r:
        body = await r.read()
        status = r.status
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


if __name__ == "__main__":
    cfg = ServiceConfig(port=int(port), tls=ServerTLS(cert=Path(cert), key=Path(key)))
    server = make_server(app, cfg)
    server.config.lifespan = "off"
    server.run(sockets=[bind_socket(cfg.host, cfg.port)])
