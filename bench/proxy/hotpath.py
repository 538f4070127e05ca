"""CPU per relayed /send spent in the proxy's own Python, without sockets or TLS.

Why: on this 2-core machine the proxy process is the bottleneck of the relay benchmark
(one event loop at ≈ 100 % of a core), and the wrk figures move by ±10 % from run to run.
This drives the real objects in-process, the proxy's ``Connection`` (http1/connection.py) and an
upstream ``_Conn`` of its pool (http1/client.py), through ``Relay.handle`` with a real
in-memory session and API token, feeding the bytes a client and an upstream would send and
capturing what the proxy writes. What it measures is exactly the part of a request that is
the proxy's logic. What it does not see is the event loop's own work for that logic: timers
armed and cancelled, callbacks scheduled (a timer per upstream request cost ≈ 6 µs of CPU
per request in ``bench_proxy.py`` and nothing here; docs/benchmarks/proxy.md, session 7):
confirm a gain or a cost there with the real server. The same is done, in the same run, for the floor relay
(bench/proxy/floor_relay.py: the same stack with no logic), which is the reference.

    .venv/bin/python bench/proxy/hotpath.py [--requests 50000] [--rounds 5] [--profile]
        [--variants memory,memory-nolog,redis,redis-nolog,redis-nocache]

Variants, each a proxy built in this process and measured in the same interleaved rounds:
``memory`` / ``redis`` the session store (Redis: the real one at ``--redis-url``, a
throw-away key prefix); ``-nolog`` the access log off (``server.access_log = false``;
otherwise on, as by default, JSON lines batched to a file as ``confiance proxy serve``
writes them); ``-nocache`` Redis with ``sessions.cache_max_age = 0``, i.e. a store read
per request as before the per-worker cache: those requests are awaited, so that variant
is driven through the event loop (``run_async``) and its figure includes the loop's share.

``--profile`` prints the cProfile call counts of one round of the first variant (calls per
request are the number to bring down; cProfile's own overhead makes its times unreliable).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import logging
import os
import pstats
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.proxy import floor_relay  # noqa: E402

from confiance.core.logs import setup  # noqa: E402
from confiance.pki import Pki  # noqa: E402
from confiance.proxy.config import ProxyConfig  # noqa: E402
from confiance.proxy.core import ProxyCore  # noqa: E402
from confiance.proxy.domain import ApiToken, new_session  # noqa: E402
from confiance.proxy.http1.client import _Conn  # noqa: E402
from confiance.proxy.http1.connection import Connection  # noqa: E402
from confiance.proxy.serve import make_server, tune_gc  # noqa: E402
from confiance.proxy.sessions import RedisStore  # noqa: E402

# What wrk sends in bench_proxy.py, and what the nginx upstream answers there.
REQUEST = b"GET /send/bench/hello HTTP/1.1\r\nHost: 127.0.0.1:8443\r\nCookie: proxy_session_id=%s\r\n\r\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 28 Nov 2026 19:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 27\r\nConnection: keep-alive\r\n\r\n"
    b'{"resourceType":"Bundle"}\r\n'
)


class Sink:
    """A transport that keeps the last write: enough for a protocol that only writes."""

    def __init__(self) -> None:
        self.last = b""
        self.writes = 0

        self.waiter: asyncio.Future[None] | None = None

    def write(self, data: bytes) -> None:
        self.last = data
        self.writes += 1
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8443)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _NoSchedule:
    def call_soon(self, *_: Any) -> None:
        pass


@dataclass
class Variant:
    name: str
    pair: tuple[Any, Any, Sink, Sink, bytes]
    core: ProxyCore
    server: Any
    awaited: bool  # requests answered through the event loop, not synchronously
    sid: str


async def proxy_pair(tmp: Path, name: str, redis_url: str) -> Variant:
    """A client Connection and an idle upstream _Conn of the session's pool, wired up."""
    store = name.split("-")[0]
    pki = Pki.init(tmp / "pki")  # made once, kept for the other variants
    lps = pki.ensure_server("lps", dns=["lps"])
    sessions: dict[str, Any] = {}
    if store == "redis":
        sessions = {"store": "redis", "url": redis_url, "redis_prefix": f"bench:{secrets.token_hex(4)}:"}
        if "nocache" in name:
            sessions["cache_max_age"] = 0
    cfg = ProxyConfig.model_validate(
        {
            "server": {"port": 8443, "cert": lps.cert_path, "key": lps.key_path, "access_log": "nolog" not in name},
            "outbound": {"ca_bundle": str(pki.ca_bundle)},
            "psc": {"discovery_url": "https://127.0.0.1:1/.well-known/openid-configuration"},
            "lps_clients": [{"client_id": "bench-lps", "auth": "mtls", "cert": lps.cert_path, "key": lps.key_path}],
            "services": {"bench": {"base_url": "https://127.0.0.1:2", "token_endpoint": "https://127.0.0.1:3/token"}},
            "sessions": sessions,
            "traces": {"url": f"sqlite:///{tmp / (name + '-traces.db')}", "queue_max": 10_000_000},
        }
    )
    core = ProxyCore(cfg)
    server = make_server(core, None)
    server.loop = asyncio.get_running_loop()
    now = time.time()
    session = new_session(
        client_id="bench-lps",
        national_id="899700000001",
        tokens={"access_token": "psc-access", "expires_in": 3600, "session_state": "st"},
        now=now,
        absolute_ttl=4 * 3600,
        idle_ttl=1800,
        dn="CN=lps",
    )
    session.api_tokens["bench"] = ApiToken("api-token-" + "x" * 990, now + 3600)
    await core.store.create(session)
    hot = core.make_hot(session, "bench", cfg.services["bench"], session.api_tokens["bench"])
    hot.pool.loop = asyncio.get_running_loop()
    up = _Conn(hot.pool)
    up_sink = Sink()
    up.connection_made(up_sink)  # type: ignore[arg-type]
    up.used = True
    hot.pool._idle.append(up)
    awaited = "nocache" in name
    if not awaited:
        # The harness flushes the outbox itself where the loop would (see run()); its per-pass
        # scheduling is left out: a real loop pays it once per pass, not once per request.
        core.outbox._loop = _NoSchedule()  # type: ignore[assignment]
    conn = Connection(server)
    client_sink = Sink()
    conn.connection_made(client_sink)  # type: ignore[arg-type]
    v = Variant(
        name, (conn, up, client_sink, up_sink, REQUEST % session.id.encode()), core, server, awaited, session.id
    )
    await ready(v)
    return v


