"""Saved clusters: one Prefect block per cluster (`lamia cluster add`), resolved by name.

A block, so that the Prefect UI lists the clusters of a workspace and a flow run
on any worker finds one by name. It is Lamia's own block type, modelled on
prefect-kubernetes' ``KubernetesClusterConfig``/``KubernetesCredentials``
rather than those themselves: prefect-kubernetes brings a second Kubernetes
client (kubernetes-asyncio) and Prefect's Kubernetes worker with it; its
``KubernetesClusterConfig`` keeps the *whole* kubeconfig (every context's
credentials) in a plain dict that the UI and API show as is, and its helpers
load it into the kubernetes package's global configuration, which Lamia's
adapter never uses (one client per cluster). Lamia's block keeps one context,
certificates and tokens inlined (:mod:`lamia_core.kubeconfig`), as a
``SecretDict``: Prefect stores it and the UI and API show it obfuscated; only a
client asking for secrets (a flow run resolving the cluster) gets it. Or it
says "the pod's service account", for a worker running in the cluster itself.

A flow parameter names the cluster, never its content: the run resolves it
(:func:`use_cluster`), so no credential lands in a flow run's parameters.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, cast

from prefect.blocks.core import Block
from prefect.types import SecretDict
from pydantic import Field

from flows.params import ReleaseParameters, Target
from lamia_core.errors import InvalidInput, LamiaError, Unreachable
from lamia_core.kube import KubeConfig
from lamia_core.kubeconfig import SelectedContext

#: The block type's slug, as the Prefect UI and `prefect block ls` show it.
BLOCK_TYPE = "lamia-cluster"
#: Tag on every flow run that resolved a saved cluster, so the CLI tells apart runs of an app per cluster.
TAG_PREFIX = "lamia/cluster:"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

T = TypeVar("T", bound=Target)


class LamiaCluster(Block):
    """A Kubernetes cluster that Lamia releases on."""

    _block_type_name = "Lamia Cluster"
    _block_type_slug = BLOCK_TYPE
    _description = (
        "A Kubernetes cluster Lamia releases on: one kubeconfig context, self-contained and secret, or the "
        "service account of the pod that runs the flow. Saved by `lamia cluster add`."
    )

    context: str | None = Field(None, description="The kubeconfig context it was saved from")
    server: str | None = Field(None, description="The Kubernetes API server's URL")
    in_cluster: bool = Field(
        False, description="Use the service account of the pod running the flow (a worker in this cluster)"
    )
    kubeconfig: SecretDict | None = Field(
        None, description="The context's kubeconfig, certificates and tokens inlined (secret)"
    )
    prometheus_url: str | None = Field(
        None, description="The Prometheus that scrapes this cluster's Istio metrics (optional)"
    )
    request_timeout: float = Field(10.0, gt=0, description="Seconds for each Kubernetes request")

    @classmethod
    def from_context(cls, selected: SelectedContext, prometheus_url: str | None = None) -> LamiaCluster:
        return cls(context=selected.context, server=selected.server, kubeconfig=SecretDict(selected.config),
                   prometheus_url=prometheus_url)

    def kube_config(self, name: str, request_timeout: float | None = None) -> KubeConfig:
        timeout = request_timeout or self.request_timeout
        if self.in_cluster:
            return KubeConfig(in_cluster=True, name=name, request_timeout=timeout)
        if self.kubeconfig is None:
            raise InvalidInput(f"cluster {name} holds neither a kubeconfig nor in_cluster: save it again "
                               "with lamia cluster add --overwrite")
        data: dict[str, Any] = self.kubeconfig.get_secret_value()
        return KubeConfig(config_data=data, context=self.context, name=name, request_timeout=timeout)

    def where(self) -> str:
        return "in-cluster service account" if self.in_cluster else (self.server or "?")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"cluster name {name!r} is not a DNS label (lowercase letters, digits and '-', "
                           "at most 63, e.g. prod-eu)")
    return name


def cluster_tag(name: str) -> str:
    return f"{TAG_PREFIX}{name}"


def clusters_of(tags: list[str]) -> list[str]:
    """The saved clusters a flow run's tags name (one, for a run that resolved a cluster)."""
    return sorted(t[len(TAG_PREFIX):] for t in tags if t.startswith(TAG_PREFIX))


def _prefect_failure(doing: str, exc: Exception) -> LamiaError:
    from prefect.settings import PREFECT_API_URL

    return Unreachable(f"cannot {doing} through Prefect's API at {PREFECT_API_URL.value() or '(not set)'}: "
                       f"{type(exc).__name__}: {exc}")


def names() -> list[str]:
    """The saved clusters' names, sorted."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            docs = client.read_block_documents_by_type(BLOCK_TYPE, include_secrets=False)
    except ObjectNotFound:
        return []
    except Exception as exc:
        if getattr(getattr(exc, "response", None), "status_code", None) == 404:
            return []  # the block type is not registered yet: no cluster was ever saved here
        raise _prefect_failure("list the saved clusters", exc) from exc
    return sorted(d.name for d in docs if d.name)


def load(name: str) -> LamiaCluster:
    """The saved cluster ``name``; InvalidInput naming the saved ones when there is none."""
    check_name(name)
    try:
        return cast(LamiaCluster, LamiaCluster.load(name))
    except ValueError as exc:
        if "Unable to find block document" not in str(exc):
            raise InvalidInput(f"cluster {name} cannot be read: {exc}") from exc
    except Exception as exc:
        raise _prefect_failure(f"load cluster {name}", exc) from exc
    known = names()
    listed = f"saved clusters: {', '.join(known)}" if known else "no cluster is saved"
    raise InvalidInput(f"no cluster named {name!r} ({listed}; add one with lamia cluster add)")


def save(name: str, cluster: LamiaCluster, *, overwrite: bool = False) -> None:
    check_name(name)
    try:
        cluster.save(name, overwrite=overwrite)
    except ValueError as exc:
        if "already in use" in str(exc):
            raise InvalidInput(f"cluster {name} is saved already: --overwrite replaces it") from None
        raise InvalidInput(f"cannot save cluster {name}: {exc}") from exc
    except Exception as exc:
        raise _prefect_failure(f"save cluster {name}", exc) from exc


def remove(name: str) -> None:
    load(name)  # InvalidInput naming the saved ones when there is no such cluster
    try:
        LamiaCluster.delete(name)
    except Exception as exc:
        raise _prefect_failure(f"remove cluster {name}", exc) from exc


def kube_config(name: str, request_timeout: float | None = None) -> KubeConfig:
    return load(name).kube_config(name, request_timeout)


def use_cluster(params: T) -> T:
    """``params`` with ``kubernetes`` resolved from the saved cluster it names (unchanged when it names
    none); a release that sets no Prometheus gets the cluster's. Inside a flow run, the run is tagged
    with the cluster."""
    if params.cluster is None:
        return params
    cluster = load(params.cluster)
    updates: dict[str, Any] = {"kubernetes": cluster.kube_config(params.cluster)}
    if (cluster.prometheus_url and isinstance(params, ReleaseParameters)
            and "prometheus" not in params.model_fields_set):
        updates["prometheus"] = params.prometheus.model_copy(update={"url": cluster.prometheus_url})
    _tag_current_run(params.cluster)
    return params.model_copy(update=updates)


def _tag_current_run(name: str) -> None:
    from prefect.context import FlowRunContext

    from flows._history import tag_run

    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        tag_run(str(ctx.flow_run.id), cluster_tag(name))
