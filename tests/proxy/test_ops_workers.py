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
import pytest
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


def _shared(tmp_path: Path, route: str) -> float:
    """``proxy_requests_total{route, code=200}`` summed over the workers' snapshot files."""
    total = 0.0
    for snap in tmp_path.glob("confiance-proxy-metrics-*/worker-*.json"):
        try:
            families = json.loads(snap.read_text())["families"]
        except (OSError, ValueError):
            continue  # being replaced (atomic rename): read again next time
        for name, _typ, _doc, samples in families:
            if name == "proxy_requests":
                total += sum(v for _, labels, v in samples if labels == {"route": route, "code": "200"})
    return total


@pytest.mark.parametrize("admin", [False, True], ids=["main-port", "admin-listener"])
def test_two_workers_metrics_summed_at_every_scrape(tmp_path: Path, admin: bool) -> None:
    """``admin``: /metrics on ``server.admin_listen`` (every worker serves it too), the
    LPS-facing port then answering 404 there."""
    pki = Pki.init(tmp_path / "pki")
    server = pki.issue_server("w")
    lps = pki.issue_client("31234567890055", "lps-w", name="lps-w")
    port = _free_port()
    admin_port = _free_port()
    cfg = {
        "server": {
            "port": port,
            "cert": server.cert_path,
            "key": server.key_path,
            "workers": 2,
            **({"admin_listen": f"127.0.0.1:{admin_port}"} if admin else {}),
        },
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
            env={**os.environ, "TMPDIR": str(tmp_path)},  # the supervisor's metrics directory: here
        )
    url = f"https://127.0.0.1:{port}"
    scrape_url = f"https://127.0.0.1:{admin_port if admin else port}/metrics"
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
        if admin:
            with httpx.Client(verify=verify, timeout=10) as c:
                assert c.get(f"{url}/metrics").status_code == 404
        # A scrape sums the answering worker's live counts and the others' last snapshots
        # (shared every second). Once the snapshots on disk hold all n + 1 requests, every
        # worker's view does, whichever answers: wait on that state, not on one scrape.
        while _shared(tmp_path, "healthz") < n + 1:
            assert proc.poll() is None and time.monotonic() < deadline, output()
            time.sleep(0.2)
        while True:
            with httpx.Client(verify=verify, timeout=10) as c:
                text = c.get(scrape_url).text
            both = _value(text, "proxy_workers_reporting") == 2
            if both and _value(text, "proxy_requests_total", route="healthz", code="200") >= n + 1:
                break
            assert proc.poll() is None and time.monotonic() < deadline, output()
            time.sleep(0.2)
        seen = []
        for _ in range(8):
            with httpx.Client(verify=verify, timeout=10) as c:
                text = c.get(scrape_url).text
            seen.append(_value(text, "proxy_requests_total", route="healthz", code="200"))
            assert _value(text, "proxy_workers_reporting") == 2
            assert _value(text, "confiance_build_info") == 1
            assert _value(text, "process_resident_memory_bytes") > 0
            assert _value(text, "proxy_request_duration_seconds_count", route="healthz") >= n + 1
        assert all(v >= n + 1 for v in seen) and seen == sorted(seen), seen  # never one worker's share
        access = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        started = [x for x in access if x.get("message", "").startswith("proxy starting")]
        assert len({x["pid"] for x in started}) == 1  # the start-up line: once, by the supervisor
        assert started[0]["admin_listen"] == ([f"127.0.0.1:{admin_port}"] if admin else [])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, output()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
