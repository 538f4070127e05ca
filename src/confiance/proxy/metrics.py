"""Prometheus metrics, in a registry of our own (several proxies may live in one test process).

Label children are bound once here, so the hot path increments a prebuilt object instead
of resolving labels per request.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "proxy_requests_total",
            "Requests answered, by route and status class",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "proxy_request_seconds",
            "Time to answer, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
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
        self.send_latency = self.latency.labels("send")
        self.send_overhead = Histogram(
            "proxy_send_overhead_seconds",
            "Time /send spends in the proxy itself (total minus upstream and token renewal waits)",
            buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=self.registry,
        )
        self._req: dict[tuple[str, str], Counter] = {}

    def request(self, route: str, status: int) -> None:
        key = (route, f"{status // 100}xx")
        c = self._req.get(key)
        if c is None:
            c = self._req[key] = self.requests.labels(*key)
        c.inc()

    def render(self, trace_queue: int, active: int) -> bytes:
        self.trace_queue.set(trace_queue)
        self.active.set(active)
        return generate_latest(self.registry)
