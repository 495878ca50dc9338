"""Observe an application's metrics in Prometheus."""

from __future__ import annotations

from collections.abc import Collection

from prefect import task
from prefect.cache_policies import NO_CACHE

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