async def ready(v: Variant) -> None:
    """Redis: the session read once (cached, fresh) and the invalidation channel followed,
    as on a proxy that has served this session before; the write-back of the last round's
    uses runs here, between rounds, as it would run between requests."""
    store = v.core.store
    if not isinstance(store, RedisStore):
        return
    await store.get(v.sid)
    cache = getattr(store, "cache", None)  # (None: a Redis store from before the cache)
    if cache is None:
        return
    for _ in range(1000):
        if cache.live or cache.max_age <= 0:
            break
        await asyncio.sleep(0.01)
    await store.flush()
    await store.get(v.sid)


async def close(v: Variant) -> None:
    v.core.access.flush()  # its timer would fire after the log file is closed
    store = v.core.store
    if isinstance(store, RedisStore):
        with contextlib.suppress(Exception):
            keys = [k async for k in store.r.scan_iter(match=f"{store.p}*")]
            if keys:
                await store.r.delete(*keys)
        await store.close()


def floor_pair() -> tuple[Any, Any, Sink, Sink, bytes]:
    relay = floor_relay.Relay(0, None)  # type: ignore[arg-type]
    up = floor_relay.Upstream(relay)
    up_sink = Sink()
    up.connection_made(up_sink)  # type: ignore[arg-type]
    relay.idle.append(up)
    client = floor_relay.Client(relay)
    client_sink = Sink()
    client.connection_made(client_sink)  # type: ignore[arg-type]
    return client, up, client_sink, up_sink, REQUEST % (b"0" * 36)


def _nothing() -> None:
    pass


