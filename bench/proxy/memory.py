"""RSS of the proxy with N active in-process sessions (run as its own process).

Sessions are inserted directly into the proxy's memory store, with tokens of the size the
real PSC sandbox and API AS issue (taken from a live session by bench_proxy.py), each
with its exchanged API token and its prebuilt relay context, as after a first /send.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from confiance.proxy.app import ProxyApp  # noqa: E402
from confiance.proxy.config import load  # noqa: E402
from confiance.proxy.core import ProxyCore  # noqa: E402
from confiance.proxy.domain import ApiToken, new_session  # noqa: E402
from confiance.proxy.sessions import MemoryStore  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(config: Path, sizes: dict[str, int], n: int) -> dict[str, float]:
    cfg = load(config)
    cfg.sessions.store = "memory"  # this measures the in-process store, whatever the run used
    cfg.server.workers = 1
    core = ProxyCore(cfg)
    ProxyApp(core)
    await core.start()
    store = core.store
    assert isinstance(store, MemoryStore)
    base = rss_mb()
    now = time.time()
    service = next(iter(core.cfg.services))
    client_id = core.cfg.lps_clients[0].client_id
    for i in range(n):
        s = new_session(
            client_id=client_id,
            national_id=f"8{i:011d}",
            tokens={
                "access_token": "a" * sizes["access_token"] + str(i),
                "refresh_token": "r" * sizes["refresh_token"] + str(i),
                "id_token": "i" * sizes["id_token"] + str(i),
                "session_state": f"{i:08d}-0000-4000-8000-000000000000",
                "expires_in": 120,
                "refresh_expires_in": 1800,
            },
            now=now,
            absolute_ttl=14400,
            idle_ttl=1800,
            dn="CN=lps-demo,OU=390000000001017,C=FR",
        )
        s.api_tokens[service] = ApiToken("t" * sizes["api_token"] + str(i), now + 3600)
        await store.create(s)
        await core.hot_entry(s, service, now)
    after = rss_mb()
    await core.stop()
    return {"sessions": n, "rss_before_mb": round(base, 1), "rss_after_mb": round(after, 1)}


if __name__ == "__main__":
    cfg, sizes_json, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    print(json.dumps(asyncio.run(main(cfg, json.loads(sizes_json), count))))
