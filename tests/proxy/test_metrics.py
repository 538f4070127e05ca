"""The loop-updated metrics export exactly what Prometheus expects."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from confiance.proxy.metrics import Metrics


def _samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = m.render(trace_queue=3, active=2).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_histogram_buckets_are_cumulative_and_bounds_inclusive() -> None:
    m = Metrics()
    for v in (0.0004, 0.0005, 0.0007, 0.02, 99.0):  # 0.0005 is a bound: it belongs to le="0.0005"
        m.send_latency.observe(v)
    s = _samples(m)
    b = "proxy_request_seconds_bucket"
    assert s[(b, (("le", "0.0005"), ("route", "send")))] == 2
    assert s[(b, (("le", "0.001"), ("route", "send")))] == 3
    assert s[(b, (("le", "0.025"), ("route", "send")))] == 4
    assert s[(b, (("le", "30.0"), ("route", "send")))] == 4
    assert s[(b, (("le", "+Inf"), ("route", "send")))] == 5
    assert s[("proxy_request_seconds_count", (("route", "send"),))] == 5
    assert abs(s[("proxy_request_seconds_sum", (("route", "send"),))] - 99.0216) < 1e-9


def test_request_counter_by_route_and_status_class() -> None:
    m = Metrics()
    for status in (200, 201, 404, 503, 503):
        m.request("send", status)
    m.request("connect", 200)
    s = _samples(m)
    assert s[("proxy_requests_total", (("route", "send"), ("status", "2xx")))] == 2
    assert s[("proxy_requests_total", (("route", "send"), ("status", "4xx")))] == 1
    assert s[("proxy_requests_total", (("route", "send"), ("status", "5xx")))] == 2
    assert s[("proxy_requests_total", (("route", "connect"), ("status", "2xx")))] == 1
    assert s[("proxy_trace_queue", ())] == 3
    assert s[("proxy_active_sessions", ())] == 2


def test_overhead_histogram_exported() -> None:
    m = Metrics()
    m.send_overhead.observe(0.00015)
    s = _samples(m)
    assert s[("proxy_send_overhead_seconds_bucket", (("le", "0.0001"),))] == 0
    assert s[("proxy_send_overhead_seconds_bucket", (("le", "0.0002"),))] == 1


def test_send_done_counts_like_the_separate_metrics() -> None:
    """The hot path's single call must export what observe + observe + request would."""
    one, three = Metrics(), Metrics()
    for total, overhead, status in ((0.0005, 0.0001, 200), (0.02, None, 404), (0.003, 0.0002, 503)):
        one.send_done(total, overhead, status)
        three.send_latency.observe(total)
        if overhead is not None:
            three.send_overhead.observe(overhead)
        three.request("send", status)
    assert _samples(one) == _samples(three)
    assert _samples(one)[("proxy_send_overhead_seconds_count", ())] == 2
