"""Time per engine decision, per policy: median and p99 over many decisions in virtual time.

Each policy runs releases back to back against a simulated world (requests
split by weight, a healthy target, a slightly worse third version) until
``--decisions`` calls of ``decide`` have been timed. Building the observation
is the flow's work and is left out; evaluating the policy's expression is in.

    .venv/bin/python bench/bench_engine.py [--decisions 10000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from lamia_core.engine import Observation, ReleaseSpec, decide, start
from lamia_core.models import Weights

RATIO_PROGRAM = """
ok1 = metric "v1" "external_upstream_rq_2xx" / metric "v1" "upstream_rq_total";
ok2 = metric "v2" "external_upstream_rq_2xx" / metric "v2" "upstream_rq_total";
if ok2 >= ok1 { best = "v2"; } else { best = "v1"; }
best
"""

POLICIES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "time": ({"kind": "time"}, ("v1", "v2")),
    "health": ({"kind": "health"}, ("v1", "v2")),
    "metric (3 versions)": ({"kind": "metric"}, ("v1", "v2", "v3")),
    "custom (2xx ratio)": ({"kind": "custom", "program": RATIO_PROGRAM}, ("v1", "v2")),
}
SUCCESS = {"v1": 0.97, "v2": 0.99, "v3": 0.95}


def observe(weights: Weights, t: float) -> Observation:
    values: dict[str, dict[str, float | None]] = {}
    for v, w in weights.items():
        total = 600.0 * w / 100
        values[v] = {
            "upstream_rq_total": total or None,
            "external_upstream_rq_2xx": total * SUCCESS[v] if total else None,
        }
    return Observation(time=t, values=values)


def bench(policy: dict[str, Any], versions: tuple[str, ...], decisions: int) -> list[float]:
    spec = ReleaseSpec(namespace="bench", app="web", baseline="v1", target="v2", versions=versions,
                       policy=policy)
    timings: list[float] = []
    now = 0.0
    d = start(spec, now)
    while len(timings) < decisions:
        if d.wake_at is None:
            d = start(spec, now)
            continue
        now = d.wake_at
        obs = observe(d.state.weights, now)
        t0 = time.perf_counter_ns()
        d = decide(spec, d.state, now, obs)
        timings.append((time.perf_counter_ns() - t0) / 1000)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=10_000)
    args = parser.parse_args()
    print(f"engine: time per decide() over {args.decisions} decisions (microseconds)")
    print(f"{'policy':<22}{'median':>10}{'p95':>10}{'p99':>10}")
    for name, (policy, versions) in POLICIES.items():
        bench(policy, versions, min(args.decisions, 500))  # warm-up: imports, caches
        timings = bench(policy, versions, args.decisions)
        q = statistics.quantiles(timings, n=100)
        print(f"{name:<22}{statistics.median(timings):>10.1f}{q[94]:>10.1f}{q[98]:>10.1f}")


if __name__ == "__main__":
    main()
