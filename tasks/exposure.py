"""Tasks that expose an application outside the mesh and undo that: one verb each.

Both re-read the cluster and decide again on every attempt, so a retry after a
temporary error is safe: what already happened is found and not done twice.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from lamia_core.exposure import ExposeRequest, Exposure
from lamia_core.kube import KubeConfig
from lamia_core.models import Application
from tasks._clients import kube_adapter
from tasks._retry import RETRYING

_COMMON = {"cache_policy": NO_CACHE, "persist_result": False, **RETRYING}


@task(name="expose-application", **_COMMON)
def expose_application(kube: KubeConfig, application: Application, request: ExposeRequest,
                       holder: str) -> Exposure:
    """Gateway (or Ingress) and VirtualService binding, as the lease holder ``holder``."""
    return kube_adapter(kube).expose(application, request, holder=holder)


@task(name="unexpose-application", **_COMMON)
def unexpose_application(kube: KubeConfig, application: Application, holder: str) -> Exposure | None:
    """Remove what expose added; None when the application was not exposed."""
    return kube_adapter(kube).unexpose(application, holder=holder)
