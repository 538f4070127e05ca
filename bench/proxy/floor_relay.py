"""The floor of a Python relay on the proxy's own stack: what TLS and sockets cost alone.

uvloop + Python's ``ssl`` (both legs TLS, mTLS upstream) + httptools, exactly what the
proxy's server (``confiance.proxy.http1``) and upstream pool (``confiance.proxy.http1.client``)
are built on, and nothing else: no session, no token, no path check, no trace, no metric,
no limit, no timeout, a static Bearer. Whatever the proxy costs above this relay is its
own logic; whatever this relay costs above nginx is the price of driving TLS and sockets
from Python. Benchmark reference only: it trusts its input and handles no error.

    python bench/proxy/floor_relay.py PORT UPSTREAM_PORT CERT KEY CA CLIENT_CERT CLIENT_KEY
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import sys

import httptools
import uvloop

PREFIX = b"/send/bench"


class Upstream(asyncio.Protocol):
    """One kept-alive upstream connection; answers the client it was lent to."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        self.body = []
        client, self.client = self.client, None
        status = self.parser.get_status_code()
        self.relay.idle.append(self)
        if client is not None and client.transport is not None:
            client.transport.write(
                b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (status, len(body), body)
            )


class Client(asyncio.Protocol):
    """One LPS-side connection, one request at a time."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        path = self.url[len(PREFIX) :] if self.url.startswith(PREFIX) else self.url
        head = b"GET %s HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer static-benchmark-token\r\n\r\n" % (
            path or b"/"
        )
        if self.relay.idle:
            self.relay.send(self.relay.idle.pop(), self, head)
        else:
            asyncio.get_running_loop().create_task(self.relay.connect_and_send(self, head))


class Relay:
    def __init__(self, port: int, ctx: ssl.SSLContext) -> None:
        self.port = port
        self.ctx = ctx
        self.idle: collections.deque[Upstream] = collections.deque()

    def send(self, up: Upstream, client: Client, head: bytes) -> None:
        up.client = client
        assert up.transport is not None
        up.transport.write(head)

    async def connect_and_send(self, client: Client, head: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, up = await loop.create_connection(
            lambda: Upstream(self), "127.0.0.1", self.port, ssl=self.ctx, server_hostname="localhost"
        )
        self.send(up, client, head)


async def main() -> None:
    port, up_port, cert, key, ca, ccert, ckey = sys.argv[1:8]
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=ca)
    client_ctx.load_cert_chain(ccert, ckey)
    relay = Relay(int(up_port), client_ctx)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(relay), "127.0.0.1", int(port), ssl=server_ctx, backlog=2048)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main())
