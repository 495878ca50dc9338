"""`lamia doctor`: check a cluster, Prometheus and Prefect before a first release.

This module only gathers facts (each read's answer, or why it failed) and
prints; the checks themselves are pure, in lamia_core/doctor.py. Exit code 0
only when every needed check passes, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

import typer

from flows.cli._app import app
from flows.cli._common import handle_errors
from flows.cli._options import AppOpt, ClusterOpt, ContextOpt, KubeconfigOpt, NamespaceOpt, ServiceOpt
from flows.cli.clusters import prometheus_for
from flows.cli.expose import adapter
from lamia_core.doctor import (
    NEEDED_ACCESS,
    OPTIONAL_ACCESS,
    Facts,
    Failed,
    chosen_service,
    report_json,
    run_checks,
)
from lamia_core.errors import InvalidInput, LamiaError
from lamia_core.istio import DESTINATION_RULE, ISTIO_GROUP, VIRTUAL_SERVICE
from lamia_core.kube import KubeAdapter
from lamia_core.metrics import check_window, promql_string
from lamia_core.models import check_dns_label, check_label_value
from lamia_core.policies import HealthPolicy

DEPLOYMENT = "canary-release/canary-release"
_SERVICE_ACCOUNT = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$")


class Output(StrEnum):
    text = "text"
    json = "json"


def identity(value: str) -> str:
    """``NS/NAME`` is a service account's user name; anything else is taken as a user name."""
    m = _SERVICE_ACCOUNT.fullmatch(value)
    if m:
        return f"system:serviceaccount:{m.group(1)}:{m.group(3)}"
    if not value.strip() or "/" in value or any(ch.isspace() for ch in value):
        raise InvalidInput(f"--as {value!r} is neither NAMESPACE/SERVICEACCOUNT (e.g. lamia-system/lamia) "
                           "nor a user name such as system:serviceaccount:lamia-system:lamia")
    return value


def _read(call: Any) -> Any:
    try:
        return call()
    except LamiaError as exc:
        return Failed(str(exc))


def gather_kube(facts: Facts, kube: KubeAdapter, as_user: str | None) -> None:
    ns, app_name = facts.namespace, facts.app
    facts.istio_versions = _read(lambda: kube.served_versions(ISTIO_GROUP))
    if isinstance(facts.istio_versions, Failed) and isinstance(
            _read(lambda: kube.get_namespace(ns)), Failed):
        # The API server itself does not answer (or refuses us): say it once, skip the rest.
        return
    facts.kube_gathered = True
    facts.namespace_object = _read(lambda: kube.get_namespace(ns))
    selector = f"app={app_name}"
    facts.deployments = _read(lambda: kube.list_deployments(ns, selector))
    facts.pods = _read(lambda: kube.list_pods(ns, selector))
    facts.services = _read(lambda: kube.list_services(ns))
    name = chosen_service(facts) or facts.service or app_name
    facts.virtual_service = _read(lambda: kube.get_object(VIRTUAL_SERVICE, ns, name))
    facts.destination_rule = _read(lambda: kube.get_object(DESTINATION_RULE, ns, name))
    for who in ("", *([as_user] if as_user else [])):
        answers: dict[tuple[str, str, str], tuple[bool, str]] = {}
        try:
            for grant in (*NEEDED_ACCESS, *OPTIONAL_ACCESS):
                group, resource, verb = grant
                answers[grant] = kube.can_i(verb, group, resource, ns, as_user=who or None)
            facts.access[who] = answers
        except LamiaError as exc:
            facts.access[who] = Failed(str(exc))


def gather_prometheus(facts: Facts, url: str) -> None:
    from lamia_core.prometheus import PrometheusAdapter, PrometheusConfig

    facts.prometheus_url = url
    prometheus = PrometheusAdapter(PrometheusConfig(url=url, timeout=10.0))
    try:
        try:
            prometheus.query("vector(1)")
        except LamiaError as exc:
            facts.prometheus_error = str(exc)
            return
        selector = (f"destination_workload_namespace={promql_string(facts.namespace)},"
                    f"destination_app={promql_string(facts.app)}")
        facts.series = _read(lambda: prometheus.query(
            f"count by (destination_version, job) (istio_requests_total{{{selector}}})"))
        facts.prometheus_config = _read(prometheus.config_text)
    finally:
        prometheus.close()


