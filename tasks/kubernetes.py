"""Tasks over the Kubernetes adapter: one verb each, the config block first.

Reads retry on temporary errors like writes do; nothing here is cached,
since every result describes a cluster that other writers change. Writes of a
gateway name their ``holder`` (the flow run holding the app's lease): the
adapter refuses a write by anyone else while a lease is held.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from lamia_core.kube import KubeConfig
from lamia_core.lease import Lease
from lamia_core.models import DEFAULT_ROUTE, Application, Gateway, Route, Weights
from tasks._clients import kube_adapter
from tasks._retry import RETRYING

_COMMON = {"cache_policy": NO_CACHE, "persist_result": False, **RETRYING}


@task(name="discover-application", **_COMMON)
def discover_application(
    kube: KubeConfig, namespace: str, app: str, service: str | None = None
) -> Application:
    return kube_adapter(kube).discover_application(namespace, app, service=service)


@task(name="read-gateway", **_COMMON)
def read_gateway(kube: KubeConfig, application: Application) -> Gateway:
    """The app's gateway; NotFound saying what is there instead when Lamia cannot use it."""
    adapter = kube_adapter(kube)
    gateway = adapter.read_gateway(application)
    if gateway is None:
        raise adapter.no_gateway(application)
    return gateway


@task(name="apply-gateway", **_COMMON)
def apply_gateway(kube: KubeConfig, gateway: Gateway, holder: str | None = None) -> Gateway:
    kube_adapter(kube).apply_gateway(gateway, holder=holder)
    return gateway


@task(name="adopt-gateway", **_COMMON)
def adopt_gateway(
    kube: KubeConfig, application: Application, holder: str, add_route: Route | None = None
) -> Gateway:
    """Make the gateway Lamia's as it stands (plus ``add_route``) before a release's first step."""
    return kube_adapter(kube).adopt_gateway(application, holder=holder, add_route=add_route)


@task(name="apply-weights", **_COMMON)
def apply_weights(
    kube: KubeConfig,
    application: Application,
    weights: Weights,
    route: str = DEFAULT_ROUTE,
    holder: str | None = None,
    expect: Weights | None = None,
    lease_update: dict[str, Any] | None = None,
) -> Weights:
    """Set one route's weights; the adapter re-applies them onto a fresh object after a 409.

    With ``expect`` (what the release last wrote), ForeignChange instead when another writer
    changed the route since. ``lease_update`` goes into the holder's lease in the same write.
    """
    kube_adapter(kube).set_weights(application, weights, route=route, holder=holder, expect=expect,
                                   lease_update=lease_update)
    return weights


@task(name="check-route", **_COMMON)
def check_route(kube: KubeConfig, application: Application, route: str, expect: Weights, holder: str) -> None:
    """ForeignChange when the route is not as the release last wrote it (checked before a verdict)."""
    adapter = kube_adapter(kube)
    adapter.check_route(application, adapter.read_virtual_service(application), route, expect, holder=holder)


@task(name="read-lease", **_COMMON)
def read_lease(kube: KubeConfig, application: Application) -> Lease | None:
    return kube_adapter(kube).read_lease(application)


@task(name="take-lease", **_COMMON)
def acquire_lease(
    kube: KubeConfig, application: Application, lease: Lease, stale: frozenset[str] = frozenset()
) -> None:
    """Record ``lease`` on the VirtualService; ReleaseLocked if another live run holds it."""
    kube_adapter(kube).take_lease(application, lease, stale=stale)


@task(name="renew-lease", **_COMMON)
def renew_lease(kube: KubeConfig, application: Application, holder: str, updates: dict[str, Any]) -> Lease:
    """Record ``updates`` in ``holder``'s lease, with a fresh heartbeat."""
    return kube_adapter(kube).renew_lease(application, holder, **updates)


def beat(kube: KubeConfig, application: Application, holder: str) -> None:
    """One heartbeat of ``holder``'s lease. Not a task: one every few seconds would bury the run's
    real tasks in the Prefect UI, and the heartbeat thread retries at its next beat anyway."""
    kube_adapter(kube).renew_lease(application, holder)


@task(name="list-gateways", **_COMMON)
def managed_gateways(
    kube: KubeConfig, namespace: str | None = None
) -> list[tuple[dict[str, Any], Lease | None]]:
    """Every VirtualService Lamia manages, with its lease if any."""
    return kube_adapter(kube).managed_gateways(namespace)


@task(name="abort-release", **_COMMON)
def abort_release(kube: KubeConfig, application: Application, lease: Lease) -> Weights | None:
    """Put the lease's baseline back and drop the lease in one write: it overrides any lease."""
    return kube_adapter(kube).abort_release(application, lease)


@task(name="hand-over-lease", **_COMMON)
def hand_over_lease(kube: KubeConfig, application: Application, holder: str, successor: Lease) -> None:
    kube_adapter(kube).hand_over_lease(application, holder, successor)


@task(name="release-lease", **_COMMON)
def release_lease(
    kube: KubeConfig, application: Application, holder: str, forget_routes: tuple[str, ...] = ()
) -> None:
    """Give the lease back; the condition texts of ``forget_routes`` go too once their route is gone."""
    kube_adapter(kube).drop_lease(application, holder, forget_routes=forget_routes)
