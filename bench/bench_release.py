"""Orchestration overhead per step and time to roll back, from real flow runs.

Starts a local Prefect server (SQLite; or uses PREFECT_API_URL when it is set)
and the sandbox (API-server emulator, traffic simulator, Prometheus), then:

- runs ``--releases`` healthy releases (health policy, ``--step`` %, ``--interval`` s)
  and takes each step's wall time from the flow's own step table; the overhead of
  a step is its wall time minus the configured interval. The loop sleeps until
  an absolute deadline, so its work (observe, decide, write) does not add up
  from step to step; that work is printed too, from waking to the weights applied;
- runs ``--rollbacks`` releases of a version answering 30% of requests with 503
  (failure limit 1), while a watcher polls Prometheus for the target's first
  503 and the VirtualService for the baseline back at 100%: the time between
  the two, as a multiple of the interval.

Targets (issue 5): overhead at most 0.25 s per step; rollback within 1.5 intervals.

    .venv/bin/python bench/bench_release.py [--interval 2] [--releases 2] [--rollbacks 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from flows._history import run_outcome
from lamia_core.kube import KubeAdapter
from lamia_core.models import Gateway, Route, Weights
from lamia_core.outcome import Outcome
from lamia_core.prometheus import PrometheusAdapter
from lamia_sandbox.prefect_server import PrefectServer
from lamia_sandbox.sandbox import Sandbox
from lamia_sandbox.simulator import VersionBehaviour

VERSIONS = {
    "v1": VersionBehaviour(),
    "v2": VersionBehaviour(),
    "v3": VersionBehaviour(error_rate=0.3, error_code=503),
}


def _reset(adapter: KubeAdapter, sb: Sandbox) -> Any:
    app = adapter.discover_application(sb.namespace, sb.app)
    adapter.apply_gateway(
        Gateway(application=app, routes=(Route(weights=Weights({"v1": 100, "v2": 0, "v3": 0})),))
    )
    return app


def _release(sb: Sandbox, target: str, interval: float, step: int) -> Any:
    from flows.params import ReleaseParameters
    from flows.release import canary_release
    from lamia_core.policies import HealthPolicy

    policy = HealthPolicy(step=step, interval=interval, window="10s", min_requests=5, failure_limit=1,
                          scrape_interval=1.0)
    params = ReleaseParameters(
        namespace=sb.namespace,
        app=sb.app,
        baseline="v1",
        target=target,
        policy=policy,
        kubernetes=sb.kube,
        prometheus=sb.prometheus,
    )
    return canary_release(params, return_state=True)


def _rows(state: Any) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                type=ArtifactFilterType(any_=["table"]),
            )
        )
    data = max(found, key=lambda a: a.created).data
    return data if isinstance(data, list) else json.loads(data)


class RollbackWatch(threading.Thread):
    """Times the first 503 of the target seen by Prometheus, then the baseline back at 100%."""

    def __init__(self, sb: Sandbox, app: Any, target: str) -> None:
        super().__init__(daemon=True)
        self.sb, self.app, self.target = sb, app, target
        self.errors_at: float | None = None
        self.back_at: float | None = None
        self.stop = threading.Event()
        query = (
            f'sum(istio_requests_total{{destination_app="{sb.app}",destination_version="{target}",'
            f'response_code="503"}})'
        )
        self.query = query
        self.prom = PrometheusAdapter(sb.prometheus)
        self.before = self._errors()

    def _errors(self) -> float:
        result = self.prom.query(self.query)
        return float(result[0]["value"][1]) if result else 0.0

    def run(self) -> None:
        adapter = KubeAdapter(self.sb.kube)
        while not self.stop.is_set():
            now = time.monotonic()
            if self.errors_at is None and self._errors() > self.before:
                self.errors_at = now
            if self.errors_at is not None:
                gateway = adapter.read_gateway(self.app)
                if gateway is not None and gateway.default_route.weights["v1"] == 100:
                    self.back_at = time.monotonic()
                    return
            time.sleep(0.05)


def _summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    q = statistics.quantiles(values, n=10) if len(values) > 1 else [values[0]] * 9
    return (
        f"median {statistics.median(values):.3f}, p10 {q[0]:.3f}, p90 {q[-1]:.3f}, "
        f"min {min(values):.3f}, max {max(values):.3f}, stdev "
        f"{statistics.pstdev(values):.3f} (n={len(values)})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument("--step", type=int, default=20)
    ap.add_argument("--releases", type=int, default=2)
    ap.add_argument("--rollbacks", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    server = None
    if not os.environ.get("PREFECT_API_URL"):
        server = PrefectServer(Path(tempfile.mkdtemp(prefix="lamia-bench-prefect-")), ui=False).start()
        os.environ.update(server.env())
        import prefect.context

        prefect.context.refresh_global_settings_context()
    try:
        with Sandbox("bench", "reviews", VERSIONS, rate=150.0, seed=11) as sb:
            adapter = KubeAdapter(sb.kube)
            overheads: list[float] = []
            acted: list[float] = []
            for _ in range(args.releases):
                _reset(adapter, sb)
                state = _release(sb, "v2", args.interval, args.step)
                assert run_outcome(state) is Outcome.PROMOTED, state.message
                rows = _rows(state)
                elapsed = [r["elapsed_s"] for r in rows]
                acted += [r["acted_in_s"] for r in rows[1:]]
                overheads += [b - a - args.interval for a, b in itertools.pairwise(elapsed)]
            ratios: list[float] = []
            for _ in range(args.rollbacks):
                app = _reset(adapter, sb)
                time.sleep(1.0)  # let the previous run's traffic split settle in the simulator
                watch = RollbackWatch(sb, app, "v3")
                watch.start()
                state = _release(sb, "v3", args.interval, args.step)
                watch.join(30)
                watch.stop.set()
                assert run_outcome(state) is Outcome.ROLLED_BACK, state.message
                if watch.errors_at is not None and watch.back_at is not None:
                    ratios.append((watch.back_at - watch.errors_at) / args.interval)
    finally:
        if server is not None:
            server.stop()

    print(
        f"interval {args.interval:g} s, step {args.step}%, Prefect server "
        f"{'started here (SQLite)' if server else os.environ['PREFECT_API_URL']}"
    )
    print(f"step wall time minus interval, s:        {_summary(overheads)}  target <= 0.25")
    print(f"wake-up to weights applied per step, s:  {_summary(acted)}")
    print(f"first errors -> baseline at 100%, intervals: {_summary(ratios)}  target <= 1.5")


if __name__ == "__main__":
    main()