def gather_prefect(facts: Facts, api_url: str | None, deployment: str) -> None:
    import httpx

    facts.deployment_name = deployment
    if api_url is None:
        from prefect.settings import PREFECT_API_URL

        api_url = PREFECT_API_URL.value()
    facts.prefect_api = api_url
    if not api_url:
        facts.prefect_api = None
        return
    try:
        # Straight to /health with a short timeout: Prefect's client retries for a long while.
        response = httpx.get(f"{api_url.rstrip('/')}/health", timeout=5.0)
        if response.status_code != 200:
            facts.prefect_error = f"{api_url}/health answered HTTP {response.status_code}"
            return
    except httpx.HTTPError as exc:
        facts.prefect_error = f"cannot reach Prefect's API at {api_url}: {exc}"
        return
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            _read_deployment(facts, client, api_url, deployment)
    except Exception as exc:  # Prefect's client raises httpx and its own errors alike
        facts.prefect_error = f"Prefect's API at {api_url} failed: {type(exc).__name__}: {exc}"


def _read_deployment(facts: Facts, client: Any, api_url: str, deployment: str) -> None:
    from prefect.exceptions import ObjectNotFound

    try:
        found = client.read_deployment_by_name(deployment)
    except ObjectNotFound:
        facts.deployment = Failed(f"Prefect at {api_url} has no deployment {deployment}")
        return
    status = getattr(found.status, "value", found.status)
    facts.deployment = {"work_pool_name": found.work_pool_name, "status": status}
    if found.work_pool_name:
        try:
            pool = client.read_work_pool(found.work_pool_name)
            facts.work_pool_paused = bool(pool.is_paused)
            facts.workers = [{"name": w.name, "status": getattr(w.status, "value", w.status)}
                             for w in client.read_workers_for_work_pool(found.work_pool_name)]
        except ObjectNotFound:
            facts.workers = Failed(f"work pool {found.work_pool_name} does not exist")


@app.command("doctor")
@handle_errors
def doctor(
    namespace: NamespaceOpt,
    app_name: AppOpt,
    prometheus: Annotated[
        str | None, typer.Option("--prometheus", envvar="LAMIA_PROMETHEUS_URL",
                                   help="Prometheus URL; default the --cluster's.")
    ] = None,
    window: Annotated[
        str, typer.Option("--window", help="The policy's query window, checked against the scrape interval.")
    ] = HealthPolicy().window,
    service: ServiceOpt = None,
    as_user: Annotated[
        str | None,
        typer.Option("--as", help="Also check the access of this identity: NAMESPACE/SERVICEACCOUNT of the "
                     "worker (e.g. lamia-system/lamia) or a user name."),
    ] = None,
    prefect_api: Annotated[
        str | None, typer.Option("--prefect-api", help="Prefect API URL; default PREFECT_API_URL.")
    ] = None,
    deployment: Annotated[
        str, typer.Option("--deployment", help="The release deployment to look for.")
    ] = DEPLOYMENT,
    output: Annotated[Output, typer.Option("--output", "-o", help="text or json.")] = Output.text,
    cluster: ClusterOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> None:
    """Check, in order, everything a release needs; a checklist with the fix for each ✖."""
    check_dns_label("namespace", namespace)
    check_label_value("application", app_name)
    check_window(window)
    if service is not None:
        check_dns_label("Service", service)
    who = identity(as_user) if as_user is not None else None
    if "/" not in deployment:
        raise InvalidInput(f"--deployment {deployment!r} is not FLOW/DEPLOYMENT, e.g. {DEPLOYMENT}")
    facts = Facts(namespace=namespace, app=app_name, service=service, window=window)
    with adapter(cluster, kubeconfig, context) as kube:
        gather_kube(facts, kube, who)
    prometheus = prometheus_for(cluster, prometheus)
    if prometheus:
        gather_prometheus(facts, prometheus)
    gather_prefect(facts, prefect_api, deployment)
    report = run_checks(facts, as_identity=who)
    if output is Output.json:
        typer.echo(report_json(report))
    else:
        typer.echo(report.text(), nl=False)
    raise typer.Exit(0 if report.ok else 1)

