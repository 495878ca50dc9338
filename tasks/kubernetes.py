"""Tasks over the Kubernetes adapter: one verb each, the config block first.

Reads retry on temporary errors like writes do; nothing here is cached,
since every result describes a cluster that other writers change.
"""

from __future__ import annotations

from typing import Any, NoReturn

from prefect import task
from prefect.cache_policies import NO_CACHE

from lamia_core.errors import NotFound
from lamia_core.istio import virtual_service_name
from lamia_core.kube import KubeConfig
from lamia_core.lease import Lease, drop_lease, lease_of, take_lease
from lamia_core.models import Application, Gateway, Weights
from tasks._clients import kube_adapter
from tasks._retry import RETRYING

_COMMON = {"cache_policy": NO_CACHE, "persist_result": False, **RETRYING}


@task(name="discover-application", **_COMMON)
def discover_application(kube: KubeConfig, namespace: str, app: str) -> Application:
    return kube_adapter(kube).discover_application(namespace, app)


@task(name="read-gateway", **_COMMON)
def read_gateway(kube: KubeConfig, application: Application) -> Gateway | None:
    return kube_adapter(kube).read_gateway(application)


@task(name="apply-gateway", **_COMMON)
def apply_gateway(kube: KubeConfig, gateway: Gateway) -> Gateway:
    kube_adapter(kube).apply_gateway(gateway)
    return gateway


@task(name="apply-weights", **_COMMON)
def apply_weights(
    kube: KubeConfig, application: Application, weights: Weights, route: str = "default"
) -> Weights:
    """Set one route's weights; the adapter re-applies them onto a fresh object after a 409."""
    kube_adapter(kube).set_weights(application, weights, route=route)
    return weights


@task(name="read-lease", **_COMMON)
def read_lease(kube: KubeConfig, application: Application) -> Lease | None:
    vs = kube_adapter(kube).get_object(
        "VirtualService", application.namespace, virtual_service_name(application)
    )
    return lease_of(vs)


@task(name="take-lease", **_COMMON)
def acquire_lease(
    kube: KubeConfig, application: Application, lease: Lease, stale: frozenset[str] = frozenset()
) -> None:
    """Record ``lease`` on the VirtualService; ReleaseLocked if another live run holds it."""

    def mutate(vs: dict[str, Any] | None) -> dict[str, Any] | None:
        if vs is None:
            raise_no_gateway(application)
        return take_lease(vs, lease, app=application.name, stale=stale)

    kube_adapter(kube).update_object(
        "VirtualService", application.namespace, virtual_service_name(application), mutate
    )


@task(name="release-lease", **_COMMON)
def release_lease(kube: KubeConfig, application: Application, holder: str) -> None:
    def mutate(vs: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if vs is None else drop_lease(vs, holder)

    kube_adapter(kube).update_object(
        "VirtualService", application.namespace, virtual_service_name(application), mutate
    )


def raise_no_gateway(application: Application) -> NoReturn:
    raise NotFound(
        f"application {application.name!r} in namespace {application.namespace!r} has no gateway yet; "
        f"create it with `lamia gateway apply --namespace {application.namespace} --app {application.name}`"
    )
