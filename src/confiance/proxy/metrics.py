"""Prometheus metrics, in a registry of our own (several proxies may live in one test process).

The per-request metrics (request counts, latency histograms) are plain integers updated on
the event loop and exported by a collector at scrape time: prometheus_client's own
``Histogram.observe`` takes a lock and walks the buckets in Python, which on /send cost as
much as the session lookup and the path check together (cProfile under load). Everything
else (rare events) uses prometheus_client's types directly.

Several workers (``[server] workers > 1``): a scrape reaches one worker, which alone would
report its own share (successive scrapes read 5, 3, 3, 5). So each worker writes a snapshot
of all its samples to a per-run directory (``CONFIANCE_PROXY_METRICS_DIR``, created by the
supervisor, one file per worker pid, replaced atomically every ``SHARE_INTERVAL`` seconds
and at stop), and the worker that answers a scrape adds its live samples to the others'
snapshots: counters and histograms are summed (a worker that stopped keeps its last counts,
so totals never go down), gauges follow :data:`GAUGE_MERGE`. The others' numbers are at
most ``SHARE_INTERVAL`` old. Why not prometheus_client's multiprocess mode: it writes every
increment to a memory-mapped file under a lock, the per-request cost the loop metrics
exist to avoid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from confiance import __version__

log = logging.getLogger("confiance.proxy.metrics")

SHARE_DIR_ENV = "CONFIANCE_PROXY_METRICS_DIR"
SHARE_INTERVAL = 1.0
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# How one gauge of several workers becomes one number; a gauge not named here is summed.
GAUGE_MERGE = {
    "proxy_active_sessions": "max",  # every worker counts the same shared store
    "process_start_time_seconds": "min",
    "process_max_fds": "max",
    "confiance_build_info": "max",
}

_CODES = {code: str(code) for code in range(100, 600)}
_SEND_KEYS = {code: ("send", s) for code, s in _CODES.items()}

Sample = tuple[str, dict[str, str], float]  # name, labels, value


class LoopHistogram:
    """A histogram only the event loop thread updates: no lock, one bisect per observation."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus "le").
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(running)))
        return out


