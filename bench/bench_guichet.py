"""Guichet throughput: signed trust list, authenticated API reads, evidence-deposit workflow.

Starts the guichet as `confiance up` does (its own process, `confiance guichet serve`, HTTP
on loopback, SQLite) with ``--habs`` valid habilitations seeded directly in the database
(each with a certificate on its component), then drives it with ``hey`` (separate process)
for ``--duration`` seconds at ``--concurrency``. Reference in the same run: GET /health.
Usage::

    .venv/bin/python bench/bench_guichet.py [--habs 200] [--duration 5] [--concurrency 8]

No speed target in issue 7; figures in docs/benchmarks/guichet.md. The machine has 2 cores
shared by the server, hey and anything else running.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from confiance.guichet import schemas as sc  # noqa: E402
from confiance.guichet.app import build_service  # noqa: E402
from confiance.guichet.config import GuichetConfig  # noqa: E402
from confiance.guichet.db import Candidature, CertificateRow, Component, Habilitation, Organisation, Solution  # noqa: E402
from confiance.guichet.domain.model import AnsRole  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def seed(cfg: GuichetConfig, habs: int) -> str:
    svc = build_service(cfg)
    svc.bootstrap_account("admin@ans.bench", "Admin", None, [AnsRole.ADMIN])
    now = dt.datetime.now(dt.UTC)
    with svc.db.transaction() as s:
        for i in range(habs):
            org = Organisation(name=f"Org {i}", country="FR", siren=None, registration_number=None, created_at=now)
            s.add(org)
            s.flush()
            sol = Solution(organisation_id=org.id, name=f"Proxy {i}", kind="proxy", created_at=now)
            s.add(sol)
            s.flush()
            comp = Component(solution_id=sol.id, kind="PROXY", name=f"proxy-{i}")
            s.add(comp)
            cand = Candidature(
                organisation_id=org.id,
                created_by=1,
                role="ELP",
                level="edc",
                path="trust_space",
                solution_id=sol.id,
                software_name=sol.name,
                software_version="1.0",
                status="accordee",
                referentiel_version="2025.1",
                created_at=now,
                updated_at=now,
            )
            s.add(cand)
            s.flush()
            s.add(
                CertificateRow(
                    candidature_id=cand.id,
                    component_id=comp.id,
                    environment="BAS",
                    pki_name=f"b{i}",
                    serial=str(i),
                    subject_dn=f"CN=proxy-{i},OU=3{i:013d},C=FR",
                    x5t_s256="x" * 43,
                    not_after="2029-01-01",
                    cert_pem="",
                    issued_at=now,
                )
            )
            s.add(
                Habilitation(
                    candidature_id=cand.id,
                    organisation_id=org.id,
                    role="ELP",
                    environment="BAS",
                    solution_id=sol.id,
                    granted_at=now,
                    valid_until=now + dt.timedelta(days=1000),
                    status="valide",
                    relies_on=[],
                )
            )
    token = svc.issue_token_for("admin@ans.bench").access_token
    svc.db.dispose()
    _ = sc  # schemas imported for type side effects only
    return token


def hey(url: str, duration: float, concurrency: int, token: str | None = None) -> float:
    cmd = ["hey", "-z", f"{duration}s", "-c", str(concurrency)]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
    bad = [c for c in codes if c[0] != "200"]
    if bad:
        raise SystemExit(f"réponses non 200 : {bad}")
    return float(m.group(1)) if m else 0.0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--habs", type=int, default=200)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--concurrency", type=int, default=8)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-guichet-"))
    port = free_port()
    cfg_path = tmp / "guichet.toml"
    cfg_path.write_text(f'port = {port}\ndata_dir = "{tmp / "data"}"\npublic_url = "http://127.0.0.1:{port}"\n')
    cfg = GuichetConfig(port=port, data_dir=tmp / "data", public_url=f"http://127.0.0.1:{port}")
    token = seed(cfg, a.habs)
    proc = subprocess.Popen(
        [sys.executable, "-m", "confiance", "guichet", "serve", "--config", str(cfg_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ},
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        size = len(httpx.get(base + "/trust-list").content)
        ref = hey(base + "/health", a.duration, a.concurrency)
        tl = hey(base + "/trust-list", a.duration, a.concurrency)
        api = hey(base + "/api/habilitations", a.duration, a.concurrency, token)
        print(
            f"habilitations: {a.habs}  trust list: {size} octets  (2 cœurs partagés ; hey -c {a.concurrency} -z {a.duration}s)"
        )
        print(f"GET /health (référence)        {ref:8.1f} req/s")
        print(f"GET /trust-list (JWS ES256)    {tl:8.1f} req/s  ({tl / ref:.3f} × référence)")
        print(f"GET /api/habilitations (jeton) {api:8.1f} req/s  ({api / ref:.3f} × référence)")
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    main()
