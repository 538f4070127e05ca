"""Proxy e-Santé relay cost, against nginx and against no relay at all, in one run.

Starts, each in its own process: the PSC sandbox and the API AS exactly as `confiance up`
does (their launch modules + supervisor), an nginx upstream (1 worker, mTLS, static JSON),
an nginx relay (1 worker, proxy_pass over mTLS with a static Bearer: the physical limit of
a proxy here), and our proxy (`confiance proxy serve`, 1 process). A real session is opened
through /connect (CIBA with the sandbox), then the same request is sent:

  direct  → upstream                            (reference: no relay)
  nginx   → nginx relay → upstream
  floor   → bench/proxy/floor_relay.py → upstream   (the proxy's stack, uvloop + ssl +
            httptools, with no logic at all: what TLS and sockets cost from Python)
  bare    → bench/proxy/bare_relay.py → upstream    (uvicorn + aiohttp "20-line relay")
  proxy   → /send/bench/hello → upstream        (session cookie, exchanged API token)

Measures: throughput at saturation (wrk, same threads/connections for each) and the CPU
time each relay's process group spends per request during that run (from /proc: steadier
than req/s on a shared machine, and it says where the cost is), latency
under a steady open-loop 1,000 req/s (hey -z 10s -c 10 -q 100; p99 added = p99(relay) −
p99(direct)), the tail of 3,000 sequential requests (hey -n 3000 -c 1: stalls of the relay
itself, without burst queueing), and RSS with 10,000 in-process sessions (bench/proxy/memory.py).

    .venv/bin/python bench/bench_proxy.py [--duration 10] [--connections 32] [--sessions 10000]
        [--only nginx,proxy] [--store memory|sqlite|redis] [--workers N] [--no-access-log]

Needs nginx, wrk and hey (Debian: apt-get install -y nginx-light wrk hey). The machine has
2 cores shared by the load generator, the relay and the upstream (and other work).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.proxy import nginx  # noqa: E402

from confiance.core.config import dump_toml  # noqa: E402
from confiance.core.launch import LaunchContext  # noqa: E402
from confiance.core.tls import client_context  # noqa: E402
from confiance.pki import Pki  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, ca: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(verify=client_context(ca), timeout=2) as c:
        while time.monotonic() < deadline:
            try:
                if c.get(url).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise TimeoutError(url)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) of every live process in a process group, from /proc.

    Why: on a shared 2-core machine requests per second move with whatever else runs;
    CPU time per relayed request, counted over the relay's whole process group (the
    proxy with its trace keeper, nginx with its worker), is steadier and says what each
    relay costs."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields[0] is the state: pgid is the 5th field of stat
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def wrk(
    url: str, duration: float, connections: int, threads: int, headers: list[str], pgid: int | None = None
) -> dict[str, float]:
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{int(duration)}s", "--latency"]
    for h in headers:
        args += ["-H", h]
    cpu0 = group_cpu_seconds(pgid) if pgid else 0.0
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    cpu1 = group_cpu_seconds(pgid) if pgid else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    count = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "cpu_us_per_request": round((cpu1 - cpu0) * 1e6 / int(count.group(1)), 1) if pgid and count else None,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }  # type: ignore[dict-item]


def hey(url: str, duration: float, headers: list[str], sequential: bool = False) -> dict[str, float]:
    """Steady 1,000 req/s (10 workers × 100 req/s), or ``sequential``: 3,000 requests one at
    a time on one connection. The sequential probe has no burst queueing (hey's workers
    fire together), so its tail shows stalls of the relay itself (docs/benchmarks/proxy.md)."""
    args = (
        ["hey", "-n", "3000", "-c", "1"] if sequential else ["hey", "-z", f"{int(duration)}s", "-c", "10", "-q", "100"]
    )
    for h in headers:
        args += ["-H", h]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    res: dict[str, float] = {}
    for pct in ("50", "90", "99"):
        m = re.search(rf"{pct}%% in ([\d.]+) secs", out.replace("%", "%%"))
        if m:
            res[f"p{pct}_ms"] = float(m.group(1)) * 1000
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["rps"] = float(m.group(1)) if m else 0.0
    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
    res["non200"] = sum(int(n) for c, n in codes if c != "200")
    return res


def overhead_buckets(proxy_url: str, ca: Path) -> dict[float, float]:
    """Cumulative buckets of the proxy's own time per /send (proxy_send_overhead_seconds)."""
    with httpx.Client(verify=client_context(ca), timeout=10) as c:
        text = c.get(f"{proxy_url}/metrics").text
    out: dict[float, float] = {}
    for m in re.finditer(r'proxy_send_overhead_seconds_bucket\{le="([^"]+)"\} ([\d.e+]+)', text):
        out[float(m.group(1))] = float(m.group(2))
    return out


