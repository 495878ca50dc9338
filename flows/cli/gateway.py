"""Gateway commands: render manifests, prepare a namespace, apply and show a gateway, set weights.

Every command checks its input (weights, versions, labels) before it writes,
so bad input changes nothing on the cluster.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer
import yaml

from flows.cli._app import cluster_app, gateway_app, render_app, weights_app
from flows.cli._common import handle_errors
from flows.cli._options import AppOpt, ClusterOpt, ContextOpt, KubeconfigOpt, NamespaceOpt, ServiceOpt
from flows.cli.clusters import kube_config
from lamia_core.errors import InvalidInput
from lamia_core.istio import (
    render_destination_rule,
    render_virtual_service,
)
from lamia_core.kube import NAMESPACE_LABELS, KubeAdapter
from lamia_core.models import (
    DEFAULT_ROUTE,
    Application,
    Gateway,
    Route,
    Version,
    Weights,
    parse_weights,
)

#: Name of the conditional route made by ``render gateway --condition``.
CONDITION_ROUTE = "condition"



class Output(StrEnum):
    table = "table"
    yaml = "yaml"


def _adapter(cluster: str | None, kubeconfig: str | None, context: str | None) -> KubeAdapter:
    return KubeAdapter(kube_config(cluster, kubeconfig, context))


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


@render_app.command("gateway")
@handle_errors
def render_gateway(
    namespace: NamespaceOpt,
    app: AppOpt,
    weights: Annotated[str, typer.Option(help="Default route's weights, e.g. v1=90,v2=10.")],
    versions: Annotated[
        str | None,
        typer.Option(help="Versions to give subsets, e.g. v1,v2,v3; default: those named in the weights."),
    ] = None,
    condition: Annotated[
        str | None,
        typer.Option(help="A condition; matching requests take the route 'condition', placed first."),
    ] = None,
    condition_weights: Annotated[
        str | None, typer.Option(help="Weights of the conditional route, e.g. v2=100.")
    ] = None,
) -> None:
    """Print the DestinationRule and VirtualService for a gateway as YAML, without a cluster."""
    default = parse_weights(weights)
    routes: list[Route] = []
    if (condition is None) != (condition_weights is None):
        raise InvalidInput("--condition and --condition-weights go together: give both or neither")
    if condition is not None and condition_weights is not None:
        # Imported here: the condition language is only needed by this option.
        from lamia_core.conditions import compile_condition

        match = tuple(compile_condition(condition))
        routes.append(
            Route(
                name=CONDITION_ROUTE,
                condition=condition,
                match=match,
                weights=parse_weights(condition_weights),
            )
        )
    routes.append(Route(weights=default))
    # Versions in the order the user named them, default route first.
    names = (
        _csv(versions)
        if versions is not None
        else list(dict.fromkeys(v for r in reversed(routes) for v in r.weights.versions))
    )
    repeated = sorted({v for v in names if names.count(v) > 1})
    if repeated:
        raise InvalidInput(f"--versions names {', '.join(repeated)} more than once")
    if not names:
        raise InvalidInput("--versions names no version")
    application = Application(
        namespace=namespace,
        name=app,
        versions=tuple(Version(name=v, deployment=f"{app}-{v}") for v in names),
    )
    gateway = Gateway(application=application, routes=tuple(routes))
    docs = [render_destination_rule(application), render_virtual_service(gateway)]
    typer.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)


@cluster_app.command("init")
@handle_errors
def cluster_init(
    namespace: Annotated[str, typer.Argument(help="Namespace to prepare; created when missing.")],
    cluster: ClusterOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> None:
    """Label a namespace istio-injection=enabled and lamia.io/managed=true, creating it when missing."""
    with _adapter(cluster, kubeconfig, context) as kube:
        kube.init_namespace(namespace)
        created = not kube.namespace_existed
    labels = ", ".join(f"{k}={v}" for k, v in NAMESPACE_LABELS.items())
    what = "created" if created else "ready"
    typer.echo(f"namespace {namespace} {what} ({labels})" + (
        "; it did not exist, so Lamia created it" if created else ""))


@gateway_app.command("apply")
@handle_errors
def gateway_apply(
    namespace: NamespaceOpt,
    app: AppOpt,
    weights: Annotated[
        str | None,
        typer.Option(
            help="Default route's weights, e.g. v1=90,v2=10. Without it an existing gateway (or a "
            "hand-written VirtualService split it can adopt) keeps its weights; a new one needs --weights "
            "unless the application has exactly one version, which then gets all traffic."
        ),
    ] = None,
    service: ServiceOpt = None,
    cluster: ClusterOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> None:
    """Create or update the application's DestinationRule and VirtualService from its Deployments."""
    wanted = parse_weights(weights) if weights is not None else None
    with _adapter(cluster, kubeconfig, context) as kube:
        application = kube.discover_application(namespace, app, service=service)
        current = kube.read_gateway(application)
        if current is None and wanted is None and kube.read_virtual_service(application) is not None:
            raise kube.no_gateway(application)
        gateway = _gateway_to_apply(application, current, wanted)
        kube.apply_gateway(gateway)
    from flows._control import who
    from flows._manual_events import record_change

    record_change(namespace, app, kind="gateway apply", command="lamia gateway apply"
                  + (f" --weights {wanted}" if wanted else ""),
                  reason=f"gateway applied with {gateway.default_route.weights} on its default route",
                  by=who(), weights=gateway.default_route.weights.as_dict())
    typer.echo(
        f"gateway of {app} in namespace {namespace} applied "
        f"(DestinationRule and VirtualService {application.host})"
    )
    typer.echo(_table(gateway), nl=False)


