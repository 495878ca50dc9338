"""Adapters for tasks. Kubernetes clients are kept per configuration and process
because building one parses the kubeconfig and opens a connection pool."""

from __future__ import annotations

import threading

from lamia_core.kube import KubeAdapter, KubeConfig
from lamia_core.prometheus import PrometheusAdapter, PrometheusConfig

_lock = threading.Lock()
_kube: dict[str, KubeAdapter] = {}


def kube_adapter(config: KubeConfig) -> KubeAdapter:
    # A saved cluster's content is left out of its JSON: the key carries a digest of it.
    key = config.cache_key()
    with _lock:
        adapter = _kube.get(key)
        if adapter is None:
            adapter = _kube[key] = KubeAdapter(config)
    return adapter


def prometheus_adapter(config: PrometheusConfig) -> PrometheusAdapter:
    # Cheap to build, and its config may carry secrets that make a poor cache key.
    return PrometheusAdapter(config)
