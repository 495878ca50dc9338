"""`lamia cluster add/list/remove`: saved clusters (Prefect blocks), and `--cluster` for every command.

Every command that talks to a cluster takes ``--cluster NAME`` or
``--kubeconfig``/``--context``; :func:`kube_config` turns either into a
``KubeConfig`` in this process, and refuses both at once.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from flows.cli._app import cluster_app
from flows.cli._common import handle_errors
from lamia_core.errors import InvalidInput, LamiaError
from lamia_core.kube import KubeAdapter, KubeConfig

if TYPE_CHECKING:
    from flows.clusters import LamiaCluster

#: Seconds `cluster list` waits for each API server by default: a reachable one answers /version at once.
LIST_TIMEOUT = 3.0


#: Options whose value typer may take from the environment, and the variable.
_ENVVARS = {"kubeconfig": "KUBECONFIG", "prometheus": "LAMIA_PROMETHEUS_URL"}


def _from_env(option: str, value: str) -> bool:
    # typer does not say where a value came from; one equal to its variable's counts as not given
    # (if typed too, it said what the environment says anyway).
    variable = _ENVVARS.get(option)
    return variable is not None and os.environ.get(variable) == value


def kube_config(cluster: str | None, kubeconfig: str | None, context: str | None) -> KubeConfig:
    """The connection a command was given: a saved cluster, or a kubeconfig (and context).

    ``--kubeconfig`` filled from $KUBECONFIG is no choice of the user's, so it
    does not clash with ``--cluster``; an explicit one does.
    """
    if cluster is None:
        return KubeConfig(kubeconfig=kubeconfig, context=context)
    explicit = [f"--{option}" for option, value in (("kubeconfig", kubeconfig), ("context", context))
                if value is not None and not _from_env(option, value)]
    if explicit:
        raise InvalidInput(f"--cluster {cluster} and {' and '.join(explicit)} both say which cluster to use: "
                           "give one or the other")
    from flows.clusters import kube_config as saved

    return saved(cluster)


def for_worker(kube: KubeConfig) -> KubeConfig:
    """The connection given to a deployment's run, which runs elsewhere: a kubeconfig path that
    came from this machine's $KUBECONFIG names a file of this machine, so the run uses its own
    default instead (its $KUBECONFIG or ~/.kube/config, or its pod's service account)."""
    if kube.kubeconfig is not None and _from_env("kubeconfig", kube.kubeconfig):
        return kube.model_copy(update={"kubeconfig": None})
    return kube


def prometheus_for(cluster: str | None, given: str | None) -> str | None:
    """The Prometheus URL to use: ``--prometheus`` on the command line, else the saved cluster's, else
    $LAMIA_PROMETHEUS_URL (which typer put in ``given``)."""
    if cluster is None:
        return given
    if given is not None and not _from_env("prometheus", given):
        return given
    from flows.clusters import load

    return load(cluster).prometheus_url or given


class Output(StrEnum):
    table = "table"
    json = "json"


@dataclass
class Reach:
    name: str
    context: str | None
    server: str
    in_cluster: bool
    prometheus: str | None
    reachable: bool | None
    version: str | None = None
    error: str | None = None

    def status(self) -> str:
        if self.reachable:
            return f"reachable ({self.version})"
        if self.reachable is None:
            return f"not checked: {self.error}"
        return f"unreachable: {self.error}"


def probe(name: str, cluster: LamiaCluster, timeout: float) -> Reach:
    """One quick call (/version) to the cluster's API server, at most ``timeout`` seconds a try."""
    reach = Reach(name=name, context=cluster.context, server=cluster.where(), in_cluster=cluster.in_cluster,
                  prometheus=cluster.prometheus_url, reachable=False)
    if cluster.in_cluster and not os.environ.get("KUBERNETES_SERVICE_HOST"):
        reach.reachable = None
        reach.error = "the service account of the pod that runs the flow (this process is in no pod)"
        return reach
    try:
        with KubeAdapter(cluster.kube_config(name, request_timeout=timeout)) as kube:
            reach.version = kube.server_version()
        reach.reachable = True
    except LamiaError as exc:
        reach.error = str(exc)
    return reach


@cluster_app.command("add")
@handle_errors
def cluster_add(
    name: Annotated[str, typer.Argument(help="The cluster's name, e.g. prod-eu.")],
    context: Annotated[
        str | None, typer.Option("--context", help="The kubeconfig context to save (its cluster and user).")
    ] = None,
    kubeconfig: Annotated[
        str | None,
        typer.Option("--kubeconfig", help="Kubeconfig file(s), ':'-separated; default $KUBECONFIG or "
                     "~/.kube/config."),
    ] = None,
    in_cluster: Annotated[
        bool,
        typer.Option("--in-cluster", help="Use the service account of the pod that runs the flow (a worker "
                     "in this cluster) instead of a kubeconfig."),
    ] = False,
    prometheus: Annotated[
        str | None,
        typer.Option("--prometheus", help="The Prometheus of this cluster's Istio metrics, used by release "
                     "start, metrics and doctor when they are given no --prometheus."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a saved cluster of that name.")
    ] = False,
) -> None:
    """Save how to reach a cluster as a Prefect block (type Lamia Cluster), listed in the Prefect UI.

    The context is saved with its cluster and user only, certificate and token
    files inlined, so a flow run on another machine reaches the cluster too.
    The block keeps it secret: the UI and API show it obfuscated.
    """
    from flows.clusters import LamiaCluster, check_name, save
    from lamia_core.kubeconfig import select_context

    check_name(name)
    if in_cluster and (context or kubeconfig):
        raise InvalidInput("--in-cluster uses the pod's service account: give no --context or --kubeconfig")
    if not in_cluster and not context:
        raise InvalidInput("say which cluster: --context CTX (of --kubeconfig, default ~/.kube/config) "
                           "or --in-cluster")
    if prometheus is not None:
        from lamia_core.prometheus import PrometheusConfig

        prometheus = PrometheusConfig(url=prometheus).url  # InvalidInput for anything but http(s)://host
    if in_cluster:
        cluster = LamiaCluster(in_cluster=True, prometheus_url=prometheus)
        notes: list[str] = []
    else:
        paths = [p for p in (kubeconfig or "").split(os.pathsep) if p] or None
        selected = select_context(paths, context)
        cluster = LamiaCluster.from_context(selected, prometheus)
        notes = selected.notes
    save(name, cluster, overwrite=overwrite)
    typer.echo(f"cluster {name} saved ({cluster.where()}" + (f", context {cluster.context}" if cluster.context
                                                             else "") + ")")
    for note in notes:
        print(f"lamia: note: {note}", file=sys.stderr)
    reach = probe(name, cluster, LIST_TIMEOUT)
    if reach.reachable is False:
        print(f"lamia: warning: cluster {name} is saved but not reachable from here now: {reach.error}",
              file=sys.stderr)


@cluster_app.command("list")
@handle_errors
def cluster_list(
    output: Annotated[Output, typer.Option("--output", "-o", help="table or json.")] = Output.table,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each API server.")
    ] = LIST_TIMEOUT,
) -> None:
    """The saved clusters, each with whether its API server answers now."""
    from flows.clusters import load, names

    saved = [(n, load(n)) for n in names()]
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(saved)))) as pool:
        reaches = list(pool.map(lambda item: probe(item[0], item[1], timeout), saved))
    if output is Output.json:
        typer.echo(json.dumps([asdict(r) for r in reaches], indent=2))
        return
    if not reaches:
        typer.echo("no cluster is saved (lamia cluster add NAME --context CTX)")
        return
    rows = [("NAME", "CONTEXT", "SERVER", "STATUS")] + [
        (r.name, r.context or "-", r.server, r.status()) for r in reaches]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for a, b, c, d in rows:
        typer.echo(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}")


@cluster_app.command("remove")
@handle_errors
def cluster_remove(name: Annotated[str, typer.Argument(help="The saved cluster to forget.")]) -> None:
    """Forget a saved cluster (its block); nothing on the cluster changes."""
    from flows.clusters import remove

    remove(name)
    typer.echo(f"cluster {name} removed")