def bucket_percentile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """Upper bound (seconds) of the bucket holding the q-quantile of what happened in between."""
    delta = {le: after[le] - before.get(le, 0.0) for le in after}
    total = delta.get(float("inf"), 0.0)
    if total <= 0:
        return None
    for le in sorted(delta):
        if delta[le] >= q * total:
            return le
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-saturation", action="store_true", help="no wrk rounds: only the latency probes and memory")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated targets (direct,nginx,bare_python_relay,floor_python_relay,proxy); for profiling",
    )
    ap.add_argument("--workers", type=int, default=1, help="proxy worker processes (>1 needs --store redis|sqlite)")
    ap.add_argument("--store", default="memory", choices=["memory", "sqlite", "redis"])
    ap.add_argument(
        "--no-access-log", action="store_true", help="server.access_log = false (measures the access log's cost)"
    )
    ap.add_argument("--redis-url", default=os.environ.get("CONFIANCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "hey"):
        if shutil.which(tool) is None:
            print(f"{tool} absent : apt-get install -y nginx-light wrk hey")
            return 2

    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    procs: list[subprocess.Popen[bytes]] = []
    sup = None
    try:
        from confiance import up as up_mod

        pki = Pki.init(tmp / "pki")
        server_cert = pki.ensure_server("localhost", dns=["localhost"], ips=["127.0.0.1"])
        ports = {"psc": free_port(), "api_as": free_port(), "api_rs": free_port(), "proxy": free_port()}
        ctx = LaunchContext(state_dir=tmp, pki=pki, server_cert=server_cert, ports=ports)
        ctx.endpoints.update({"ca_bundle": str(pki.ca_bundle), "services": {}, "lps_clients": [], "identities": []})
        ctx.options = {"psc": {"ecps_default": {"mode": "approve", "delay_ms": 0}}}
        import importlib

        launches = [importlib.import_module(m).prepare(ctx) for m in ("confiance.psc.launch", "confiance.api.launch")]
        sup = up_mod.Supervisor(ctx, launches)
        sup.start()
        lps = next(c for c in ctx.endpoints["lps_clients"] if c.get("cert"))
        up_port, relay_port = free_port(), free_port()
        common = {"cert": server_cert.cert_path, "key": server_cert.key_path, "ca": pki.ca_bundle}
        up_conf = nginx.write(tmp / "nginx-up", nginx.UPSTREAM, port=up_port, **common)
        relay_conf = nginx.write(
            tmp / "nginx-relay",
            nginx.RELAY,
            port=relay_port,
            up_port=up_port,
            client_cert=lps["cert"],
            client_key=lps["key"],
            **common,
        )
        for conf in (up_conf, relay_conf):
            procs.append(subprocess.Popen(["nginx", "-c", str(conf), "-p", str(conf.parent)], start_new_session=True))
        # Process group of what serves each target (its CPU is read around each wrk run).
        groups = {"direct": procs[0].pid, "nginx": procs[1].pid}
        bare_port, floor_port = free_port(), free_port()
        # The two Python reference relays: same TLS material, upstream given as port or URL.
        tls_args = [server_cert.cert_path, server_cert.key_path, str(pki.ca_bundle), lps["cert"], lps["key"]]
        for name, script, port, upstream in (
            ("floor_python_relay", "floor_relay.py", floor_port, str(up_port)),
            ("bare_python_relay", "bare_relay.py", bare_port, f"https://127.0.0.1:{up_port}"),
        ):
            relay = [sys.executable, str(ROOT / "bench/proxy" / script), str(port), upstream, *tls_args]
            procs.append(subprocess.Popen(relay, start_new_session=True))
            groups[name] = procs[-1].pid
        api_as = ctx.endpoints["services"]["api_as"]
        dmp = ctx.endpoints["services"]["dmp"]
        proxy_cfg = {
            "server": {
                "port": ports["proxy"],
                "cert": server_cert.cert_path,
                "key": server_cert.key_path,
                "workers": args.workers,
                "access_log": not args.no_access_log,
            },
            "sessions": {
                "store": args.store,
                **({"url": args.redis_url, "redis_prefix": f"bench:{os.getpid()}:"} if args.store == "redis" else {}),
                **({"url": f"sqlite:///{tmp / 'sessions.db'}"} if args.store == "sqlite" else {}),
            },
            "outbound": {"ca_bundle": str(pki.ca_bundle)},
            "psc": {"discovery_url": ctx.endpoints["services"]["psc"]["discovery"]},
            "lps_clients": [{"client_id": lps["client_id"], "auth": "mtls", "cert": lps["cert"], "key": lps["key"]}],
            "services": {
                "bench": {
                    "base_url": f"https://127.0.0.1:{up_port}",
                    "token_endpoint": api_as["token_endpoint"],
                    "revocation_endpoint": api_as["revocation_endpoint"],
                    "scope": "dmp",
                    "audience": dmp["audience"],
                }
            },
            "traces": {"url": f"sqlite:///{tmp / 'traces.db'}", "admin_token": "bench-admin-token-0123456789"},
        }
        cfg_path = tmp / "proxy.toml"
        cfg_path.write_text(dump_toml(proxy_cfg))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "confiance", "proxy", "serve", "--config", str(cfg_path)],
                start_new_session=True,
                # The proxy's JSON logs (an access line per request, by default) go to a file,
                # as they would to journald: not to this terminal, which would throttle it.
                stdout=open(tmp / "proxy.log", "wb"),  # noqa: SIM115 - the child owns it
                stderr=subprocess.STDOUT,
            )
        )
        groups["proxy"] = procs[-1].pid  # with its trace keeper (same process group)
        proxy_url = f"https://127.0.0.1:{ports['proxy']}"
        wait_http(f"{proxy_url}/healthz", pki.ca_bundle)
        wait_http(f"https://127.0.0.1:{up_port}/", pki.ca_bundle)
        wait_http(f"https://127.0.0.1:{relay_port}/send/bench/", pki.ca_bundle)
        nid = ctx.endpoints["identities"][0]["national_id"]
        with httpx.Client(base_url=proxy_url, verify=client_context(pki.ca_bundle), timeout=60) as c:
            r = c.post(
                "/connect",
                json={"nationalId": nid, "bindingMessage": "42", "clientId": lps["client_id"], "channel": "CARD"},
            )
            r.raise_for_status()
            sid = r.json()["proxy_session_id"]
            warm = c.get("/send/bench/hello")
            assert warm.status_code == 200, warm.text
            sizes = {
                "access_token": 1200,
                "refresh_token": 600,
                "id_token": 1200,
                "api_token": len(warm.request.headers.get("authorization", "")) or 1000,
            }
        cookie = f"Cookie: proxy_session_id={sid}"
        wait_http(f"https://127.0.0.1:{bare_port}/send/bench/", pki.ca_bundle)
        wait_http(f"https://127.0.0.1:{floor_port}/send/bench/", pki.ca_bundle)
        targets = {
            "direct": (f"https://127.0.0.1:{up_port}/hello", []),
            "nginx": (f"https://127.0.0.1:{relay_port}/send/bench/hello", []),
            "bare_python_relay": (f"https://127.0.0.1:{bare_port}/send/bench/hello", []),
            "floor_python_relay": (f"https://127.0.0.1:{floor_port}/send/bench/hello", []),
            "proxy": (f"{proxy_url}/send/bench/hello", [cookie]),
        }
        if args.only:
            targets = {k: v for k, v in targets.items() if k in args.only.split(",")}
        results: dict[str, Any] = {
            "machine": {"cores": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
            "settings": vars(args),
            "rounds": [],
            "saturation": {},
            "latency_1000rps": {},
            "latency_sequential": {},
        }
        for _name, (url, headers) in targets.items():
            wrk(url, 2, args.connections, args.threads, headers)  # warm-up (pools, TLS sessions)
        # Interleaved rounds: the machine is shared, so each round measures every target
        # back to back and the ratios are taken per round (then the median).
        for r in range(0 if args.skip_saturation else args.rounds):
            rnd = {
                name: wrk(url, args.duration, args.connections, args.threads, h, groups[name])
                for name, (url, h) in targets.items()
            }
            results["rounds"].append(rnd)
            print(
                f"round {r + 1}",
                {k: (v["rps"], f"{v['cpu_us_per_request']} µs CPU/req") for k, v in rnd.items()},
                flush=True,
            )
        for name in targets if results["rounds"] else ():
            results["saturation"][name] = {
                "rps_median": statistics.median(x[name]["rps"] for x in results["rounds"]),
                "cpu_us_per_request_median": statistics.median(
                    x[name]["cpu_us_per_request"] or 0.0 for x in results["rounds"]
                ),
            }
        if not args.skip_latency:
            before = overhead_buckets(proxy_url, pki.ca_bundle) if args.workers == 1 else {}
            for r in range(args.rounds):
                for name, (url, headers) in targets.items():
                    results["latency_1000rps"].setdefault(name, []).append(hey(url, args.duration, headers))
                print(f"latency round {r + 1}", {k: v[-1]["p99_ms"] for k, v in results["latency_1000rps"].items()})
                for name, (url, headers) in targets.items():
                    results["latency_sequential"].setdefault(name, []).append(hey(url, 0, headers, sequential=True))
                print(
                    f"sequential round {r + 1}", {k: v[-1]["p99_ms"] for k, v in results["latency_sequential"].items()}
                )
            if args.workers == 1:
                after = overhead_buckets(proxy_url, pki.ca_bundle)
                results["proxy_own_time_at_1000rps"] = {
                    f"p{int(q * 100)}_le_ms": (b * 1000 if (b := bucket_percentile(before, after, q)) else None)
                    for q in (0.5, 0.9, 0.99)
                }
                print("proxy's own time per /send (bucket upper bounds)", results["proxy_own_time_at_1000rps"])
        mem = subprocess.run(
            [sys.executable, str(ROOT / "bench/proxy/memory.py"), str(cfg_path), json.dumps(sizes), str(args.sessions)],
            capture_output=True,
            text=True,
            check=True,
        )
        results["memory"] = json.loads(mem.stdout.strip().splitlines()[-1])
        rounds = results["rounds"]

        def ratio(a: str, b: str) -> float | None:
            if a not in targets or b not in targets or not rounds:
                return None
            return round(statistics.median(x[a]["rps"] / x[b]["rps"] for x in rounds), 3)

        results["ratios"] = {
            "proxy_vs_nginx_throughput": ratio("proxy", "nginx"),
            "proxy_vs_bare_python_relay_throughput": ratio("proxy", "bare_python_relay"),
            "bare_python_relay_vs_nginx_throughput": ratio("bare_python_relay", "nginx"),
            "floor_python_relay_vs_nginx_throughput": ratio("floor_python_relay", "nginx"),
            "proxy_vs_floor_python_relay_throughput": ratio("proxy", "floor_python_relay"),
            "proxy_vs_direct_throughput": ratio("proxy", "direct"),
        }
        lat = results["latency_1000rps"]
        if lat:
            for name in ("proxy", "nginx", "bare_python_relay", "floor_python_relay"):
                if name not in lat or "direct" not in lat:
                    continue
                added = [a["p99_ms"] - d["p99_ms"] for a, d in zip(lat[name], lat["direct"], strict=True)]
                results["ratios"][f"p99_added_ms_{name}_median"] = round(statistics.median(added), 2)
                results["ratios"][f"p50_added_ms_{name}_median"] = round(
                    statistics.median(a["p50_ms"] - d["p50_ms"] for a, d in zip(lat[name], lat["direct"], strict=True)),
                    2,
                )
        for name, runs in results["latency_sequential"].items():
            results["ratios"][f"p99_sequential_ms_{name}_median"] = round(
                statistics.median(x["p99_ms"] for x in runs), 2
            )
        print(json.dumps(results, indent=2))
        (ROOT / "bench" / "proxy" / "last-results.json").write_text(json.dumps(results, indent=2) + "\n")
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        if sup is not None:
            sup.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
