"""A real Prometheus for the session, and simulated Istio traffic that it has scraped.

``prometheus_server`` is shared by the whole session: tests add their own
simulator as a target (``prometheus_server.add_target(sim.metrics_url)``) and
use a namespace of their own, so that their series do not mix.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from lamia_sandbox.prometheus_server import PROMETHEUS_BIN, PrometheusServer
from lamia_sandbox.simulator import TrafficSimulator, VersionBehaviour


@pytest.fixture(scope="session")
def prometheus_server() -> Iterator[PrometheusServer]:
    if not (os.path.isfile(PROMETHEUS_BIN) and os.access(PROMETHEUS_BIN, os.X_OK)):
        pytest.fail(f"Prometheus not found at {PROMETHEUS_BIN}: install the Debian package 'prometheus' "
                    "(make test does) or set LAMIA_PROMETHEUS_BIN")
    server = PrometheusServer([]).start()
    try:
        yield server
    finally:
        server.stop()


#: The scenario's gateway: v3 is deployed but gets no traffic.
SCENARIO_WEIGHTS = {"v1": 80, "v2": 20, "v3": 0}
SCENARIO_VERSIONS = {
    "v1": VersionBehaviour(latency_ms_median=20, latency_sigma=0.5),
    "v2": VersionBehaviour(error_rate=0.3, error_code=503, latency_ms_median=60, latency_sigma=0.6),
    "v3": VersionBehaviour(),
}
SCENARIO_APP = "shop"
SCENARIO_NAMESPACE = "it-metrics"
SCENARIO_REQUESTS = 450


def virtual_service(app: str, namespace: str, weights: dict[str, int]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": app, "namespace": namespace},
        "spec": {
            "hosts": [app],
            "http": [{
                "name": "lamia-default",
                "route": [{"destination": {"host": app, "subset": v}, "weight": w}
                          for v, w in weights.items()],
            }],
        },
    }


@dataclass
class MetricsScenario:
    """Traffic that has stopped, with Prometheus holding every request of it.

    ``counts`` are the simulator's exact counts, which Prometheus' raw counters
    equal; a window of ``window`` covers the whole life of the series.
    """

    simulator: TrafficSimulator
    prometheus: PrometheusServer
    namespace: str
    app: str
    counts: dict[str, Any]
    window: str = "3h"
    versions: list[str] = field(default_factory=lambda: sorted(SCENARIO_VERSIONS))

    @property
    def selector(self) -> str:
        return f'{{destination_workload_namespace="{self.namespace}",destination_app="{self.app}"}}'

    def samples(self) -> int:
        """The fewest samples any of the scenario's series has in the window."""
        res = self.prometheus.query(f"count_over_time(istio_requests_total{self.selector}[{self.window}])")
        return min(int(float(r["value"][1])) for r in res)

    def raw_counts(self) -> dict[tuple[str, str], int]:
        """What Prometheus last scraped: (version, code) → requests."""
        return by_version_code(self.prometheus.query(f"istio_requests_total{self.selector}"))

    def exact_counts(self) -> dict[tuple[str, str], int]:
        return {(v, str(code)): n
                for v, codes in self.counts["by_version_code"].items() for code, n in codes.items()}


@pytest.fixture(scope="session")
def metrics_scenario(prometheus_server: PrometheusServer) -> Iterator[MetricsScenario]:
    """Runs the scenario once per session, in its own namespace; its window covers any session."""
    namespace = SCENARIO_NAMESPACE
    vs = virtual_service(SCENARIO_APP, namespace, SCENARIO_WEIGHTS)
    sim = TrafficSimulator(namespace, SCENARIO_APP, SCENARIO_VERSIONS, gateway_source=lambda: vs,
                           rate=150.0, seed=7)
    url = sim.serve().metrics_url
    prometheus_server.add_target(url)
    try:
        scenario = MetricsScenario(sim, prometheus_server, namespace, SCENARIO_APP, counts=sim.counts())
        raw = f"istio_requests_total{scenario.selector}"
        # Every series is scraped at zero before the first request, so increase() counts them all.
        primed = scenario.exact_counts()
        prometheus_server.wait_for(raw, lambda r: by_version_code(r) == primed, timeout=60)
        sim.start()
        _wait(lambda: sim.counts()["total"] >= SCENARIO_REQUESTS, timeout=60)
        sim.stop_traffic()
        scenario.counts = sim.counts()
        final = scenario.exact_counts()
        prometheus_server.wait_for(raw, lambda r: by_version_code(r) == final, timeout=60)
        yield scenario
    finally:
        sim.stop()
        prometheus_server.remove_target(url)


def by_version_code(result: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    return {(r["metric"]["destination_version"], r["metric"]["response_code"]): int(float(r["value"][1]))
            for r in result}


def _wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(0.05)
