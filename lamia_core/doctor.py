"""`lamia doctor`'s checks: gathered facts in, a checklist out (✔/✖, each ✖ with its fix).

Pure: the CLI reads the cluster, Prometheus and Prefect into :class:`Facts`
(each read either its answer or a :class:`Failed` with why), and
:func:`run_checks` turns them into :class:`Check` results, in the order a user
would fix them. A check whose facts were not gathered (no Prometheus URL given)
or whose prerequisite failed is *skipped*; skipping never fails the report by
itself, since the failure that caused it is reported already. A check that is
not ``required`` (access needed only by `lamia expose` or `cluster init`) shows
its ✖ without failing the report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

from lamia_core.errors import InvalidInput
from lamia_core.istio import (
    ISTIO_GROUP,
    ISTIO_VERSION,
    gateway_from_virtual_service,
    render_destination_rule,
    render_virtual_service,
)
from lamia_core.metrics import duration_seconds
from lamia_core.models import Application, Gateway, Route, Version, Weights
from lamia_core.policies import WINDOW_SCRAPES

Obj = dict[str, Any]
Status = Literal["pass", "fail", "skip"]
SIDECAR = "istio-proxy"
INJECT_ANNOTATION = "sidecar.istio.io/inject"
REQUIRED_LABELS = ("app", "version", "deployment")

#: (API group, resource, verb) Lamia's releases and gateway commands need in the namespace.
NEEDED_ACCESS: tuple[tuple[str, str, str], ...] = (
    ("", "namespaces", "get"),
    ("", "services", "list"),
    ("apps", "deployments", "list"),
    *((ISTIO_GROUP, r, v) for r in ("virtualservices", "destinationrules")
      for v in ("list", "get", "create", "update")),
)
#: Access only some commands need: `cluster init`, `expose`/`unexpose` and the doctor's own reads.
OPTIONAL_ACCESS: tuple[tuple[str, str, str], ...] = (
    ("", "namespaces", "create"),
    ("", "namespaces", "update"),
    ("", "services", "get"),
    ("", "pods", "list"),
    *((ISTIO_GROUP, "gateways", v) for v in ("get", "list", "create", "update", "delete")),
    *(("networking.k8s.io", "ingresses", v) for v in ("get", "list", "create", "update", "delete")),
)


@dataclass(frozen=True)
class Failed:
    """A read that did not answer, and why (the error's message)."""

    reason: str


def failed(value: object) -> bool:
    return isinstance(value, Failed)


@dataclass
class Facts:
    """What the doctor read. None: not gathered (the check is skipped)."""

    namespace: str
    app: str
    service: str | None = None
    """The Service the user named with --service, if any."""
    istio_versions: list[str] | Failed | None = None
    kube_gathered: bool = False
    """The cluster answered and was read; else every check of it but the first is skipped."""
    namespace_object: Obj | Failed | None = None
    """None (when gathered): the Namespace does not exist."""
    deployments: list[Obj] | Failed | None = None
    pods: list[Obj] | Failed | None = None
    services: list[Obj] | Failed | None = None
    virtual_service: Obj | Failed | None = None
    destination_rule: Obj | Failed | None = None
    #: (group, resource, verb) → (allowed, the server's reason), per identity ("" for the one in use).
    access: dict[str, dict[tuple[str, str, str], tuple[bool, str]] | Failed] = field(default_factory=dict)
    prometheus_url: str | None = None
    prometheus_error: str | None = None
    #: ``count by (destination_version, job)`` of the app's istio_requests_total series.
    series: list[Obj] | Failed | None = None
    prometheus_config: str | Failed | None = None
    window: str = "1m"
    prefect_api: str | None = None
    prefect_error: str | None = None
    deployment_name: str = "canary-release/canary-release"
    deployment: Obj | Failed | None = None
    """The deployment: ``{"work_pool_name": ..., "status": ...}``; a Failed when it does not exist."""
    workers: list[Obj] | Failed | None = None
    """Workers of the deployment's work pool: ``{"name", "status"}``."""
    work_pool_paused: bool = False


class Check(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    status: Status
    detail: str = ""
    fix: str = ""
    required: bool = True


class Report(BaseModel):
    namespace: str
    app: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        """Everything needed passed (skips and optional ✖ do not count)."""
        return not any(c.status == "fail" and c.required for c in self.checks)

    def as_json(self) -> Obj:
        return {"namespace": self.namespace, "app": self.app, "ok": self.ok,
                "checks": [c.model_dump() for c in self.checks]}

    def text(self) -> str:
        lines = [f"lamia doctor: application {self.app} in namespace {self.namespace}"]
        for c in self.checks:
            mark = {"pass": "✔", "fail": "✖", "skip": "-"}[c.status]
            optional = " (optional)" if c.status == "fail" and not c.required else ""
            lines.append(f"{mark} {c.title}{optional}" + (f": {c.detail}" if c.detail else ""))
            if c.status == "fail" and c.fix:
                lines.append(f"    fix: {c.fix}")
        counts = {s: sum(1 for c in self.checks if c.status == s) for s in ("pass", "fail", "skip")}
        lines.append(f"{len(self.checks)} checks: {counts['pass']} passed, {counts['fail']} failed, "
                     f"{counts['skip']} not checked")
        return "\n".join(lines) + "\n"


def _check(id: str, title: str, *, required: bool = True) -> Callable[..., Check]:
    def make(status: Status, detail: str = "", fix: str = "") -> Check:
        return Check(id=id, title=title, status=status, detail=detail, fix=fix, required=required)
    return make


def _names(objs: Iterable[Obj]) -> list[str]:
    return sorted(str(o["metadata"]["name"]) for o in objs)


# --- Istio and the namespace -----------------------------------------------------------------


def check_istio(f: Facts) -> Check:
    c = _check("istio-api", f"Istio's {ISTIO_GROUP}/{ISTIO_VERSION} is served (Istio ≥ 1.22)")
    v = f.istio_versions
    if v is None:
        return c("skip", "not checked")
    if isinstance(v, Failed):
        return c("fail", v.reason, "check the kubeconfig and context, and that the API server answers")
    if ISTIO_VERSION in v:
        return c("pass")
    if not v:
        return c("fail", f"the cluster serves no {ISTIO_GROUP} API: Istio is not installed",
                 "install Istio 1.22 or later (istioctl install)")
    return c("fail", f"the cluster serves {ISTIO_GROUP} {', '.join(v)} only; Lamia writes {ISTIO_VERSION}",
             "upgrade Istio to 1.22 or later (istioctl upgrade)")


def injection_state(ns: Obj | None) -> str:
    """"enabled", "disabled" or "off" (no label) for a Namespace, as Istio's webhook reads it."""
    labels = ((ns or {}).get("metadata") or {}).get("labels") or {}
    if labels.get("istio-injection") == "disabled":
        return "disabled"
    if labels.get("istio-injection") == "enabled" or labels.get("istio.io/rev"):
        return "enabled"
    return "off"


def check_injection(f: Facts) -> Check:
    c = _check("injection", f"namespace {f.namespace} has sidecar injection enabled")
    ns = f.namespace_object
    fix = f"lamia cluster init {f.namespace}"
    if not f.kube_gathered:
        return c("skip", "not checked")
    if isinstance(ns, Failed):
        return c("skip", ns.reason)
    if ns is None:
        return c("fail", f"namespace {f.namespace} does not exist", fix)
    state = injection_state(ns)
    if state == "enabled":
        return c("pass")
    if state == "disabled":
        return c("fail", "it is labelled istio-injection=disabled", fix)
    return c("fail", "it has neither the istio-injection=enabled nor an istio.io/rev label", fix)


def _has_sidecar(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    if any(c.get("name") == SIDECAR for c in spec.get("containers") or []):
        return True
    # Native sidecars (Istio with ENABLE_NATIVE_SIDECARS): an init container that keeps running.
    return any(c.get("name") == SIDECAR and c.get("restartPolicy") == "Always"
               for c in spec.get("initContainers") or [])


def _selects(deployment: Obj, pod: Obj) -> bool:
    wanted = (((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}).items()
    return bool(wanted) and wanted <= ((pod.get("metadata") or {}).get("labels") or {}).items()


def check_sidecars(f: Facts) -> Check:
    c = _check("sidecars", "every pod of every version carries the istio-proxy sidecar")
    for value in (f.deployments, f.pods):
        if value is None:
            return c("skip", "not checked")
        if isinstance(value, Failed):
            return c("skip", value.reason)
    assert isinstance(f.deployments, list) and isinstance(f.pods, list)
    if not f.deployments:
        return c("skip", f"no Deployments labelled app={f.app}")
    lacking, opted_out, empty = [], [], []
    for d in sorted(f.deployments, key=lambda d: str(d["metadata"]["name"])):
        name = d["metadata"]["name"]
        pods = [p for p in f.pods if _selects(d, p)]
        if not pods:
            empty.append(name)
            continue
        template = ((d.get("spec") or {}).get("template") or {}).get("metadata") or {}
        if str((template.get("annotations") or {}).get(INJECT_ANNOTATION, "")).lower() == "false" or \
                str((template.get("labels") or {}).get(INJECT_ANNOTATION, "")).lower() == "false":
            opted_out.append(name)
        elif not all(_has_sidecar(p) for p in pods):
            lacking.append(name)
    if not (lacking or opted_out or empty):
        return c("pass", f"{len(f.pods)} pods")
    details, fixes = [], []
    injected = isinstance(f.namespace_object, dict) and injection_state(f.namespace_object) == "enabled"
    restart = f"kubectl rollout restart -n {f.namespace} " + " ".join(f"deployment/{n}" for n in lacking)
    if lacking:
        details.append(f"pods of {', '.join(lacking)} have no istio-proxy"
                       + (" (they predate injection)" if injected else ""))
        fixes.append(restart if injected else f"lamia cluster init {f.namespace}, then {restart}")
    if opted_out:
        details.append(f"{', '.join(opted_out)} opt out with {INJECT_ANNOTATION}: \"false\"")
        fixes.append(f"remove {INJECT_ANNOTATION} from the pod template of {', '.join(opted_out)}")
    if empty:
        details.append(f"{', '.join(empty)} {'has' if len(empty) == 1 else 'have'} no pods")
        fixes.append("scale them up: " + "; ".join(
            f"kubectl scale -n {f.namespace} deployment/{n} --replicas=1" for n in empty))
    return c("fail", "; ".join(details), "; ".join(fixes))


# --- the application -------------------------------------------------------------------------


def check_labels(f: Facts) -> Check:
    c = _check("labels", "the application's Deployments carry app, version and deployment")
    if f.deployments is None:
        return c("skip", "not checked")
    if isinstance(f.deployments, Failed):
        return c("fail", f.deployments.reason, "check the namespace and the kubeconfig")
    if not f.deployments:
        return c("fail", f"no Deployments labelled app={f.app} in namespace {f.namespace}",
                 f"label each Deployment of the application app={f.app}, version=<version>, "
                 "deployment=<name>")
    problems, fixes = [], []
    owners: dict[str, list[str]] = {}
    for d in sorted(f.deployments, key=lambda d: str(d["metadata"]["name"])):
        name = d["metadata"]["name"]
        labels = d["metadata"].get("labels") or {}
        missing = [label for label in REQUIRED_LABELS if not labels.get(label)]
        template = (((d.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        if missing:
            problems.append(f"{name} lacks {' and '.join(missing)}")
            values = {"version": "<version>", "deployment": name}
            fixes.append(f"kubectl label -n {f.namespace} deployment/{name} "
                         + " ".join(f"{m}={values.get(m, f.app)}" for m in missing))
        else:
            owners.setdefault(labels["version"], []).append(name)
        if not template.get("version") or template.get("app") != f.app:
            problems.append(f"{name}'s pod template lacks app={f.app} or version: the DestinationRule's "
                            "subsets select pods by version")
            fixes.append(f"add app and version to the pod template labels of {name}")
    for version, names in sorted(owners.items()):
        if len(names) > 1:
            problems.append(f"version={version} is on {', '.join(names)}")
            fixes.append("give each version exactly one Deployment")
    if problems:
        return c("fail", "; ".join(problems), "; ".join(fixes))
    return c("pass", "versions " + ", ".join(sorted(owners)))


def _selects_app(service: Obj, app: str) -> bool:
    selector = (service.get("spec") or {}).get("selector") or {}
    return selector.get("app") == app and "version" not in selector


def chosen_service(f: Facts) -> str | None:
    """The Service Lamia would route to, when it is clear which."""
    if not isinstance(f.services, list):
        return None
    names = _names(s for s in f.services if _selects_app(s, f.app))
    if f.service:
        return f.service if f.service in names else None
    return names[0] if len(names) == 1 else None


def check_service(f: Facts) -> Check:
    c = _check("service", f"exactly one Service selects app={f.app}")
    if f.services is None:
        return c("skip", "not checked")
    if isinstance(f.services, Failed):
        return c("fail", f.services.reason, "check the namespace and the kubeconfig")
    names = _names(s for s in f.services if _selects_app(s, f.app))
    if f.service:
        if f.service in names:
            return c("pass", f"Service {f.service} (--service)")
        return c("fail", f"Service {f.service} does not select app={f.app} (Services that do: "
                 f"{', '.join(names) or 'none'})",
                 f"select app={f.app} in Service {f.service}, or name another")
    if len(names) == 1:
        return c("pass", f"Service {names[0]}")
    if not names:
        return c("fail", f"no Service in namespace {f.namespace} selects app={f.app} (without version)",
                 f"create a Service whose selector is app={f.app}")
    return c("fail", f"Services {', '.join(names)} all select app={f.app}",
             "say which one fronts the application with --service NAME")


def _application(f: Facts) -> Application | None:
    if not isinstance(f.deployments, list):
        return None
    versions: dict[str, str] = {}
    for d in f.deployments:
        labels = d["metadata"].get("labels") or {}
        if all(labels.get(label) for label in REQUIRED_LABELS):
            versions.setdefault(labels["version"], d["metadata"]["name"])
    if not versions:
        return None
    try:
        return Application(namespace=f.namespace, name=f.app, service=chosen_service(f),
                           versions=tuple(Version(name=v, deployment=n) for v, n in sorted(versions.items())))
    except InvalidInput:
        return None


def check_adoption(f: Facts) -> Check:
    c = _check("adoption", "the existing VirtualService and DestinationRule can be adopted")
    for value in (f.virtual_service, f.destination_rule):
        if isinstance(value, Failed):
            return c("skip", value.reason)
    if f.deployments is None:
        return c("skip", "not checked")
    app = _application(f)
    if app is None:
        return c("skip", "no labelled versions to check them against")
    vs, dr = f.virtual_service, f.destination_rule
    assert not isinstance(vs, Failed) and not isinstance(dr, Failed)
    if vs is None and dr is None:
        return c("pass", "none yet: `lamia gateway apply` creates them")
    fix = (f"fix or delete the object named above, then `lamia gateway apply -n {f.namespace} --app {f.app}`")
    notes = []
    if dr is not None:
        try:
            render_destination_rule(app, dr)
        except InvalidInput as exc:
            return c("fail", str(exc), fix)
        notes.append(f"DestinationRule {app.host}: subsets for {', '.join(app.version_names)}")
    if vs is not None:
        try:
            gateway = gateway_from_virtual_service(app, vs)
            if gateway is None:
                first = Route(weights=Weights.all_on(app.version_names[0]))
                render_virtual_service(Gateway(application=app, routes=(first,)), vs)
                notes.append(f"VirtualService {app.host}: Lamia adds its routes (give --weights)")
            else:
                render_virtual_service(gateway, vs)  # what `lamia gateway apply` would write
                notes.append(f"VirtualService {app.host}: default route {gateway.default_route.weights}")
        except InvalidInput as exc:
            return c("fail", str(exc), fix)
    return c("pass", "; ".join(notes))


# --- Prometheus ------------------------------------------------------------------------------


def check_prometheus(f: Facts) -> Check:
    c = _check("prometheus", "Prometheus answers")
    if f.prometheus_url is None:
        return c("skip", "not checked: give --prometheus URL (or LAMIA_PROMETHEUS_URL)")
    if f.prometheus_error:
        return c("fail", f.prometheus_error, "check the URL and that Prometheus is running and reachable")
    return c("pass", f.prometheus_url)


def _versions_in(series: list[Obj]) -> set[str]:
    return {str((s.get("metric") or {}).get("destination_version")) for s in series
            if (s.get("metric") or {}).get("destination_version")}


def check_metrics(f: Facts) -> Check:
    c = _check("metrics", f"istio_requests_total has destination_version for every version of {f.app}")
    if f.prometheus_url is None or f.prometheus_error or f.series is None:
        return c("skip", "not checked")
    if isinstance(f.series, Failed):
        return c("fail", f.series.reason, "check that this Prometheus answers PromQL queries")
    app = _application(f)
    wanted = set(app.version_names) if app else set()
    found = _versions_in(f.series)
    if not f.series:
        return c("fail", f"no istio_requests_total series for app {f.app} in namespace {f.namespace}",
                 "send traffic to the application and make Prometheus scrape the sidecars' metrics "
                 "(port 15090, /stats/prometheus)")
    missing = sorted(wanted - found)
    if missing:
        return c("fail", f"no series with destination_version={', '.join(missing)} (seen: "
                 f"{', '.join(sorted(found)) or 'none'})",
                 f"send some traffic to {', '.join(missing)} and check that its pods carry the version label "
                 "(Istio reads destination_version from it)")
    return c("pass", "versions " + ", ".join(sorted(found)))


def scrape_interval(config_text: str, job: str | None) -> float | None:
    """The scrape interval in seconds of ``job`` (else the global one) in Prometheus' configuration."""
    try:
        config = yaml.safe_load(config_text) or {}
    except yaml.YAMLError:
        return None
    if not isinstance(config, dict):
        return None
    interval = (config.get("global") or {}).get("scrape_interval") or "1m"
    for sc in config.get("scrape_configs") or []:
        if isinstance(sc, dict) and job is not None and sc.get("job_name") == job \
                and sc.get("scrape_interval"):
            interval = sc["scrape_interval"]
    try:
        return duration_seconds(str(interval))
    except InvalidInput:
        return None


def check_scrape_interval(f: Facts) -> Check:
    c = _check("scrape-interval", f"the scrape interval fits the policy's window ({f.window})")
    if f.prometheus_url is None or f.prometheus_error or f.prometheus_config is None:
        return c("skip", "not checked")
    if isinstance(f.prometheus_config, Failed):
        return c("fail", f.prometheus_config.reason, "let Lamia read /api/v1/status/config")
    jobs = sorted({str((s.get("metric") or {}).get("job")) for s in f.series or []
                   if isinstance(s, dict) and (s.get("metric") or {}).get("job")}) if isinstance(
        f.series, list) else []
    interval = scrape_interval(f.prometheus_config, jobs[0] if jobs else None)
    if interval is None:
        return c("fail", "Prometheus' configuration names no readable scrape interval",
                 "set global.scrape_interval in Prometheus' configuration")
    window = duration_seconds(f.window)
    where = f"job {jobs[0]}" if jobs else "global"
    if window < WINDOW_SCRAPES * interval:
        return c("fail", f"window {f.window} is shorter than {WINDOW_SCRAPES} scrape intervals "
                 f"({where}: {interval:g} s)",
                 f"use --window {_duration(WINDOW_SCRAPES * interval)} or longer, or scrape more often")
    return c("pass", f"{where}: every {interval:g} s, window {f.window}")


def _duration(seconds: float) -> str:
    s = int(-(-seconds // 1))
    return f"{s // 60}m{s % 60}s".replace("m0s", "m") if s >= 60 else f"{s}s"


# --- access ----------------------------------------------------------------------------------


def _describe_grant(grant: tuple[str, str, str]) -> str:
    group, resource, verb = grant
    return f"{verb} {resource}" + (f".{group}" if group else "")


def check_access(f: Facts, identity: str = "") -> list[Check]:
    """Two checks for ``identity`` ("" for the one in use): what releases need, what some commands need."""
    who = f"identity {identity}" if identity else "the identity in use"
    key = "access-as" if identity else "access"
    needed = _check(key, f"{who} may do what releases need in {f.namespace}")
    optional = _check(f"{key}-optional", f"{who} may expose, init namespaces and run the doctor",
                      required=False)
    answers = f.access.get(identity)
    if answers is None:
        return [needed("skip", "not checked"), optional("skip", "not checked")]
    if isinstance(answers, Failed):
        return [needed("fail", answers.reason, "check that the API server accepts access reviews"
                       + (" and that you may impersonate it" if identity else "")),
                optional("skip", "not checked")]
    out = []
    for make, grants in ((needed, NEEDED_ACCESS), (optional, OPTIONAL_ACCESS)):
        denied = [g for g in grants if not answers.get(g, (False, ""))[0]]
        if not denied:
            out.append(make("pass", f"{len(grants)} verbs"))
        else:
            out.append(make("fail", "may not " + ", ".join(_describe_grant(g) for g in denied),
                            "grant them, e.g. with deployments/rbac.yaml (ClusterRole lamia)"
                            + (f" bound to {identity}" if identity else "")))
    return out


# --- Prefect ---------------------------------------------------------------------------------


def check_prefect_api(f: Facts) -> Check:
    c = _check("prefect-api", "Prefect's API is reachable")
    if f.prefect_api is None:
        return c("fail", "no Prefect API is configured",
                 "set PREFECT_API_URL (prefect config set PREFECT_API_URL=http://HOST:4200/api)")
    if f.prefect_error:
        return c("fail", f.prefect_error,
                 f"start the Prefect server at {f.prefect_api} or fix PREFECT_API_URL")
    return c("pass", f.prefect_api)


def check_prefect_deployment(f: Facts) -> Check:
    c = _check("prefect-deployment", f"the {f.deployment_name} deployment exists")
    if f.prefect_error or f.prefect_api is None or f.deployment is None:
        return c("skip", "not checked")
    if isinstance(f.deployment, Failed):
        return c("fail", f.deployment.reason,
                 "prefect deploy --all (from Lamia's prefect.yaml), or run lamia serve")
    pool = f.deployment.get("work_pool_name")
    return c("pass", f"work pool {pool}" if pool else "served by a process (lamia serve)")


def check_prefect_worker(f: Facts) -> Check:
    c = _check("prefect-worker", "a live worker runs the deployment")
    if not isinstance(f.deployment, dict):
        return c("skip", "not checked")
    pool = f.deployment.get("work_pool_name")
    if not pool:
        if str(f.deployment.get("status", "")).upper() == "READY":
            return c("pass", "its serving process polls for runs")
        return c("fail", "no process serves it (it has not been polled lately)", "run lamia serve")
    if f.work_pool_paused:
        return c("fail", f"work pool {pool} is paused", f"prefect work-pool resume {pool}")
    if isinstance(f.workers, Failed):
        return c("fail", f.workers.reason, f"prefect worker start --pool {pool}")
    online = [w["name"] for w in f.workers or [] if str(w.get("status", "")).upper() == "ONLINE"]
    if online:
        return c("pass", f"work pool {pool}: {', '.join(sorted(online))}")
    return c("fail", f"work pool {pool} has no online worker", f"prefect worker start --pool {pool}")


def run_checks(f: Facts, *, as_identity: str | None = None) -> Report:
    """Every check, in the order a user would work through them."""
    checks = [
        check_istio(f), check_injection(f), check_sidecars(f), check_labels(f), check_service(f),
        check_adoption(f), check_prometheus(f), check_metrics(f), check_scrape_interval(f),
        *check_access(f),
        *(check_access(f, as_identity) if as_identity else []),
        check_prefect_api(f), check_prefect_deployment(f), check_prefect_worker(f),
    ]
    return Report(namespace=f.namespace, app=f.app, checks=checks)


def report_json(report: Report) -> str:
    return json.dumps(report.as_json(), indent=2, ensure_ascii=False)
