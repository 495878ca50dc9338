"""Observe an application's metrics in Prometheus."""

from __future__ import annotations

from collections.abc import Collection

from prefect import task
from prefect.cache_policies import NO_CACHE

from lamia_core.judge import CounterReading
from lamia_core.prometheus import PrometheusConfig
from tasks._clients import prometheus_adapter
from tasks._retry import RETRYING


@task(name="observe-metrics", cache_policy=NO_CACHE, persist_result=False, **RETRYING)
def observe_metrics(
    prometheus: PrometheusConfig,
    namespace: str,
    app: str,
    names: Collection[str],
    window: str,
    versions: Collection[str],
) -> dict[str, dict[str, float | None]]:
    """version -> metric -> value, None meaning no data (distinct from 0)."""
    return prometheus_adapter(prometheus).query_metrics(
        namespace, app, sorted(names), window=window, versions=sorted(versions)
    )


@task(name="read-counters", cache_policy=NO_CACHE, persist_result=False, **RETRYING)
def read_counters(
    prometheus: PrometheusConfig,
    namespace: str,
    app: str,
    versions: Collection[str],
    at: float | None = None,
) -> CounterReading:
    """Istio's raw counters per version and scrape target at one instant (default: now)."""
    return prometheus_adapter(prometheus).read_counters(namespace, app, sorted(versions), at=at)


@task(name="latest-scrape", cache_policy=NO_CACHE, persist_result=False, **RETRYING)
def latest_scrape(prometheus: PrometheusConfig, namespace: str, app: str) -> float | None:
    """Time of the newest sample of the application's request counters."""
    return prometheus_adapter(prometheus).latest_scrape(namespace, app)


@task(name="measure-scrape-interval", cache_policy=NO_CACHE, persist_result=False, **RETRYING)
def measure_scrape_interval(prometheus: PrometheusConfig, namespace: str, app: str) -> float | None:
    """Prometheus' real scrape interval of the application's metrics; None when it cannot tell."""
    return prometheus_adapter(prometheus).scrape_interval(namespace, app)
