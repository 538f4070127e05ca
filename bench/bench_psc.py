"""PSC sandbox throughput: refresh grants/s and complete CIBA authentications/s.

Starts the sandbox exactly as `confiance up` does (its own process, `confiance psc serve`,
HTTPS on loopback, test IGC-Santé PKI) and drives it from a separate load-generator
process (bench/psc/loadgen.py, aiohttp keep-alive). Usage::

    .venv/bin/python bench/bench_psc.py [--alg RS256|ES256|PS256] [--auth secret|mtls]
        [--duration 10] [--concurrency 32] [--mode refresh,ciba] [--loadgens 1]
        [--workers 2] [--store sqlite|redis://127.0.0.1:6379/0|memory] [--client raw|aiohttp]

Targets (issues #3, #20): ≥ 2,000 refresh grants/s and ≥ 500 complete CIBA
authentications/s in RS256, with ``--workers`` sharing the store (SQLite by default, as a
team's sandbox runs). The machine has 2 cores shared by the server, the load generator and
anything else running; ``per_server_cpu_s`` (work per second of the server processes' CPU)
is the figure that does not depend on that contention.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from confiance.core.config import dump_toml  # noqa: E402
from confiance.core.tls import client_context  # noqa: E402
from confiance.pki import Pki  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its children still running (Linux /proc), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(c)) for c in children)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--alg", default="RS256", choices=["RS256", "ES256", "PS256"])
    p.add_argument("--auth", default="secret", choices=["secret", "mtls"])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--mode", default="refresh,ciba")
    p.add_argument("--loadgens", type=int, default=1, help="load-generator processes")
    p.add_argument("--workers", type=int, default=2, help="sandbox worker processes (share the store)")
    p.add_argument("--client", default="raw", choices=["raw", "aiohttp"], help="load generator's HTTP client")
    p.add_argument("--store", default="sqlite", help="sqlite (file in the temp dir), memory, or a redis:// URL")
    a = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-psc-"))
    pki = Pki.init(tmp / "pki")
    server = pki.issue_server("psc", dns=["localhost"], ips=["127.0.0.1"])
    client = pki.issue_client("3" + "90000000003013", "bench-lps", name="bench-lps")
    port = free_port()
    secret = secrets.token_urlsafe(24)
    store = f"sqlite:///{tmp / 'psc.sqlite3'}" if a.store == "sqlite" else a.store
    cfg = {
        "host": "127.0.0.1",
        "port": port,
        "signing_alg": a.alg,
        "store": store,
        "store_prefix": f"bench{secrets.token_hex(4)}:",
        "keys_path": str(tmp / "keys.json"),
        "workers": a.workers,
        "tls": {
            "cert": server.cert_path,
            "key": server.key_path,
            "ca_bundle": str(pki.ca_bundle),
            "crl": str(pki.crl_path),
        },
        "lifetimes": {"ciba_interval": 0},
        "ecps_default": {"mode": "approve", "delay_ms": 0},
        "clients": [
            {"client_id": "bench-secret", "secret": secret},
            {"client_id": "bench-mtls", "tls_client_auth_subject_dn": client.subject_dn, "espace_de_confiance": True},
        ],
    }
    cfg_path = tmp / "psc.toml"
    cfg_path.write_text(dump_toml(cfg))
    log = open(tmp / "server.log", "wb")  # noqa: SIM115
    srv = subprocess.Popen(
        [sys.executable, "-m", "confiance", "psc", "serve", "--config", str(cfg_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"https://127.0.0.1:{port}/auth/realms/esante-wallet"
    try:
        with httpx.Client(verify=client_context(pki.ca_bundle)) as http:
            for _ in range(300):
                try:
                    if http.get(f"{base}/.well-known/openid-configuration").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                raise SystemExit("server did not start; see " + str(tmp / "server.log"))
        from confiance.psc.identities import seeded_identities

        nid = next(i.national_id for i in seeded_identities() if i.ecps is None)
        auth = ["--client-id", "bench-secret", "--secret", secret]
        if a.auth == "mtls":
            auth = ["--client-id", "bench-mtls", "--cert", client.cert_path, "--key", client.key_path]
        for mode in a.mode.split(","):
            argv = [
                sys.executable,
                str(ROOT / "bench" / "psc" / "loadgen.py"),
                "--mode", mode,
                "--ciba", f"{base}/protocol/openid-connect/ext/ciba/auth",
                "--token", f"{base}/protocol/openid-connect/token",
                "--ca", str(pki.ca_bundle),
                "--national-id", nid,
                "--concurrency", str(a.concurrency),
                "--duration", str(a.duration),
                "--client", a.client,
                *auth,
            ]  # fmt: skip
            cpu_before = cpu_seconds(srv.pid)
            procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(a.loadgens)]
            results = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
            cpu = cpu_seconds(srv.pid) - cpu_before
            total = sum(r["rate"] for r in results)
            done = sum(r["ok"] + r["warmup_ok"] for r in results)
            print(
                json.dumps(
                    {
                        "mode": mode,
                        "alg": a.alg,
                        "auth": a.auth,
                        "loadgens": a.loadgens,
                        "workers": a.workers,
                        "store": a.store,
                        "concurrency": a.concurrency,
                        "rate_per_s": round(total, 1),
                        # contention-independent: work done per second of server CPU
                        "per_server_cpu_s": round(done / cpu, 1) if cpu > 0 else None,
                        "errors": sum(r["errors"] for r in results),
                        "p50_ms": results[0]["p50_ms"],
                        "p99_ms": results[0]["p99_ms"],
                        "loadavg_1m_after": round(os.getloadavg()[0], 2),
                    }
                ),
                flush=True,
            )
    finally:
        srv.terminate()
        srv.wait(timeout=20)
        if store.startswith("redis"):  # leave the Redis as found
            import redis

            r = redis.Redis.from_url(store)
            keys = list(r.scan_iter(f"{cfg['store_prefix']}*"))
            if keys:
                r.delete(*keys)


if __name__ == "__main__":
    main()