def run(
    client: Any,
    up: Any,
    client_sink: Sink,
    up_sink: Sink,
    request: bytes,
    n: int,
    core: Any = None,
    server: Any = None,
) -> float:
    """µs of CPU per request over ``n`` requests, each fully answered before the next.

    The proxy's outboxes are flushed where the event loop would flush them: at the end
    of the pass that handled each side's data (proxy/http1/outbox.py)."""
    feed_client, feed_up = client.data_received, up.data_received
    flush_up = core.outbox.flush if core is not None else _nothing
    flush_client = server.outbox.flush if server is not None else _nothing
    before = client_sink.writes
    t0 = time.process_time()
    for i in range(n):
        feed_client(request)
        flush_up()
        feed_up(RESPONSE)
        flush_client()
        if core is not None and i % 4096 == 0:
            core.traces._queue.clear()  # the trace keeper's share is measured by bench_proxy.py
    elapsed = time.process_time() - t0
    assert client_sink.writes - before == n, "a request was not answered by the fast path"
    assert client_sink.last.startswith(b"HTTP/1.1 200"), client_sink.last[:200]
    return elapsed / n * 1e6


async def run_async(
    client: Any, up: Any, client_sink: Sink, up_sink: Sink, request: bytes, n: int, core: Any, server: Any
) -> float:
    """:func:`run` for requests that await (a store read): the event loop runs them, and
    flushes the outboxes at the end of its passes, as when serving."""
    feed_client, feed_up = client.data_received, up.data_received
    t0 = time.process_time()
    for i in range(n):
        before_up, before_client = up_sink.writes, client_sink.writes
        feed_client(request)
        while up_sink.writes == before_up:
            await up_sink.wait()
        feed_up(RESPONSE)
        while client_sink.writes == before_client:
            await client_sink.wait()
        if i % 4096 == 0:
            core.traces._queue.clear()
    elapsed = time.process_time() - t0
    assert client_sink.last.startswith(b"HTTP/1.1 200"), client_sink.last[:200]
    return elapsed / n * 1e6


async def measure(v: Variant, n: int) -> float:
    await ready(v)
    if v.awaited:
        return await run_async(*v.pair, n, v.core, v.server)
    return run(*v.pair, n, v.core, v.server)


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--variants", default="memory", help="comma-separated, see the module docstring")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()
    names = [x.strip() for x in args.variants.split(",") if x.strip()]
    with tempfile.TemporaryDirectory() as d, open(Path(d) / "access.log", "w") as access_file:
        setup("INFO", "json", stream=access_file)  # as serve does; the access lines land here
        logging.getLogger("confiance.proxy.sessions").setLevel(logging.WARNING)
        variants = [await proxy_pair(Path(d), name, args.redis_url) for name in names]
        floor = floor_pair()
        tune_gc()  # as `confiance proxy serve` does once started
        try:
            for v in variants:
                await measure(v, 2000)  # warm-up: caches, first allocations
            run(*floor, 2000)
            if args.profile:
                v = variants[0]
                await ready(v)
                prof = cProfile.Profile()
                prof.enable()
                if v.awaited:
                    await run_async(*v.pair, args.requests, v.core, v.server)
                else:
                    run(*v.pair, args.requests, v.core, v.server)
                prof.disable()
                stats = pstats.Stats(prof)
                print(f"calls per request: {stats.total_calls / args.requests:.1f}")  # type: ignore[attr-defined]
                stats.sort_stats(os.environ.get("HOTPATH_SORT", "ncalls")).print_stats(40)
                return 0
            results: dict[str, list[float]] = {v.name: [] for v in variants}
            fl: list[float] = []
            for _ in range(args.rounds):  # interleaved: the machine is shared
                for v in variants:
                    results[v.name].append(await measure(v, args.requests))
                fl.append(run(*floor, args.requests))
            f = statistics.median(fl)
            for name, xs in results.items():
                p = statistics.median(xs)
                rounds = ", ".join(f"{x:.2f}" for x in xs)
                print(f"proxy {name:14} {p:7.2f} µs/request  (− floor {p - f:6.2f}; rounds: {rounds})")
            print(f"floor relay    {f:7.2f} µs/request  (rounds: {', '.join(f'{x:.2f}' for x in fl)})")
        finally:
            for v in variants:
                await close(v)
            setup("WARNING", "text", stream=sys.stderr)  # the access file closes next
    return 0


if __name__ == "__main__":
    sys.exit(uvloop.run(main()))
