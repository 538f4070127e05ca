"""Prometheus metrics, in a registry of our own (several proxies may live in one test process).

The per-request metrics (request counts, latency histograms) are plain integers updated on
the event loop and exported by a collector at scrape time: prometheus_client's own
``Histogram.observe`` takes a lock and walks the buckets in Python, which on /send cost as
much as the session lookup and the path check together (cProfile under load). Everything
else (rare events) uses prometheus_client's types directly.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

_STATUS_CLASS = {i: f"{i}xx" for i in range(6)}
_SEND_KEYS = {i: ("send", c) for i, c in _STATUS_CLASS.items()}
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


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
            "proxy_requests", "Requests answered, by route and status class", labels=["route", "status"]
        )
        for (route, status), n in sorted(m.request_counts.items()):
            req.add_metric([route, status], n)
        yield req
        lat = HistogramMetricFamily("proxy_request_seconds", "Time to answer, by route", labels=["route"])
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
    def __init__(self) -> None:
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
        self.send_latency = self.latency("send")
        self.send_overhead = LoopHistogram((0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1))
        self.registry.register(_LoopCollector(self))

    def latency(self, route: str) -> LoopHistogram:
        h = self.route_latency.get(route)
        if h is None:
            h = self.route_latency[route] = LoopHistogram(LATENCY_BUCKETS)
        return h

    def send_done(self, total: float, overhead: float | None, status: int) -> None:
        """One answered /send: its latency, the proxy's own share of it, its status class.

        The observations are inlined (same as ``LoopHistogram.observe`` and
        :meth:`request`; tested equal): this runs once per relayed request."""
        h = self.send_latency
        h.counts[bisect_left(h.bounds, total)] += 1
        h.total += total
        if overhead is not None:
            h = self.send_overhead
            h.counts[bisect_left(h.bounds, overhead)] += 1
            h.total += overhead
        key = _SEND_KEYS[status // 100] if status < 600 else ("send", "5xx")
        self.request_counts[key] = self.request_counts.get(key, 0) + 1

    def request(self, route: str, status: int) -> None:
        key = (route, _STATUS_CLASS[status // 100] if status < 600 else "5xx")
        self.request_counts[key] = self.request_counts.get(key, 0) + 1

    def render(self, trace_queue: int, active: int) -> bytes:
        self.trace_queue.set(trace_queue)
        self.active.set(active)
        return generate_latest(self.registry)