class _LoopCollector(Collector):
    """Exports the loop-updated metrics at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        req = CounterMetricFamily(
            "proxy_requests", "Requests answered, by route and status code", labels=["route", "code"]
        )
        for (route, code), n in sorted(m.request_counts.items()):
            req.add_metric([route, code], n)
        yield req
        lat = HistogramMetricFamily("proxy_request_duration_seconds", "Time to answer, by route", labels=["route"])
        for route, h in sorted(m.route_latency.items()):
            lat.add_metric([route], h.buckets(), h.total)
        yield lat
        over = HistogramMetricFamily(
            "proxy_send_overhead_seconds",
            "Time /send spends in the proxy itself (total minus upstream and token renewal waits)",
        )
        over.add_metric([], m.send_overhead.buckets(), m.send_overhead.total)
        yield over


class Metrics:
    def __init__(self, share_dir: Path | str | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_counts: dict[tuple[str, str], int] = {}
        self.route_latency: dict[str, LoopHistogram] = {}
        self.upstream_errors = Counter(
            "proxy_upstream_errors_total",
            "Upstream failures by service and kind",
            ["service", "kind"],
            registry=self.registry,
        )
        self.refreshes = Counter(
            "proxy_refreshes_total", "Token refreshes by kind and outcome", ["kind", "outcome"], registry=self.registry
        )
        self.sessions_ended = Counter(
            "proxy_sessions_ended_total", "Sessions ended, by reason", ["reason"], registry=self.registry
        )
        self.active = Gauge("proxy_active_sessions", "Sessions in the store", registry=self.registry)
        self.trace_queue = Gauge("proxy_trace_queue", "Traces waiting to be committed", registry=self.registry)
        build = Gauge(
            "confiance_build_info",
            "Version of the running proxy (value 1)",
            ["version", "python"],
            registry=self.registry,
        )
        build.labels(__version__, platform.python_version()).set(1)
        ProcessCollector(registry=self.registry)
        self.send_latency = self.latency("send")
        self.send_overhead = LoopHistogram((0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1))
        self.registry.register(_LoopCollector(self))
        env_dir = os.environ.get(SHARE_DIR_ENV)
        self.share_dir: Path | None = Path(share_dir) if share_dir else Path(env_dir) if env_dir else None
        self._sharing: asyncio.Task[None] | None = None

    def latency(self, route: str) -> LoopHistogram:
        h = self.route_latency.get(route)
        if h is None:
            h = self.route_latency[route] = LoopHistogram(LATENCY_BUCKETS)
        return h

    def send_done(self, total: float, overhead: float | None, status: int) -> None:
        """One answered /send: its latency, the proxy's own share of it, its status code.

        The observations are inlined (same as ``LoopHistogram.observe`` and
        :meth:`request`; tested equal): this runs once per relayed request."""
        h = self.send_latency
        h.counts[bisect_left(h.bounds, total)] += 1
        h.total += total
        if overhead is not None:
            h = self.send_overhead
            h.counts[bisect_left(h.bounds, overhead)] += 1
            h.total += overhead
        key = _SEND_KEYS.get(status) or ("send", str(status))
        self.request_counts[key] = self.request_counts.get(key, 0) + 1

    def request(self, route: str, status: int, seconds: float | None = None) -> None:
        """One answered request of another route (and its duration, when measured)."""
        key = (route, _CODES.get(status) or str(status))
        self.request_counts[key] = self.request_counts.get(key, 0) + 1
        if seconds is not None:
            self.latency(route).observe(seconds)

    # ------------------------------------------------------------------ export
    def samples(self) -> list[tuple[str, str, str, list[Sample]]]:
        """This process's metrics: (family, type, help, samples) as plain data."""
        return [
            (fam.name, fam.type, fam.documentation, [(s.name, dict(s.labels), float(s.value)) for s in fam.samples])
            for fam in self.registry.collect()
        ]

    def render(self, trace_queue: int, active: int) -> bytes:
        """The text exposition, across every worker when several share the socket."""
        self.trace_queue.set(trace_queue)
        self.active.set(active)
        if self.share_dir is None:
            return generate_latest(self.registry)
        others = read_snapshots(self.share_dir, exclude=os.getpid())
        merged = CollectorRegistry(auto_describe=False)
        live = 1 + sum(1 for _, _, running in others if running)
        merged.register(_Merged(merge([self.samples(), *(fams for _, fams, _ in others)], live)))
        return generate_latest(merged)

    # ------------------------------------------------------------------ sharing between workers
    def snapshot_path(self) -> Path | None:
        return None if self.share_dir is None else self.share_dir / f"worker-{os.getpid()}.json"

    def write_snapshot(self, final: bool = False) -> None:
        """Replace this worker's snapshot; a final one (stop) keeps counters, drops gauges."""
        path = self.snapshot_path()
        if path is None:
            return
        fams = self.samples()
        if final:
            fams = [f for f in fams if f[1] != "gauge"]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "final": final, "families": fams}))
        tmp.replace(path)

    def start(self) -> None:
        """Share this worker's metrics while it runs (no-op with one process)."""
        if self.share_dir is not None and self._sharing is None:
            self._sharing = asyncio.get_running_loop().create_task(self._share(), name="metrics-share")

    async def _share(self) -> None:
        while True:
            try:
                self.write_snapshot()
            except OSError as exc:
                log.warning("metrics snapshot not written: %s", exc)
            await asyncio.sleep(SHARE_INTERVAL)

    async def stop(self) -> None:
        if self._sharing is not None:
            self._sharing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sharing
            self._sharing = None
        with contextlib.suppress(OSError):
            self.write_snapshot(final=True)


def read_snapshots(directory: Path, exclude: int | None = None) -> list[tuple[int, list[Any], bool]]:
    """Every worker's last snapshot (pid, families, still running); gauges only from
    workers still running."""
    out: list[tuple[int, list[Any], bool]] = []
    for path in sorted(directory.glob("worker-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a worker is replacing it right now: the rename is atomic, retry next scrape
        pid = int(data.get("pid", 0))
        if pid == exclude:
            continue
        fams = data.get("families", [])
        running = not data.get("final") and _alive(pid)
        if not running:
            fams = [f for f in fams if f[1] != "gauge"]
        out.append((pid, fams, running))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def merge(snapshots: Iterable[list[Any]], live_gauges: int = 1) -> list[Metric]:
    """Sum counters and histograms sample by sample; gauges by :data:`GAUGE_MERGE`."""
    families: dict[str, tuple[str, str]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for fams in snapshots:
        for name, typ, doc, samples in fams:
            families.setdefault(name, (typ, doc))
            acc = values.setdefault(name, {})
            how = GAUGE_MERGE.get(name, "sum") if typ == "gauge" else "sum"
            for sname, labels, value in samples:
                key = (sname, tuple(sorted(labels.items())))
                if sname.endswith("_created"):  # a timestamp: the earliest worker's
                    acc[key] = min(acc.get(key, float(value)), float(value))
                    continue
                if key not in acc:
                    acc[key] = float(value)
                elif how == "max":
                    acc[key] = max(acc[key], float(value))
                elif how == "min":
                    acc[key] = min(acc[key], float(value))
                else:
                    acc[key] += float(value)
    out = []
    for name, (typ, doc) in families.items():
        fam = Metric(name, doc, typ)
        for (sname, labels), value in sorted(values[name].items()):
            fam.add_sample(sname, dict(labels), value)
        out.append(fam)
    workers = Metric("proxy_workers_reporting", "Workers whose gauges this scrape includes", "gauge")
    workers.add_sample("proxy_workers_reporting", {}, float(live_gauges))
    out.append(workers)
    return out


class _Merged(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families
