"""`lamia expose` and `lamia unexpose`: reach an application from outside the mesh, and undo that.

Both talk to the cluster directly, like `lamia gateway apply`; the `expose`
flow (flows/expose.py) does the same from the Prefect UI, under the app's lease.
Input is checked before anything is written, so bad input changes nothing.
"""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli._app import app
from flows.cli._common import handle_errors
from flows.cli._options import AppOpt, ClusterOpt, ContextOpt, KubeconfigOpt, NamespaceOpt
from flows.cli.clusters import kube_config
from lamia_core.exposure import DEFAULT_SELECTOR, ExposeRequest, parse_selector
from lamia_core.kube import KubeAdapter

_DEFAULT_SELECTOR = ",".join(f"{k}={v}" for k, v in DEFAULT_SELECTOR.items())


def adapter(cluster: str | None, kubeconfig: str | None, context: str | None) -> KubeAdapter:
    return KubeAdapter(kube_config(cluster, kubeconfig, context))


@app.command("expose")
@handle_errors
def expose(
    namespace: NamespaceOpt,
    app_name: AppOpt,
    host: Annotated[str, typer.Option("--host", help="Public host name, e.g. shop.example.com.")],
    tls_secret: Annotated[
        str | None,
        typer.Option(
            "--tls-secret",
            help="Secret holding the certificate, in the ingress gateway's namespace: serves HTTPS on 443 "
            "and redirects HTTP to it.",
        ),
    ] = None,
    gateway: Annotated[
        str | None,
        typer.Option(
            "--gateway",
            help="Gateway (or, with --ingress, Ingress) to use or create in the namespace; default: one that "
            "already serves the host, else <service>-gateway.",
        ),
    ] = None,
    selector: Annotated[
        str, typer.Option("--selector", help="Labels of the ingress gateway's pods.")
    ] = _DEFAULT_SELECTOR,
    ingress: Annotated[
        bool,
        typer.Option(
            "--ingress",
            help="A Kubernetes Ingress (class istio) instead of an Istio Gateway; its traffic reaches the "
            "Service without Lamia's weights.",
        ),
    ] = False,
    cluster: ClusterOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> None:
    """Make the application reachable from outside the mesh through Istio's ingress gateway."""
    request = ExposeRequest(host=host, tls_secret=tls_secret, name=gateway, selector=parse_selector(selector),
                            ingress=ingress)
    with adapter(cluster, kubeconfig, context) as kube:
        application = kube.discover_application(namespace, app_name)
        exposure = kube.expose(application, request)
    typer.echo(f"{app_name} in namespace {namespace} exposed as {exposure.describe()}")
    if exposure.kind == "Gateway":
        scheme = "https" if exposure.tls_secret else "http"
        typer.echo(f"  {scheme}://{exposure.host}/ follows the same routes and weights as the mesh")
    else:
        service = application.service_name
        typer.echo(f"  http://{exposure.host}/ reaches Service {service} without Lamia's weights")


@app.command("unexpose")
@handle_errors
def unexpose(
    namespace: NamespaceOpt,
    app_name: AppOpt,
    cluster: ClusterOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> None:
    """Remove what `lamia expose` added, and nothing else."""
    with adapter(cluster, kubeconfig, context) as kube:
        application = kube.discover_application(namespace, app_name)
        exposure = kube.unexpose(application)
    if exposure is None:
        typer.echo(f"{app_name} in namespace {namespace} is not exposed by Lamia; nothing to remove")
        return
    removed = f"deleted {exposure.kind} {exposure.ref}" if exposure.created else (
        f"left {exposure.kind} {exposure.ref} in place (Lamia adopted it)")
    typer.echo(f"{app_name} in namespace {namespace} no longer exposed as {exposure.host}: {removed}")