def _gateway_to_apply(application: Application, current: Gateway | None, wanted: Weights | None) -> Gateway:
    if current is not None:
        return current if wanted is None else current.with_weights(wanted, current.default_route.name)
    if wanted is None:
        if len(application.versions) != 1:
            names = application.version_names
            example = ",".join(f"{v}={100 if i == 0 else 0}" for i, v in enumerate(names))
            raise InvalidInput(
                f"application {application.name!r} has {len(names)} versions ({', '.join(names)}) and no "
                f"gateway yet: say where traffic goes with --weights, e.g. --weights {example}"
            )
        wanted = Weights.all_on(application.version_names[0])
    return Gateway(application=application, routes=(Route(weights=wanted),))


@gateway_app.command("show")
@handle_errors
def gateway_show(
    namespace: NamespaceOpt,
    app: AppOpt,
    output: Annotated[Output, typer.Option("--output", "-o", help="table or yaml.")] = Output.table,
    service: ServiceOpt = None,
    cluster: ClusterOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> None:
    """Print the application's routes: their conditions and weights."""
    with _adapter(cluster, kubeconfig, context) as kube:
        application = kube.discover_application(namespace, app, service=service)
        gateway = kube.read_gateway(application)
        if gateway is None:
            raise kube.no_gateway(application)
    if output is Output.yaml:
        typer.echo(yaml.safe_dump(_as_data(gateway), sort_keys=False), nl=False)
    else:
        versions = ", ".join(application.version_names)
        typer.echo(
            f"gateway of {app} in namespace {namespace} (host {application.host}; versions {versions})"
        )
        typer.echo(_table(gateway), nl=False)


def _as_data(gateway: Gateway) -> dict[str, Any]:
    app = gateway.application
    routes: list[dict[str, Any]] = []
    for r in gateway.routes:
        item: dict[str, Any] = {"name": r.name}
        if r.condition is not None:
            item["condition"] = r.condition
        if r.match:
            item["match"] = list(r.match)
        item["weights"] = r.weights.as_dict()
        routes.append(item)
    return {
        "namespace": app.namespace,
        "application": app.name,
        "host": app.host,
        "versions": app.version_names,
        "routes": routes,
    }


def _table(gateway: Gateway) -> str:
    rows = [("ROUTE", "WEIGHTS", "CONDITION")]
    for r in gateway.routes:
        cond = (
            r.condition
            if r.condition is not None
            else (
                json.dumps(list(r.match), separators=(",", ":"))
                if r.match
                else "(default: all other requests)"
            )
        )
        rows.append((r.name, str(r.weights), cond))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    return "".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}\n" for a, b, c in rows)


@weights_app.command("set")
@handle_errors
def weights_set(
    weights: Annotated[
        list[str], typer.Argument(help="VERSION=WEIGHT pairs summing to 100, e.g. v1=80 v2=20.")
    ],
    namespace: NamespaceOpt,
    app: AppOpt,
    route: Annotated[str, typer.Option(help="The route whose weights to set.")] = DEFAULT_ROUTE,
    service: ServiceOpt = None,
    cluster: ClusterOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> None:
    """Set one route's traffic weights; other writers' changes to the VirtualService are kept.

    Refused while a release holds the application's gateway (it names the run and how to end it).
    """
    wanted = parse_weights(weights)
    with _adapter(cluster, kubeconfig, context) as kube:
        application = kube.discover_application(namespace, app, service=service)
        gateway = kube.set_weights(application, wanted, route=route)
    from flows._control import who
    from flows._manual_events import record_change

    record_change(namespace, app, kind="weights set", command=f"lamia weights set --route {route} {wanted}",
                  reason=f"route {route} set to {wanted} by hand", by=who(), weights=wanted.as_dict())
    typer.echo(f"{app} route {route}: {gateway.route(route).weights}")
