"""API Pro Santé Connectée throughput: token exchanges/s and signsessiondata/s vs a bare endpoint.

Starts the PSC sandbox and the API (AS + resource services) exactly as `confiance up` does
(their launch modules, their own processes, HTTPS on loopback, test IGC-Santé PKI), gets a
real PSC access token by CIBA, then drives each endpoint from a load-generator process
(this script with ``--worker``: uvloop + a minimal keep-alive HTTP/1.1 client over mTLS,
lighter than aiohttp so the generator is less of a ceiling). Usage::

    .venv/bin/python bench/bench_api.py [--duration 8] [--concurrency 32] [--token-alg RS256|ES256]
        [--phases hello_rs,signsessiondata,hello_as,exchange,exchange_nocache]

Phases: ``hello_rs`` / ``hello_as`` (certificate required, nothing else: the ceiling),
``signsessiondata`` (Bearer + cnf + JWS signature), ``exchange`` (RFC 8693, PSC answer
cached, as for a proxy exchanging one PSC token for several services), ``exchange_nocache``
(a second API instance with ``cache_seconds = 0``: one PSC introspection per exchange).
Targets (issue #4): ≥ 1,500 exchanges/s; signsessiondata ≥ 50 % of hello on the same server.
The machine has 2 cores shared by the servers, the load generator and anything else running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ----------------------------------------------------------------------------- load generator
async def _conn(host: str, port: int, ctx: ssl.SSLContext, request: bytes, deadline: float, stats: dict) -> None:
    """One kept-alive connection sending ``request`` back to back until ``deadline``."""
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
    try:
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            if length:
                await reader.readexactly(length)
            stats[status] = stats.get(status, 0) + 1
    finally:
        writer.close()


async def _drive(spec: dict) -> dict:
    ctx = ssl.create_default_context(cafile=spec["ca"])
    ctx.load_cert_chain(spec["cert"], spec["key"])
    url = urlsplit(spec["url"])
    host, port = url.hostname or "127.0.0.1", url.port or 443
    requests = []
    # One variant per connection (round robin): e.g. each connection its own PSC session.
    for variant in spec.get("variants") or [{}]:
        body = variant.get("body", spec.get("body", "")).encode()
        headers = [f"{spec['method']} {url.path} HTTP/1.1", f"Host: {host}:{port}"]
        merged = {**spec.get("headers", {}), **variant.get("headers", {})}
        headers += [f"{k}: {v}" for k, v in merged.items()]
        if body:
            headers.append(f"Content-Length: {len(body)}")
        requests.append(("\r\n".join(headers) + "\r\n\r\n").encode() + body)
    n = spec["concurrency"]
    # Warm-up: open every connection (TLS handshakes are not what we measure).
    warm: dict = {}
    await asyncio.gather(
        *(_conn(host, port, ctx, requests[i % len(requests)], time.perf_counter() + 0.5, warm) for i in range(n))
    )
    print(json.dumps({"warm": sum(warm.values())}), flush=True)  # the parent reads the servers' CPU clocks now
    stats: dict = {}
    start = time.perf_counter()
    deadline = start + spec["duration"]
    await asyncio.gather(*(_conn(host, port, ctx, requests[i % len(requests)], deadline, stats) for i in range(n)))
    elapsed = time.perf_counter() - start
    total = sum(stats.values())
    return {"requests": total, "seconds": elapsed, "rps": total / elapsed, "statuses": stats}


def worker() -> None:
    import uvloop

    spec = json.loads(sys.stdin.read())
    result = uvloop.run(_drive(spec))
    print(json.dumps(result))


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes (Linux /proc), independent of other machine load."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def run_phase(spec: dict, server_pids: list[int]) -> dict:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(spec))
    proc.stdin.close()
    proc.stdout.readline()  # warm-up done: connections open
    cpu0 = cpu_seconds(server_pids)
    out = proc.stdout.read()
    cpu1 = cpu_seconds(server_pids)
    if proc.wait() != 0:
        raise RuntimeError(proc.stderr.read()[-2000:] if proc.stderr else "worker failed")
    result: dict = json.loads(out)
    # Server CPU per request: what the service costs, whatever else the machine is doing.
    result["server_cpu_us"] = (cpu1 - cpu0) / max(1, result["requests"]) * 1e6
    return result


# ----------------------------------------------------------------------------- orchestration
def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def wait_healthy(url: str, ca: str, timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, verify=ca, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def ciba_login(h: Any, psc: dict[str, Any], client_id: str, national_id: str) -> dict[str, Any]:
    """A real PSC authentication (sandbox e-CPS approves at once)."""
    r = h.post(
        psc["ciba_endpoint"],
        data={
            "client_id": client_id,
            "scope": "openid scope_all",
            "acr_values": "eidas1",
            "login_hint": national_id,
            "binding_message": "42",
            "channel": "CARD",
        },
    )
    r.raise_for_status()
    rid = r.json()["auth_req_id"]
    for _ in range(200):
        t = h.post(
            psc["token_endpoint"],
            data={"client_id": client_id, "grant_type": "urn:openid:params:grant-type:ciba", "auth_req_id": rid},
        )
        if t.status_code == 200:
            tokens: dict[str, Any] = t.json()
            return tokens
        time.sleep(0.02)
    raise RuntimeError("CIBA: no answer")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", action="store_true")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--token-alg", default="ES256", choices=["RS256", "ES256", "PS256"])
    p.add_argument("--phases", default="hello_rs,signsessiondata,hello_as,exchange,exchange_nocache")
    p.add_argument("--rounds", type=int, default=2, help="phases run in turn this many times (ABAB), rates averaged")
    a = p.parse_args()
    if a.worker:
        worker()
        return

    import tomllib

    import httpx

    from confiance.api import launch as api_launch
    from confiance.core.launch import LaunchContext, confiance_argv
    from confiance.core.tls import ClientIdentity, client_context
    from confiance.pki import Pki
    from confiance.psc import launch as psc_launch

    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    pki = Pki.init(tmp / "pki")
    server = pki.ensure_server("localhost", dns=["localhost"], ips=["127.0.0.1"])
    ports = {"psc": free_port(), "api_as": free_port(), "api_rs": free_port(), "proxy": 0, "guichet": 0}
    ctx = LaunchContext(
        state_dir=tmp,
        pki=pki,
        server_cert=server,
        ports=ports,
        options={
            "psc": {
                "ecps_default": {"mode": "approve", "delay_ms": 0},
                "lifetimes": {"ciba_interval": 0, "access_token": 3600, "session_idle": 3600},
            },
            "api": {"token_alg": a.token_alg},
        },
        endpoints={"services": {}, "lps_clients": [], "identities": []},
    )
    psc_l = psc_launch.prepare(ctx)
    api_l = api_launch.prepare(ctx)
    # A second API instance whose AS introspects PSC on every exchange (no cache).
    nocache_dir = tmp / "nocache"
    nocache_dir.mkdir()
    cfg_text = Path(api_l.argv[-1]).read_text()
    as2, rs2 = free_port(), free_port()
    nc = tomllib.loads(cfg_text)
    cfg2 = (
        cfg_text.replace(f"port = {ports['api_as']}", f"port = {as2}")
        .replace(f"port = {ports['api_rs']}", f"port = {rs2}")
        .replace(f":{ports['api_as']}", f":{as2}")
        .replace(f":{ports['api_rs']}", f":{rs2}")
        .replace("[psc]\n", "[psc]\ncache_seconds = 0\n", 1)
        .replace(str(tmp / "api" / "access-log"), str(nocache_dir / "access-log"))
    )
    assert nc["psc"]["client_id"]
    cfg2_path = nocache_dir / "api.toml"
    cfg2_path.write_text(cfg2)
    procs = [
        start(psc_l.argv, tmp / "psc.log"),
        start(api_l.argv, tmp / "api.log"),
        start(confiance_argv("api", "serve", "--config", str(cfg2_path), "--log-level", "warning"), tmp / "api2.log"),
    ]
    ca = str(pki.ca_bundle)
    try:
        wait_healthy(psc_l.health_url, ca)
        wait_healthy(api_l.health_url, ca)
        wait_healthy(f"https://127.0.0.1:{as2}/health", ca)
        ep = ctx.endpoints
        lps = next(c for c in ep["lps_clients"] if c["cert"])
        identity = ClientIdentity(Path(lps["cert"]), Path(lps["key"]))
        psc = ep["services"]["psc"]
        token_url = ep["services"]["api_as"]["token_endpoint"]
        form_hdr = {"Content-Type": "application/x-www-form-urlencoded"}
        exchange_forms: list[str] = []
        sign_variants: list[dict[str, Any]] = []
        # One PSC session per connection, as many professionals behind one proxy.
        with httpx.Client(verify=client_context(ca, identity)) as h:
            for i in range(a.concurrency):
                ident = ep["identities"][0]["national_id"]  # a new PSC session each time
                psc_tokens = ciba_login(h, psc, lps["client_id"], ident)
                form = urlencode(
                    {
                        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                        "subject_token": psc_tokens["access_token"],
                        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                        "subject_issuer": "psc",
                        "scope": "signsessiondata",
                        "client_id": lps["client_id"],
                    }
                )
                exchange_forms.append(form)
                api = h.post(token_url, content=form, headers=form_hdr)
                api.raise_for_status()
                sign_variants.append(
                    {
                        "body": json.dumps(
                            {
                                "nationalId": ident,
                                "clientID": lps["client_id"],
                                "proxy_session_id": f"bench-session-{i}",
                                "session_state": psc_tokens["session_state"],
                            }
                        ),
                        "headers": {"Authorization": f"Bearer {api.json()['access_token']}"},
                    }
                )
        as_url, rs_url = ep["services"]["api_as"]["url"], ep["services"]["signsessiondata"]["url"]
        base = {"ca": ca, "cert": lps["cert"], "key": lps["key"], "concurrency": a.concurrency, "duration": a.duration}
        exchange_variants = [{"body": f} for f in exchange_forms]
        phases: dict[str, dict[str, Any]] = {
            "hello_rs": {"url": f"{rs_url}/hello", "method": "GET"},
            "signsessiondata": {
                "url": f"{rs_url}/signsessiondata",
                "method": "POST",
                "variants": sign_variants,
                "headers": {"Content-Type": "application/json"},
            },
            "hello_as": {"url": f"{as_url}/hello", "method": "GET"},
            "exchange": {
                "url": f"{as_url}/token",
                "method": "POST",
                "variants": exchange_variants,
                "headers": form_hdr,
            },
            "exchange_nocache": {
                "url": f"https://127.0.0.1:{as2}/token",
                "method": "POST",
                "variants": exchange_variants,
                "headers": form_hdr,
            },
        }
        # Rounds alternate the phases (A B A B …) so a change in background load hits every
        # phase alike; ratios are taken between phases of the same round.
        rounds: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        for rnd in range(a.rounds):
            for name in a.phases.split(","):
                pids = [procs[2].pid, procs[0].pid] if name == "exchange_nocache" else [procs[1].pid]
                r = run_phase({**base, **phases[name]}, pids)
                bad = {k: v for k, v in r["statuses"].items() if k != "200"}
                rounds.setdefault(name, []).append(r["rps"])
                cpu.setdefault(name, []).append(r["server_cpu_us"])
                print(
                    f"round {rnd + 1} {name:18s} {r['rps']:9.0f} req/s  server CPU {r['server_cpu_us']:6.0f} µs/req"
                    f"  non-200={bad}",
                    flush=True,
                )
        mean = {k: sum(v) / len(v) for k, v in rounds.items()}
        summary: dict[str, Any] = {
            "token_alg": a.token_alg,
            "concurrency": a.concurrency,
            "duration": a.duration,
            "rounds": a.rounds,
            "cpus": os.cpu_count(),
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "mean_rps": {k: round(v) for k, v in mean.items()},
            "per_round_rps": {k: [round(x) for x in v] for k, v in rounds.items()},
            "server_cpu_us_per_request": {k: round(sum(v) / len(v)) for k, v in cpu.items()},
            # What one fully available core would sustain at that CPU cost.
            "one_core_capacity_rps": {k: round(1e6 / (sum(v) / len(v))) for k, v in cpu.items()},
        }
        if "hello_rs" in rounds and "signsessiondata" in rounds:
            ratios = [x / h for x, h in zip(rounds["signsessiondata"], rounds["hello_rs"], strict=True)]
            summary["signsessiondata_vs_hello_per_round"] = [round(x, 3) for x in ratios]
            summary["signsessiondata_vs_hello"] = round(sum(ratios) / len(ratios), 3)
        if "hello_rs" in cpu and "signsessiondata" in cpu:
            summary["signsessiondata_vs_hello_cpu"] = round(
                (sum(cpu["hello_rs"]) / len(cpu["hello_rs"]))
                / (sum(cpu["signsessiondata"]) / len(cpu["signsessiondata"])),
                3,
            )
        if "exchange" in mean:
            summary["exchange_target_met"] = mean["exchange"] >= 1500
        print(json.dumps(summary))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
