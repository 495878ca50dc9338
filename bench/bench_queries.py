"""Prometheus queries per gate and time per ``query_metrics`` call, against a real Prometheus.

Starts the traffic simulator (three versions, 80/20/0) and the Debian
Prometheus scraping it every second, lets traffic run, then times repeated
``PrometheusAdapter.query_metrics`` calls for a few metric sets and prints,
per set, the queries one call issues and the median and p95 time of a call.

    .venv/bin/python bench/bench_queries.py [--calls 50] [--warmup 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from lamia_core.metrics import TOTAL, metric_names
from lamia_core.prometheus import PrometheusAdapter, PrometheusConfig
from lamia_sandbox.prometheus_server import PrometheusServer
from lamia_sandbox.simulator import TrafficSimulator, VersionBehaviour

NAMESPACE, APP = "bench", "shop"

SETS: dict[str, list[str]] = {
    "custom gate (2xx, total)": ["external_upstream_rq_2xx", TOTAL],
    "health gate (5xx, total)": ["external_upstream_rq_5xx", TOTAL],
    "latency p99": ["request_duration_p99"],
    "whole catalog": sorted(metric_names()),
}


def virtual_service() -> dict[str, Any]:
    weights = (("v1", 80), ("v2", 20), ("v3", 0))
    route = [{"destination": {"host": APP, "subset": v}, "weight": w} for v, w in weights]
    return {"spec": {"http": [{"name": "lamia-default", "route": route}]}}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50, help="timed calls per metric set")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds of traffic before timing")
    args = parser.parse_args()

    vs = virtual_service()
    versions = {"v1": VersionBehaviour(), "v2": VersionBehaviour(error_rate=0.1), "v3": VersionBehaviour()}
    with TrafficSimulator(NAMESPACE, APP, versions, gateway_source=lambda: vs, rate=100, seed=1) as sim, \
            PrometheusServer([sim.metrics_url]) as prom:
        series = f'istio_requests_total{{destination_workload_namespace="{NAMESPACE}"}}'
        prom.wait_for_series(series, timeout=60)
        time.sleep(args.warmup)
        adapter = PrometheusAdapter(PrometheusConfig(url=prom.url))
        print(f"{'metric set':<28} {'queries/call':>12} {'median ms':>10} {'p95 ms':>8}")
        for label, names in SETS.items():
            times = []
            for _ in range(args.calls):
                adapter.queries = 0
                t0 = time.perf_counter()
                adapter.query_metrics(NAMESPACE, APP, names, window="1m", versions=["v1", "v2"])
                times.append((time.perf_counter() - t0) * 1000)
            p95 = statistics.quantiles(times, n=20)[-1]
            print(f"{label:<28} {adapter.queries:>12} {statistics.median(times):>10.1f} {p95:>8.1f}")


if __name__ == "__main__":
    main()
