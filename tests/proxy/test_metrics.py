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
    b = "proxy_request_duration_seconds_bucket"
    assert s[(b, (("le", "0.0005"), ("route", "send")))] == 2
    assert s[(b, (("le", "0.001"), ("route", "send")))] == 3
    assert s[(b, (("le", "0.025"), ("route", "send")))] == 4
    assert s[(b, (("le", "30.0"), ("route", "send")))] == 4
    assert s[(b, (("le", "+Inf"), ("route", "send")))] == 5
    assert s[("proxy_request_duration_seconds_count", (("route", "send"),))] == 5
    assert abs(s[("proxy_request_duration_seconds_sum", (("route", "send"),))] - 99.0216) < 1e-9


def test_request_counter_by_route_and_status_code() -> None:
    m = Metrics()
    for status in (200, 201, 404, 503, 503):
        m.request("send", status)
    m.request("connect", 200)
    s = _samples(m)
    assert s[("proxy_requests_total", (("code", "200"), ("route", "send")))] == 1
    assert s[("proxy_requests_total", (("code", "201"), ("route", "send")))] == 1
    assert s[("proxy_requests_total", (("code", "404"), ("route", "send")))] == 1
    assert s[("proxy_requests_total", (("code", "503"), ("route", "send")))] == 2
    assert s[("proxy_requests_total", (("code", "200"), ("route", "connect")))] == 1
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
    # process_* read the live process (CPU time moves between two scrapes): not what is compared
    mine = {k: v for k, v in _samples(one).items() if not k[0].startswith("process_")}
    theirs = {k: v for k, v in _samples(three).items() if not k[0].startswith("process_")}
    assert mine == theirs
    assert mine[("proxy_send_overhead_seconds_count", ())] == 2


def test_build_info_and_process_metrics() -> None:
    from confiance import __version__

    s = _samples(Metrics())
    info = [k for k in s if k[0] == "confiance_build_info"]
    assert len(info) == 1 and ("version", __version__) in info[0][1] and s[info[0]] == 1
    assert s[("process_resident_memory_bytes", ())] > 0
    assert ("process_cpu_seconds_total", ()) in s


def test_workers_snapshots_are_summed_at_scrape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two workers' counters, as the worker answering a scrape reports them."""
    import json
    import os

    me, other = Metrics(share_dir=tmp_path), Metrics(share_dir=tmp_path)
    for _ in range(3):
        me.send_done(0.001, None, 200)
    for _ in range(2):
        other.send_done(0.02, None, 200)
    other.upstream_errors.labels("dmp", "timeout").inc()
    # `other` is another worker: its snapshot under a pid of a process that runs (ours' parent)
    data = {"pid": os.getppid(), "final": False, "families": other.samples()}
    (tmp_path / f"worker-{os.getppid()}.json").write_text(json.dumps(data))
    s = _samples(me)
    assert s[("proxy_requests_total", (("code", "200"), ("route", "send")))] == 5
    assert s[("proxy_request_duration_seconds_count", (("route", "send"),))] == 5
    assert s[("proxy_request_duration_seconds_bucket", (("le", "0.001"), ("route", "send")))] == 3
    assert s[("proxy_upstream_errors_total", (("kind", "timeout"), ("service", "dmp")))] == 1
    assert s[("proxy_workers_reporting", ())] == 2
    assert s[("proxy_active_sessions", ())] == 2  # the same store seen by both: not doubled
    one_rss = _samples(Metrics())[("process_resident_memory_bytes", ())]
    assert s[("process_resident_memory_bytes", ())] > one_rss  # summed over workers
    # A worker that stopped keeps its counts (totals never go down), its gauges are gone.
    data["final"] = True
    data["families"] = [f for f in other.samples() if f[1] != "gauge"]
    (tmp_path / f"worker-{os.getppid()}.json").write_text(json.dumps(data))
    s = _samples(me)
    assert s[("proxy_requests_total", (("code", "200"), ("route", "send")))] == 5
    assert s[("proxy_workers_reporting", ())] == 1


def test_snapshot_written_and_final_drops_gauges(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import json

    m = Metrics(share_dir=tmp_path)
    m.request("healthz", 200, 0.001)

    async def run() -> None:
        m.start()
        await asyncio.sleep(0)  # the sharing task writes at once
        await asyncio.sleep(0)
        path = m.snapshot_path()
        assert path is not None and path.exists()
        assert any(f[1] == "gauge" for f in json.loads(path.read_text())["families"])
        await m.stop()
        final = json.loads(path.read_text())
        assert final["final"] and not any(f[1] == "gauge" for f in final["families"])

    asyncio.run(run())
