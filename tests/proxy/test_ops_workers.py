"""Metrics scraped across two workers: every scrape reports the requests of both (today
successive scrapes read 5, 3, 3, 5: one worker each time)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from confiance.core.config import dump_toml
from confiance.core.tls import client_context
from confiance.pki import Pki


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _value(text: str, name: str, **labels: str) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def _shared_healthz(tmp: Path) -> float:
    """/healthz answers counted in the workers' snapshot files (0 until both exist)."""
    files = list(tmp.glob("confiance-proxy-metrics-*/worker-*.json"))
    if len(files) < 2:
        return 0.0
    total = 0.0
    for f in files:
        try:
            fams = json.loads(f.read_text())["families"]
        except (OSError, ValueError):
            return 0.0
        for _name, _typ, _doc, samples in fams:
            for sname, labels, value in samples:
                if sname == "proxy_requests_total" and labels == {"route": "healthz", "code": "200"}:
                    total += value
    return total


def test_two_workers_metrics_summed_at_every_scrape(tmp_path: Path) -> None:
    pki = Pki.init(tmp_path / "pki")
    server = pki.issue_server("w")
    lps = pki.issue_client("31234567890055", "lps-w", name="lps-w")
    port = _free_port()
    cfg = {
        "server": {"port": port, "cert": server.cert_path, "key": server.key_path, "workers": 2},
        "outbound": {"ca_bundle": str(pki.ca_bundle)},
        "psc": {"discovery_url": "https://127.0.0.1:9/.well-known/openid-configuration"},
        "lps_clients": [{"client_id": "lps", "auth": "mtls", "cert": lps.cert_path, "key": lps.key_path}],
        "sessions": {"store": "sqlite", "url": f"sqlite:///{tmp_path}/sessions.db"},
        "traces": {"url": f"sqlite:///{tmp_path}/traces.db"},
    }
    path = tmp_path / "proxy.toml"
    path.write_text(dump_toml(cfg))
    log = tmp_path / "proxy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "confiance", "proxy", "serve", "--config", str(path)],
            stdout=out,
            stderr=out,
            env={**os.environ, "TMPDIR": str(tmp_path)},  # the workers' metrics snapshots land here
        )
    url = f"https://127.0.0.1:{port}"
    verify = client_context(pki.ca_bundle)

    def output() -> str:
        return log.read_text(errors="replace")[-3000:]

    try:
        deadline = time.monotonic() + 90  # a bound for a dead process, not a speed check
        while True:
            assert proc.poll() is None, output()
            try:
                if httpx.get(f"{url}/healthz", verify=verify, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, output()
            time.sleep(0.1)
        n = 40
        for _ in range(n):  # a new connection each: the kernel spreads them over the workers
            with httpx.Client(verify=verify, timeout=10) as c:
                assert c.get(f"{url}/healthz").status_code == 200
        # Both workers' snapshots are in every scrape once shared (≤ 1 s): wait on that state.
        while True:
            with httpx.Client(verify=verify, timeout=10) as c:
                text = c.get(f"{url}/metrics").text
            both = _value(text, "proxy_workers_reporting") == 2
            # Every later scrape sums one worker's live counts with the other's snapshot: once
            # both snapshots hold all the requests, every scrape does (counts only grow).
            if both and _shared_healthz(tmp_path) >= n + 1:
                break
            assert proc.poll() is None and time.monotonic() < deadline, output()
            time.sleep(0.2)
        seen = []
        for _ in range(8):
            with httpx.Client(verify=verify, timeout=10) as c:
                text = c.get(f"{url}/metrics").text
            seen.append(_value(text, "proxy_requests_total", route="healthz", code="200"))
            assert _value(text, "proxy_workers_reporting") == 2
            assert _value(text, "confiance_build_info") == 1
            assert _value(text, "process_resident_memory_bytes") > 0
            assert _value(text, "proxy_request_duration_seconds_count", route="healthz") >= n + 1
        assert all(v >= n + 1 for v in seen) and seen == sorted(seen), seen  # never one worker's share
        access = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        pids = {x["pid"] for x in access if x.get("message", "").startswith("proxy starting")}
        assert len(pids) == 1  # the start-up line: once, by the supervisor
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, output()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
