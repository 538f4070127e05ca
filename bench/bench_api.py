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
    body = spec.get("body", "").encode()
    headers = [f"{spec['method']} {url.path} HTTP/1.1", f"Host: {host}:{port}"]
    headers += [f"{k}: {v}" for k, v in spec.get("headers", {}).items()]
    if body:
        headers.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
    # Warm-up: open every connection (TLS handshakes are not what we measure).
    warm: dict = {}
    await asyncio.gather(
        *(_conn(host, port, ctx, request, time.perf_counter() + 0.5, warm) for _ in range(spec["concurrency"]))
    )
    stats: dict = {}
    start = time.perf_counter()
    deadline = start + spec["duration"]
    await asyncio.gather(*(_conn(host, port, ctx, request, deadline, stats) for _ in range(spec["concurrency"])))
    elapsed = time.perf_counter() - start
    total = sum(stats.values())
    return {"requests": total, "seconds": elapsed, "rps": total / elapsed, "statuses": stats}


def worker() -> None:
    import uvloop

    spec = json.loads(sys.stdin.read())
    result = uvloop.run(_drive(spec))
    print(json.dumps(result))


def run_phase(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker"], input=json.dumps(spec), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    result: dict = json.loads(proc.stdout)
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", action="store_true")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--token-alg", default="ES256", choices=["RS256", "ES256", "PS256"])
    p.add_argument("--phases", default="hello_rs,signsessiondata,hello_as,exchange,exchange_nocache")
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
        nid = ep["identities"][0]["national_id"]
        with httpx.Client(verify=client_context(ca, identity)) as h:
            r = h.post(
                psc["ciba_endpoint"],
                data={
                    "client_id": lps["client_id"],
                    "scope": "openid scope_all",
                    "acr_values": "eidas1",
                    "login_hint": nid,
                    "binding_message": "42",
                    "channel": "CARD",
                },
            )
            r.raise_for_status()
            rid = r.json()["auth_req_id"]
            for _ in range(100):
                t = h.post(
                    psc["token_endpoint"],
                    data={
                        "client_id": lps["client_id"],
                        "grant_type": "urn:openid:params:grant-type:ciba",
                        "auth_req_id": rid,
                    },
                )
                if t.status_code == 200:
                    break
                time.sleep(0.05)
            psc_tokens = t.json()
            exchange_form = urlencode(
                {
                    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                    "subject_token": psc_tokens["access_token"],
                    "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                    "subject_issuer": "psc",
                    "scope": "signsessiondata",
                    "client_id": lps["client_id"],
                }
            )
            api_token = h.post(
                ep["services"]["api_as"]["token_endpoint"],
                content=exchange_form,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ).json()["access_token"]
        session_body = json.dumps(
            {
                "nationalId": nid,
                "clientID": lps["client_id"],
                "proxy_session_id": "bench-session",
                "session_state": psc_tokens["session_state"],
            }
        )
        as_url, rs_url = ep["services"]["api_as"]["url"], ep["services"]["signsessiondata"]["url"]
        base = {"ca": ca, "cert": lps["cert"], "key": lps["key"], "concurrency": a.concurrency, "duration": a.duration}
        form_hdr = {"Content-Type": "application/x-www-form-urlencoded"}
        phases: dict[str, dict[str, Any]] = {
            "hello_rs": {"url": f"{rs_url}/hello", "method": "GET"},
            "signsessiondata": {
                "url": f"{rs_url}/signsessiondata",
                "method": "POST",
                "body": session_body,
                "headers": {"Authorization": f"Bearer {api_token}", "Content-Type": "application/json"},
            },
            "hello_as": {"url": f"{as_url}/hello", "method": "GET"},
            "exchange": {"url": f"{as_url}/token", "method": "POST", "body": exchange_form, "headers": form_hdr},
            "exchange_nocache": {
                "url": f"https://127.0.0.1:{as2}/token",
                "method": "POST",
                "body": exchange_form,
                "headers": form_hdr,
            },
        }
        results: dict[str, dict] = {}
        for name in a.phases.split(","):
            results[name] = run_phase({**base, **phases[name]})
            r = results[name]
            print(f"{name:18s} {r['rps']:9.0f} req/s  statuses={r['statuses']}", flush=True)
        summary: dict[str, Any] = {
            "token_alg": a.token_alg,
            "concurrency": a.concurrency,
            "duration": a.duration,
            "cpus": os.cpu_count(),
            "results": {k: round(v["rps"]) for k, v in results.items()},
        }
        if "hello_rs" in results and "signsessiondata" in results:
            summary["signsessiondata_vs_hello"] = round(
                results["signsessiondata"]["rps"] / results["hello_rs"]["rps"], 3
            )
        if "exchange" in results:
            summary["exchange_target_met"] = results["exchange"]["rps"] >= 1500
        print(json.dumps(summary, indent=2))
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
