"""The Kubernetes adapter: discover applications, label namespaces, read and write gateways.

Objects travel as plain dicts (the API's JSON), so that fields Lamia does not
know survive a read-modify-write. Every write goes through one optimistic-
concurrency loop, :meth:`KubeAdapter.update_object`: read, change a copy, write
it back carrying the resourceVersion read, and on a 409 start again from a
fresh read. Another writer's change is therefore never overwritten, and a
change that leaves the object as it was is not written at all.

The release lease is a rule of this adapter, not of a flow: every write of a
gateway (its VirtualService) checks the lease in the same optimistic-concurrency
loop, and a write by anyone but the holder is refused (ReleaseLocked naming the
run and the command that ends it). Only :meth:`KubeAdapter.abort_release`
overrides a lease. A release's own writes can also say which weights they
expect to find (what it last wrote): a difference means another writer changed
the route, and the write is refused with ForeignChange instead of undoing it.

Lamia writes with the field manager ``lamia``, so a real API server's
managedFields tell its writes from everyone else's.

Failures come out as Lamia's errors (see :mod:`lamia_core.errors`), each naming
the object and, where it helps, the server.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import BaseModel, ConfigDict, Field, Secret, model_validator
from pydantic.json_schema import SkipJsonSchema

from lamia_core._base import Obj
from lamia_core.errors import (
    About,
    ConflictError,
    Forbidden,
    ForeignChange,
    InvalidInput,
    LamiaError,
    MissingLabels,
    NotFound,
    ReleaseLocked,
    ServerError,
    Timeout,
    Unreachable,
)
from lamia_core.exposure import (
    GATEWAY,
    INGRESS,
    ExposeRequest,
    Exposure,
    bind_virtual_service,
    default_name,
    exposure_of,
    find_adoptable,
    find_adoptable_ingress,
    is_owned_by,
    render_gateway,
    render_ingress,
    serves,
    service_port,
    unbind_virtual_service,
)
from lamia_core.istio import (
    CONDITIONS_ANNOTATION,
    DESTINATION_RULE,
    ISTIO_GROUP,
    ISTIO_VERSION,
    MANAGED_LABEL,
    PLURALS,
    VERSION_LABEL,
    VIRTUAL_SERVICE,
    conditions_of,
    describe_unadopted,
    destination_rule_name,
    gateway_from_virtual_service,
    pick_destination_rule,
    pick_virtual_service,
    render_destination_rule,
    render_virtual_service,
    route_weights,
    unadoptable,
    virtual_service_name,
)
from lamia_core.lease import Lease, check_lease, drop_lease, lease_of, put_lease, take_lease
from lamia_core.models import (
    DEFAULT_ROUTE,
    Application,
    Gateway,
    Route,
    Version,
    Weights,
    check_dns_label,
    check_label_value,
)

Kind = Literal["VirtualService", "DestinationRule"]
Mutation = Callable[[Obj | None], Obj | None]

#: Labels every Deployment of an application needs besides ``app``.
REQUIRED_LABELS = (VERSION_LABEL, "deployment")
#: Labels ``init_namespace`` puts on a namespace.
NAMESPACE_LABELS = {"istio-injection": "enabled", "lamia.io/managed": "true"}
#: The field manager of every write, as managedFields record it.
FIELD_MANAGER = "lamia"
# Annotations that name who wrote an object, when managedFields do not (or to say more).
_WRITER_ANNOTATIONS = {
    "kubectl.kubernetes.io/last-applied-configuration": "kubectl apply",
    "argocd.argoproj.io/tracking-id": "Argo CD",
    "kustomize.toolkit.fluxcd.io/name": "Flux (kustomize-controller)",
    "helm.toolkit.fluxcd.io/name": "Flux (helm-controller)",
    "meta.helm.sh/release-name": "Helm",
}


class KubeConfig(BaseModel):
    """How to reach a cluster: a kubeconfig file (and context), a kubeconfig's content, or the pod's
    service account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kubeconfig: str | None = None
    """Path(s) of the kubeconfig, ``:``-separated like $KUBECONFIG; None for the default location."""
    context: str | None = None
    in_cluster: bool = False
    name: str | None = None
    """The cluster's name when it is a saved one (``lamia cluster add``); it tells apart releases of
    the same application on two clusters."""
    config_data: SkipJsonSchema[Secret[dict[str, Any]] | None] = Field(default=None, exclude=True)
    """A kubeconfig's content instead of a file (one context, certificates inlined), as a saved
    cluster holds it. Secret, and never dumped: flow parameters name the cluster, not its keys."""
    request_timeout: float = Field(default=10.0, gt=0)
    """Seconds for each request, connecting included."""
    max_conflict_retries: int = Field(default=5, ge=0)
    """Fresh reads and re-applied changes after a 409, at least, before giving up."""
    conflict_timeout: float = Field(default=10.0, ge=0)
    """Seconds to keep retrying conflicts (backing off with jitter) before giving up, once the
    retries above are spent: a burst of another writer's edits must not fail a release."""

    @model_validator(mode="after")
    def _one_source(self) -> KubeConfig:
        if self.config_data is not None and (self.kubeconfig or self.in_cluster):
            raise ValueError("a kubeconfig's content excludes a kubeconfig file and in_cluster")
        if self.in_cluster and (self.kubeconfig or self.context):
            raise ValueError("in_cluster uses the pod's service account: give no kubeconfig or context")
        return self

    @property
    def label(self) -> str:
        """The cluster as a person would name it, for messages."""
        if self.name:
            return f"cluster {self.name}"
        if self.in_cluster:
            return "the in-cluster service account"
        return f"kubeconfig {self.kubeconfig or '(default location)'}" + (
            f", context {self.context!r}" if self.context else "")

    def cache_key(self) -> str:
        """A key telling configurations apart, the secret content included (as a digest)."""
        digest = ""
        if self.config_data is not None:
            raw = json.dumps(self.config_data.get_secret_value(), sort_keys=True, default=str)
            digest = hashlib.sha256(raw.encode()).hexdigest()
        return f"{self.model_dump_json()}#{digest}"


def _in_pod_default(config: KubeConfig) -> KubeConfig:
    """A config naming no kubeconfig, in a pod with no kubeconfig, means the pod's service account.

    A flow run by the Kubernetes work pool gets the default KubeConfig from the
    UI form; making users tick in_cluster there would be a trap.
    """
    if config.in_cluster or config.kubeconfig or config.context or config.config_data is not None:
        return config
    default = os.path.expanduser(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0])
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.path.exists(default):
        return config.model_copy(update={"in_cluster": True})
    return config


@dataclass(frozen=True)
class _Resource:
    """The three calls the update loop needs for one kind; each returns the raw response."""

    kind: str
    namespaced: bool
    get: Callable[[str, str], Any]
    create: Callable[[str, Obj], Any]
    replace: Callable[[str, str, Obj], Any]
    list: Callable[[str], Any] | None = None


def _natural(name: str) -> list[Any]:
    """Sort key putting v2 before v10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


class KubeAdapter:
    """One cluster's API, through its own client (never the kubernetes package's global config)."""

    def __init__(self, config: KubeConfig | None = None) -> None:
        self.config = _in_pod_default(config or KubeConfig())
        paths = [p for p in (self.config.kubeconfig or "").split(os.pathsep) if p]
        if paths and not self.config.in_cluster and not any(os.path.exists(p) for p in paths):
            raise InvalidInput(f"kubeconfig file {self.config.kubeconfig} does not exist")
        configuration = k8s.Configuration()
        # Fail fast: one quick retry on connect errors, none on reads (a write may
        # have landed) or statuses, even with Retry-After (429/503 must come back
        # as ServerError): retrying temporary errors is the tasks' job.
        configuration.retries = urllib3.Retry(
            total=1, connect=1, read=0, redirect=0, status=0, other=0, backoff_factor=0,
            respect_retry_after_header=False,
        )
        try:
            if self.config.in_cluster:
                k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                    client_configuration=configuration)
                self.api_client = k8s.ApiClient(configuration)
            elif self.config.config_data is not None:
                self.api_client = k8s_config.new_client_from_config_dict(  # type: ignore[no-untyped-call]
                    config_dict=copy.deepcopy(self.config.config_data.get_secret_value()),
                    context=self.config.context, persist_config=False, client_configuration=configuration,
                )
            else:
                self.api_client = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=self.config.kubeconfig, context=self.config.context,
                    persist_config=False, client_configuration=configuration,
                )
        except (ConfigException, OSError, yaml.YAMLError) as exc:
            raise InvalidInput(
                f"cannot load the Kubernetes configuration from {self.config.label}: {exc}") from exc
        self.server: str = configuration.host
        self._core = k8s.CoreV1Api(self.api_client)
        self._apps = k8s.AppsV1Api(self.api_client)
        custom = k8s.CustomObjectsApi(self.api_client)
        opts = self._opts()
        g, v = ISTIO_GROUP, ISTIO_VERSION

        fm: dict[str, Any] = {"field_manager": FIELD_MANAGER}

        def istio(kind: str) -> _Resource:
            p = PLURALS[kind]
            return _Resource(
                kind, True,
                get=lambda ns, n: custom.get_namespaced_custom_object(g, v, ns, p, n, **opts),
                create=lambda ns, b: custom.create_namespaced_custom_object(g, v, ns, p, b, **fm, **opts),
                replace=lambda ns, n, b: custom.replace_namespaced_custom_object(
                    g, v, ns, p, n, b, **fm, **opts),
                list=lambda ns: custom.list_namespaced_custom_object(g, v, ns, p, **opts),
            )

        self._resources = {kind: istio(kind) for kind in (VIRTUAL_SERVICE, DESTINATION_RULE)}
        self._namespace = _Resource(
            "Namespace", False,
            get=lambda _, n: self._core.read_namespace(n, **opts),
            # The client's validate_call turns the dict into a V1Namespace.
            create=lambda _, b: self._core.create_namespace(cast(Any, b), **fm, **opts),
            replace=lambda _, n, b: self._core.replace_namespace(n, cast(Any, b), **fm, **opts),
        )

    def _opts(self) -> dict[str, Any]:
        # Raw responses: the JSON as sent, unknown fields included, no model round trip.
        return {"_preload_content": False, "_request_timeout": self.config.request_timeout}

    def close(self) -> None:
        self.api_client.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> KubeAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- errors ----------------------------------------------------------------------------------

    @contextmanager
    def _errors(self, action: str, what: str) -> Iterator[None]:
        """Turn client failures while doing ``action`` (e.g. "replace") on ``what`` into LamiaErrors."""
        try:
            yield
        except ApiException as exc:
            raise self._api_error(action, what, exc) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise self._transport_error(action, what, exc) from exc

    def _api_error(self, action: str, what: str, exc: ApiException) -> LamiaError:
        status = int(exc.status or 0)
        detail = str(exc.reason or "")
        try:
            body = json.loads(exc.body or "")
            if isinstance(body, dict) and body.get("message"):
                detail = str(body["message"])
        except ValueError:
            if exc.body:
                detail = str(exc.body)[:300]
        head = f"cannot {action} {what}"
        about: About = {"status": status, "server": self.server, "subject": what}
        if status == 404:
            return NotFound(f"{head}: {detail}", **about)
        if status in (400, 422):
            return InvalidInput(f"{head}: the cluster rejected it: {detail}", **about)
        if status in (401, 403):
            return Forbidden(f"{head}: {self.server} refused with HTTP {status}: {detail}", **about)
        if status == 409:
            return ConflictError(f"{head}: {detail}", **about)
        if status == 429 or status >= 500:
            return ServerError(f"{head}: {self.server} answered HTTP {status}: {detail}", **about)
        return InvalidInput(f"{head}: {self.server} answered HTTP {status}: {detail}", **about)

    def _transport_error(self, action: str, what: str, exc: urllib3.exceptions.HTTPError) -> LamiaError:
        reason: BaseException = exc
        if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
            reason = exc.reason
        # NewConnectionError subclasses ConnectTimeoutError: test it first.
        about: About = {"server": self.server, "subject": what}
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            short = str(reason).split(": ", 1)[-1]
            return Unreachable(f"cannot reach the Kubernetes API server at {self.server} "
                               f"to {action} {what}: {short}", **about)
        if isinstance(reason, urllib3.exceptions.TimeoutError):
            return Timeout(f"the Kubernetes API server at {self.server} did not answer within "
                           f"{self.config.request_timeout:g}s to {action} {what}", **about)
        return Unreachable(f"cannot talk to the Kubernetes API server at {self.server} "
                           f"to {action} {what}: {reason}", **about)

    def _json(self, action: str, what: str, call: Callable[[], Any]) -> Obj:
        with self._errors(action, what):
            response = call()
            data: Obj = json.loads(response.data)
            return data

    # --- generic objects -------------------------------------------------------------------------

    @staticmethod
    def _what(res: _Resource, namespace: str, name: str) -> str:
        return f"{res.kind} {namespace}/{name}" if res.namespaced else f"{res.kind} {name}"

    def _get(self, res: _Resource, namespace: str, name: str) -> Obj | None:
        try:
            return self._json("read", self._what(res, namespace, name), lambda: res.get(namespace, name))
        except NotFound:
            return None

    def get_object(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        """The object as the server has it, or None when it does not exist."""
        return self._get(self._resource(kind), namespace, name)

    def _resource(self, kind: str) -> _Resource:
        res = self._resources.get(kind)
        if res is None:
            raise InvalidInput(f"Lamia does not manage objects of kind {kind!r}")
        return res

    def list_objects(self, kind: Kind, namespace: str) -> list[Obj]:
        """Every object of ``kind`` in ``namespace``."""
        res = self._resource(kind)
        assert res.list is not None
        listed = self._json("list", f"{kind}s in namespace {namespace}", lambda: res.list(namespace))  # type: ignore[misc]
        return list(listed.get("items") or [])

    def update_object(self, kind: Kind, namespace: str, name: str, mutate: Mutation, *,
                      holder: str | None = None) -> Obj | None:
        """Create or change one object by ``mutate``, safely against concurrent writers.

        ``mutate`` gets a deep copy of the object as read (None if missing) and
        returns the object wanted, or None for no change. It is called again on a
        fresh read after each conflict, at most ``max_conflict_retries`` times
        more, then ConflictError. Returns the object as written (or as read, when
        nothing was written). A VirtualService carrying a release lease is changed
        only by the lease's ``holder``.
        """
        res = self._resource(kind)
        if kind == VIRTUAL_SERVICE:
            mutate = self._guarded(namespace, mutate, holder)
        return self._update(res, namespace, name, mutate)

    @staticmethod
    def _guarded(namespace: str, mutate: Mutation, holder: str | None, app: str | None = None) -> Mutation:
        def guarded(vs: Obj | None) -> Obj | None:
            if vs is not None:
                who = app or str(((vs.get("metadata") or {}).get("labels") or {}).get("lamia.io/app")
                                 or vs["metadata"].get("name"))
                check_lease(vs, holder, app=who, namespace=namespace)
            return mutate(vs)

        return guarded

    def _update(self, res: _Resource, namespace: str, name: str, mutate: Mutation) -> Obj | None:
        what = self._what(res, namespace, name)
        attempts = 0
        started = time.monotonic()
        while True:
            current = self._get(res, namespace, name)
            desired = mutate(copy.deepcopy(current))
            if desired is None or desired == current:
                return current
            attempts += 1
            meta = desired.setdefault("metadata", {})
            meta["name"] = name
            if res.namespaced:
                meta["namespace"] = namespace
            try:
                if current is None:
                    meta.pop("resourceVersion", None)
                    return self._write(res, namespace, name, desired, create=True)
                meta["resourceVersion"] = current["metadata"]["resourceVersion"]
                return self._write(res, namespace, name, desired, create=False)
            except (ConflictError, NotFound) as exc:
                # NotFound on create: the namespace is missing, no use retrying. On
                # replace: deleted since read, like a conflict, start from a fresh read.
                if isinstance(exc, NotFound) and current is None:
                    raise
                elapsed = time.monotonic() - started
                if attempts > self.config.max_conflict_retries and elapsed >= self.config.conflict_timeout:
                    raise ConflictError(
                        f"{what} was changed by another writer each time Lamia tried to write it; "
                        f"gave up after {attempts} attempts in {elapsed:.1f} s (last: {exc})"
                    ) from exc
                # Back off with jitter, so that two writers in lockstep fall out of step.
                time.sleep(min(1.0, 0.01 * 2 ** min(attempts, 7)) * random.uniform(0.5, 1.5))

    # --- applications and namespaces -------------------------------------------------------------

    def _write(self, res: _Resource, namespace: str, name: str, body: Obj, *, create: bool) -> Obj:
        what = self._what(res, namespace, name)
        if create:
            return self._json("create", what, lambda: res.create(namespace, body))
        return self._json("replace", what, lambda: res.replace(namespace, name, body))

    def discover_application(self, namespace: str, app: str, *, service: str | None = None) -> Application:
        """The application: its versions (Deployments labelled app, version, deployment), the one
        Service selecting all of them (``service`` names it when several do), and the gateway
        objects that already route the Service's host."""
        check_dns_label("namespace", namespace)
        check_label_value("application", app)
        if service is not None:
            check_dns_label("service", service)
        selector = f"app={app}"
        listed = self._json(
            "list", f"Deployments labelled {selector} in namespace {namespace}",
            lambda: self._apps.list_namespaced_deployment(namespace, label_selector=selector, **self._opts()),
        )
        items: list[Obj] = listed.get("items") or []
        if not items:
            if self._get(self._namespace, "", namespace) is None:
                raise NotFound(f"namespace {namespace!r} does not exist on {self.server}")
            raise NotFound(f"no Deployments labelled app={app} in namespace {namespace!r}")
        lacking: list[str] = []
        owners: dict[str, list[str]] = {}
        pod_labels: list[dict[str, str]] = []
        for d in sorted(items, key=lambda d: str(d["metadata"]["name"])):
            name = d["metadata"]["name"]
            labels = d["metadata"].get("labels") or {}
            missing = [label for label in REQUIRED_LABELS if not labels.get(label)]
            if missing:
                lacking.append(f"Deployment {namespace}/{name} lacks label {' and '.join(missing)}")
            else:
                owners.setdefault(labels[VERSION_LABEL], []).append(name)
            template = (((d.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels")
            pod_labels.append(dict(template or labels))
        if lacking:
            needed = " and ".join(REQUIRED_LABELS)
            raise MissingLabels(
                f"application {app!r}: " + "; ".join(lacking)
                + f" (each Deployment of an application needs the labels app, {needed})"
            )
        dup = {v: ds for v, ds in owners.items() if len(ds) > 1}
        if dup:
            desc = "; ".join(f"version={v}: {', '.join(ds)}" for v, ds in sorted(dup.items()))
            raise InvalidInput(
                f"application {app!r} in namespace {namespace!r} has several Deployments per version "
                f"({desc}); each version must be exactly one Deployment"
            )
        for v in owners:
            check_label_value("version", v)
        versions = tuple(Version(name=v, deployment=owners[v][0]) for v in sorted(owners, key=_natural))
        found = Application(namespace=namespace, name=app, versions=versions,
                            service=self._find_service(namespace, app, pod_labels, service))
        vs = pick_virtual_service(found, self.list_objects(VIRTUAL_SERVICE, namespace))
        dr = pick_destination_rule(found, self.list_objects(DESTINATION_RULE, namespace))
        return found.model_copy(update={
            "virtual_service": vs["metadata"]["name"] if vs else None,
            "destination_rule": dr["metadata"]["name"] if dr else None,
        })

    def _find_service(self, namespace: str, app: str, pod_labels: list[dict[str, str]],
                      wanted: str | None) -> str:
        """The Service selecting the pods of every version: ``wanted``, the only one, or the one named
        like the app; InvalidInput listing them when several do and none is named like the app."""
        listed = self._json("list", f"Services in namespace {namespace}",
                            lambda: self._core.list_namespaced_service(namespace, **self._opts()))
        services = {s["metadata"]["name"]: ((s.get("spec") or {}).get("selector") or {})
                    for s in listed.get("items") or []}

        def selects_all(selector: dict[str, str]) -> bool:
            return bool(selector) and all(
                all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels)

        names = sorted(n for n, sel in services.items() if selects_all(sel))
        if wanted is not None:
            if wanted not in services:
                raise NotFound(f"Service {namespace}/{wanted} does not exist (Services selecting application "
                               f"{app!r}: {', '.join(names) or 'none'})")
            if wanted not in names:
                raise InvalidInput(
                    f"Service {namespace}/{wanted} selects {services[wanted] or 'no pods'}, not the pods of "
                    f"every version of application {app!r} (Services that do: {', '.join(names) or 'none'})"
                )
            return wanted
        if app in names or len(names) == 1:
            return app if app in names else names[0]
        if not names:
            raise NotFound(
                f"no Service in namespace {namespace!r} selects the pods of every version of application "
                f"{app!r}: Istio routes by a Service's host, so create one (e.g. selector app={app})"
            )
        raise InvalidInput(
            f"several Services select the pods of application {app!r} in namespace {namespace!r} "
            f"({', '.join(names)}) and none is named {app!r}: say which one is the application's with "
            "--service NAME"
        )

    #: Whether the namespace the last init_namespace labelled existed before it.
    namespace_existed: bool = True

    def init_namespace(self, namespace: str) -> Obj:
        """Label a namespace for Istio sidecar injection and Lamia; create it when missing
        (:attr:`namespace_existed` then says so)."""
        check_dns_label("namespace", namespace)

        def mutate(ns: Obj | None) -> Obj:
            self.namespace_existed = ns is not None
            ns = ns or {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            meta = ns.setdefault("metadata", {})
            meta["labels"] = {**(meta.get("labels") or {}), **NAMESPACE_LABELS}
            return ns

        result = self._update(self._namespace, "", namespace, mutate)
        assert result is not None  # mutate never declines
        return result

    # --- gateways --------------------------------------------------------------------------------

    def read_virtual_service(self, app: Application) -> Obj | None:
        """The app's VirtualService as it stands, or None."""
        return self.get_object(VIRTUAL_SERVICE, app.namespace, virtual_service_name(app))

    def read_gateway(self, app: Application) -> Gateway | None:
        """The app's gateway from its VirtualService; None when there is none to read (no
        VirtualService, or one Lamia cannot adopt: :meth:`no_gateway` says which)."""
        vs = self.read_virtual_service(app)
        if vs is None or unadoptable(app, vs):
            return None
        return gateway_from_virtual_service(app, vs)

    def no_gateway(self, app: Application, vs: Obj | None = None) -> LamiaError:
        """The error for an app whose gateway cannot be read, saying what is there instead."""
        vs = vs if vs is not None else self.read_virtual_service(app)
        example = ",".join(f"{v}={100 if i == 0 else 0}" for i, v in enumerate(app.version_names))
        hint = (f"create it with `lamia gateway apply --namespace {app.namespace} --app {app.name} "
                f"--weights {example or 'VERSION=100'}`")
        if vs is None:
            return NotFound(
                f"application {app.name!r} in namespace {app.namespace!r} has no gateway yet; {hint}")
        problem = unadoptable(app, vs)
        if problem:
            return InvalidInput(f"{describe_unadopted(app, vs)}")
        if app.versions:
            # Would Lamia's default route fit in there at all? If not, that is the thing to say.
            probe = Gateway(application=app, routes=(Route(weights=Weights.all_on(app.version_names[0])),))
            try:
                render_virtual_service(probe, vs)
            except InvalidInput as exc:
                return exc
        return NotFound(f"application {app.name!r} in namespace {app.namespace!r} has no gateway Lamia can "
                        f"use: {describe_unadopted(app, vs)}; {hint}")

    def apply_gateway(self, gateway: Gateway, *, holder: str | None = None) -> tuple[Obj, Obj]:
        """Write the DestinationRule, then the VirtualService (so subsets exist before routes use them)."""
        app = gateway.application
        if not app.versions:
            raise InvalidInput(
                f"application {app.name!r} has no versions: discover it before applying its gateway"
            )
        dr, vs, _ = self._write_gateway(app, lambda _: gateway, holder=holder)
        return dr, vs

    def adopt_gateway(self, app: Application, *, holder: str, add_route: Route | None = None) -> Gateway:
        """Write the gateway as it stands (an adopted catch-all becomes Lamia's route), with
        ``add_route`` added, all in one read-modify-write: what a release does before its first step.
        Returns the gateway written."""

        def gateway_of(vs: Obj | None) -> Gateway:
            gw = None if vs is None or unadoptable(app, vs) else gateway_from_virtual_service(app, vs)
            if gw is None:
                raise self.no_gateway(app, vs)
            return gw if add_route is None else gw.with_route(add_route)

        return self._write_gateway(app, gateway_of, holder=holder)[2]

    def set_weights(self, app: Application, weights: Weights, route: str = DEFAULT_ROUTE, *,
                    holder: str | None = None, expect: Weights | None = None,
                    lease_update: dict[str, Any] | None = None) -> Gateway:
        """Change one route's weights, re-applied onto whatever the VirtualService holds at write time.

        ``expect`` (a release's last write): ForeignChange instead of writing when the route's
        weights are not those, or the route or the holder's lease is gone. ``lease_update``:
        fields of the holder's lease (the engine's state after this step) written in the same
        write as the weights, with a fresh heartbeat.
        """
        for v in weights.versions:
            app.version(v)

        def gateway_of(vs: Obj | None) -> Gateway:
            if expect is not None:
                self.check_route(app, vs, route, expect, holder=holder)
            gw = None if vs is None or unadoptable(app, vs) else gateway_from_virtual_service(app, vs)
            if gw is None:
                raise self.no_gateway(app, vs)
            return gw.with_weights(weights, route)

        finish = None
        if lease_update is not None:
            if holder is None:
                raise InvalidInput("a lease update needs the lease's holder")
            finish = self._lease_renewal(app, holder, lease_update)
        return self._write_gateway(app, gateway_of, holder=holder, finish=finish)[2]

    def check_route(self, app: Application, vs: Obj | None, route: str, expect: Weights, *,
                    holder: str | None) -> None:
        """ForeignChange when ``route`` on ``vs`` is not as a release (``holder``) last wrote it."""
        what = f"VirtualService {app.namespace}/{virtual_service_name(app)}"
        if vs is None:
            raise ForeignChange(f"{what} was deleted by another writer", route=route,
                                expected=expect.as_dict())
        writer = last_writer(vs)
        by = f" by {writer}" if writer else ""
        lease = lease_of(vs)
        if holder is not None and (lease is None or lease.holder != holder):
            raise ForeignChange(f"the release's lease on {what} was removed{by}", route=route,
                                expected=expect.as_dict(), writer=writer)
        found = route_weights(app, vs, route)
        if found is None:
            raise ForeignChange(f"route {route!r} was removed from {what}{by}", route=route,
                                expected=expect.as_dict(), writer=writer)
        if found.as_dict() != expect.as_dict():
            raise ForeignChange(
                f"the weights of route {route!r} on {what} were changed{by}: {found} "
                f"where Lamia set {expect}",
                route=route, expected=expect.as_dict(), found=found.as_dict(), writer=writer,
            )

    def _write_gateway(self, app: Application, gateway_of: Callable[[Obj | None], Gateway], *,
                       holder: str | None, finish: Callable[[Obj], Obj] | None = None
                       ) -> tuple[Obj, Obj, Gateway]:
        """Write the DestinationRule, then the VirtualService with ``gateway_of(<VirtualService as read>)``.

        The VirtualService is rendered once onto its current state before
        anything is written, so that a refusal (a lease held by another, no
        gateway, an unknown route, a route in the way) leaves the cluster as it
        was; the lease is checked again in the VirtualService's own write loop.
        """
        ns, vs_name = app.namespace, virtual_service_name(app)
        current = self.get_object(VIRTUAL_SERVICE, ns, vs_name)
        if current is not None:
            check_lease(current, holder, app=app.name, namespace=ns)
        render_virtual_service(gateway_of(current), current)
        dr = self._update(self._resources[DESTINATION_RULE], ns, destination_rule_name(app),
                          lambda cur: render_destination_rule(app, cur))
        written: list[Gateway] = []

        def mutate(vs: Obj | None) -> Obj:
            written.append(gateway_of(vs))
            rendered = render_virtual_service(written[-1], vs)
            return finish(rendered) if finish is not None else rendered

        vs = self._update(self._resources[VIRTUAL_SERVICE], ns, vs_name,
                          self._guarded(ns, mutate, holder, app.name))
        assert dr is not None and vs is not None  # the render functions never decline
        return dr, vs, written[-1]

    # --- the release lease -----------------------------------------------------------------------

    def read_lease(self, app: Application) -> Lease | None:
        return lease_of(self.read_virtual_service(app))

    def take_lease(self, app: Application, lease: Lease, *, stale: frozenset[str] = frozenset()) -> Obj:
        """Record ``lease`` on the app's VirtualService; ReleaseLocked if another live run holds it."""

        def mutate(vs: Obj | None) -> Obj:
            if vs is None:
                raise self.no_gateway(app)
            return take_lease(vs, lease, app=app.name, stale=stale)

        out = self._update(self._resources[VIRTUAL_SERVICE], app.namespace, virtual_service_name(app), mutate)
        assert out is not None
        return out

    def _lease_renewal(self, app: Application, holder: str, updates: dict[str, Any]) -> Callable[[Obj], Obj]:
        what = f"VirtualService {app.namespace}/{virtual_service_name(app)}"

        def renew(vs: Obj) -> Obj:
            lease = lease_of(vs)
            if lease is None or lease.holder != holder:
                writer = last_writer(vs)
                raise ForeignChange(
                    f"the release's lease on {what} was "
                    + ("removed" if lease is None else f"taken over by {lease.describe()}")
                    + (f" by {writer}" if writer else ""),
                    route=lease.route if lease and lease.route else DEFAULT_ROUTE, writer=writer,
                )
            return put_lease(vs, lease.renewed(time.time(), **updates))

        return renew

    def renew_lease(self, app: Application, holder: str, **updates: Any) -> Lease:
        """A heartbeat of ``holder``'s lease (with ``updates``); ForeignChange when it holds none."""
        renew = self._lease_renewal(app, holder, updates)
        out = self._update(self._resources[VIRTUAL_SERVICE], app.namespace, virtual_service_name(app),
                           lambda vs: None if vs is None else renew(vs))
        lease = lease_of(out)
        if out is None or lease is None:
            raise ForeignChange(f"VirtualService {app.namespace}/{virtual_service_name(app)} was deleted",
                                route=DEFAULT_ROUTE)
        return lease

    def managed_gateways(self, namespace: str | None = None) -> list[tuple[Obj, Lease | None]]:
        """Every VirtualService Lamia manages (in ``namespace``, or in the whole cluster), with its
        lease if it carries one: what a supervisor looks at."""
        custom = k8s.CustomObjectsApi(self.api_client)
        g, v, p = ISTIO_GROUP, ISTIO_VERSION, PLURALS[VIRTUAL_SERVICE]
        selector = f"{MANAGED_LABEL}=true"
        where = f"namespace {namespace}" if namespace else "all namespaces"
        listed = self._json(
            "list", f"VirtualServices labelled {selector} in {where}",
            lambda: custom.list_namespaced_custom_object(g, v, namespace, p, label_selector=selector,
                                                         **self._opts())
            if namespace else custom.list_cluster_custom_object(g, v, p, label_selector=selector,
                                                                **self._opts()),
        )
        return [(vs, lease_of(vs)) for vs in listed.get("items") or []]

    def drop_lease(self, app: Application, holder: str, *, forget_routes: tuple[str, ...] = ()) -> None:
        """Give back ``holder``'s lease (nothing when it holds none), and drop the condition texts of
        ``forget_routes`` that are no longer on the VirtualService, so nothing of Lamia's is left."""

        def mutate(vs: Obj | None) -> Obj | None:
            if vs is None:
                return None
            out = drop_lease(vs, holder) or vs
            return _forget_conditions(out, forget_routes)

        self._update(self._resources[VIRTUAL_SERVICE], app.namespace, virtual_service_name(app), mutate)

    def hand_over_lease(self, app: Application, holder: str, successor: Lease) -> None:
        """Give ``holder``'s lease to ``successor`` (a run resuming the release), as long as ``holder``
        still holds it; ReleaseLocked otherwise."""

        def mutate(vs: Obj | None) -> Obj:
            current = lease_of(vs)
            if vs is None or current is None or current.holder != holder:
                raise ReleaseLocked(f"the lease of application {app.name!r} is no longer {holder}'s: "
                                    f"{current.describe() if current else 'none'}")
            return put_lease(vs, successor)

        self._update(self._resources[VIRTUAL_SERVICE], app.namespace, virtual_service_name(app), mutate)

    def abort_release(self, app: Application, lease: Lease) -> Weights | None:
        """Put ``lease``'s baseline back on its route and drop the lease, in one write, whoever holds
        it now: the only write that overrides a lease. None when the lease names no baseline."""
        if not lease.baseline:
            return None
        weights = Weights.all_on(lease.baseline, app.version_names)
        route = lease.route or DEFAULT_ROUTE

        def mutate(vs: Obj | None) -> Obj:
            gw = None if vs is None or unadoptable(app, vs) else gateway_from_virtual_service(app, vs)
            if gw is None:
                raise self.no_gateway(app, vs)
            assert vs is not None
            rendered = render_virtual_service(gw.with_weights(weights, route), vs)
            return drop_lease(rendered, lease.holder) or rendered

        self._update(self._resources[VIRTUAL_SERVICE], app.namespace, virtual_service_name(app), mutate)
        return weights


    # --- exposure and the doctor's reads (issue 14) ----------------------------------------------
    # New methods only, after every existing one. Every write to the application's
    # VirtualService from here goes through _update_app_virtual_service.

    def _exposure_resource(self, kind: str) -> _Resource:
        """The Gateway and Ingress resources, built on first use (the constructor is left as it was)."""
        cache: dict[str, _Resource] | None = getattr(self, "_exposure_cache", None)
        if cache is None:
            custom = k8s.CustomObjectsApi(self.api_client)
            self._networking = k8s.NetworkingV1Api(self.api_client)
            net, opts = self._networking, self._opts()
            g, v, p = ISTIO_GROUP, ISTIO_VERSION, "gateways"
            cache = {
                GATEWAY: _Resource(
                    GATEWAY, True,
                    get=lambda ns, n: custom.get_namespaced_custom_object(g, v, ns, p, n, **opts),
                    create=lambda ns, b: custom.create_namespaced_custom_object(g, v, ns, p, b, **opts),
                    replace=lambda ns, n, b: custom.replace_namespaced_custom_object(
                        g, v, ns, p, n, b, **opts),
                ),
                INGRESS: _Resource(
                    INGRESS, True,
                    get=lambda ns, n: net.read_namespaced_ingress(n, ns, **opts),
                    create=lambda ns, b: net.create_namespaced_ingress(ns, cast(Any, b), **opts),
                    replace=lambda ns, n, b: net.replace_namespaced_ingress(n, ns, cast(Any, b), **opts),
                ),
            }
            self._exposure_cache = cache
            self._custom = custom
        return cache[kind]

    def get_gateway(self, namespace: str, name: str) -> Obj | None:
        return self._get(self._exposure_resource(GATEWAY), namespace, name)

    def list_gateways(self, namespace: str | None = None) -> list[Obj]:
        """Istio Gateways of a namespace, or of every namespace (None)."""
        self._exposure_resource(GATEWAY)
        g, v, opts = ISTIO_GROUP, ISTIO_VERSION, self._opts()
        if namespace is None:
            listed = self._json("list", "Gateways in all namespaces",
                                lambda: self._custom.list_cluster_custom_object(g, v, "gateways", **opts))
        else:
            listed = self._json("list", f"Gateways in namespace {namespace}",
                                lambda: self._custom.list_namespaced_custom_object(
                                    g, v, namespace, "gateways", **opts))
        return list(listed.get("items") or [])

    def get_ingress(self, namespace: str, name: str) -> Obj | None:
        return self._get(self._exposure_resource(INGRESS), namespace, name)

    def list_ingresses(self, namespace: str) -> list[Obj]:
        self._exposure_resource(INGRESS)
        listed = self._json("list", f"Ingresses in namespace {namespace}",
                            lambda: self._networking.list_namespaced_ingress(namespace, **self._opts()))
        return list(listed.get("items") or [])

    def get_namespace(self, name: str) -> Obj | None:
        return self._get(self._namespace, "", name)

    def get_service(self, namespace: str, name: str) -> Obj | None:
        try:
            return self._json("read", f"Service {namespace}/{name}",
                              lambda: self._core.read_namespaced_service(name, namespace, **self._opts()))
        except NotFound:
            return None

    def list_services(self, namespace: str) -> list[Obj]:
        listed = self._json("list", f"Services in namespace {namespace}",
                            lambda: self._core.list_namespaced_service(namespace, **self._opts()))
        return list(listed.get("items") or [])

    def list_deployments(self, namespace: str, selector: str) -> list[Obj]:
        listed = self._json(
            "list", f"Deployments labelled {selector} in namespace {namespace}",
            lambda: self._apps.list_namespaced_deployment(namespace, label_selector=selector, **self._opts()),
        )
        return list(listed.get("items") or [])

    def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        listed = self._json(
            "list", f"pods labelled {selector} in namespace {namespace}",
            lambda: self._core.list_namespaced_pod(namespace, label_selector=selector, **self._opts()),
        )
        return list(listed.get("items") or [])

    def server_version(self) -> str:
        """The API server's version (``/version``'s gitVersion): the cheapest call that proves the
        server answers; a LamiaError says why not."""
        info = self._json("read", "the server version",
                          lambda: k8s.VersionApi(self.api_client).get_code(**self._opts()))
        return str(info.get("gitVersion") or "?")

    def served_versions(self, group: str) -> list[str]:
        """The versions the API server serves of ``group``, from discovery (empty when none)."""
        listed = self._json("discover", "API groups",
                            lambda: k8s.ApisApi(self.api_client).get_api_versions(**self._opts()))
        for g in listed.get("groups") or []:
            if g.get("name") == group:
                return [str(v.get("version")) for v in g.get("versions") or []]
        return []

    def can_i(self, verb: str, group: str, resource: str, namespace: str | None = None,
              as_user: str | None = None) -> tuple[bool, str]:
        """Whether the identity in use (or ``as_user``, impersonated as ``kubectl --as`` does) may do
        ``verb`` on ``resource``: a SelfSubjectAccessReview. Returns (allowed, the server's reason)."""
        attrs: Obj = {"verb": verb, "group": group, "resource": resource}
        if namespace:
            attrs["namespace"] = namespace
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attrs}}
        headers = {"Impersonate-User": as_user} if as_user else None
        answer = self._json(
            "review", f"access to {verb} {resource}" + (f" as {as_user}" if as_user else ""),
            lambda: k8s.AuthorizationV1Api(self.api_client).create_self_subject_access_review(
                cast(Any, body), _headers=headers, **self._opts()),
        )
        status = answer.get("status") or {}
        return bool(status.get("allowed")), str(status.get("reason") or "")

    def _check_holder(self, app: Application, vs: Obj | None, holder: str | None) -> None:
        check_lease(vs, holder, app=app.name, namespace=app.namespace)

    def _update_app_virtual_service(self, app: Application, mutate: Mutation,
                                    holder: str | None) -> Obj | None:
        """The one way the methods below write the application's VirtualService: refused
        (ReleaseLocked) when a release lease is held by anyone but ``holder``."""
        return self._update(self._resources[VIRTUAL_SERVICE], app.namespace, virtual_service_name(app),
                            self._guarded(app.namespace, mutate, holder, app.name))

    def expose(self, app: Application, request: ExposeRequest, holder: str | None = None) -> Exposure:
        """Make the application reachable from outside the mesh (see :mod:`lamia_core.exposure`).

        Everything is decided and checked before the first write; then the Gateway
        or Ingress is written (when Lamia creates it), then the VirtualService.
        Asking again for the same host is a no-op (or re-renders Lamia's own Gateway).
        """
        vs = self.get_object(VIRTUAL_SERVICE, app.namespace, virtual_service_name(app))
        if vs is None:
            raise self.no_gateway(app)
        self._check_holder(app, vs, holder)
        current = exposure_of(vs)
        if current is not None and not (
            current.host == request.host and current.kind == request.kind
            and request.name in (None, current.name)
        ):
            raise InvalidInput(
                f"application {app.name!r} in namespace {app.namespace!r} is already exposed as "
                f"{current.describe()}; run `lamia unexpose -n {app.namespace} --app {app.name}` first"
            )
        plan = (self._plan_gateway if request.kind == GATEWAY else self._plan_ingress)(app, request, current)
        bind_virtual_service(vs, plan)  # refuses here, before anything is written
        if plan.created:
            res = self._exposure_resource(plan.kind)
            port = self._ingress_port(app) if plan.kind == INGRESS else 80

            def render(obj: Obj | None) -> Obj:
                if obj is not None and not is_owned_by(obj, app):
                    raise InvalidInput(f"{plan.kind} {plan.ref} was created by someone else meanwhile; "
                                       "Lamia leaves it alone: expose again")
                if plan.kind == GATEWAY:
                    return render_gateway(app, request, plan.name, obj)
                return render_ingress(app, request, plan.name, port, obj)

            self._update(res, plan.namespace, plan.name, render)

        def bind(obj: Obj | None) -> Obj:
            if obj is None:
                raise self.no_gateway(app)
            return bind_virtual_service(obj, plan)

        written = self._update_app_virtual_service(app, bind, holder)
        recorded = exposure_of(written)
        assert recorded is not None  # bind always records
        return recorded

    def _ingress_port(self, app: Application) -> int | str:
        service = self.get_service(app.namespace, app.service_name)
        if service is None:
            raise NotFound(f"Service {app.namespace}/{app.service_name} of application {app.name!r} "
                           "does not exist: an Ingress needs it as its backend")
        return service_port(service)

    def _plan_gateway(self, app: Application, request: ExposeRequest, current: Exposure | None) -> Exposure:
        def plan(namespace: str, name: str, created: bool) -> Exposure:
            if not created and request.tls_secret:
                raise InvalidInput(
                    f"Gateway {namespace}/{name} already serves {request.host} and is not Lamia's: its TLS "
                    "settings are its own; leave out --tls-secret (or name another Gateway with --gateway)"
                )
            return Exposure(host=request.host, kind=GATEWAY, namespace=namespace, name=name, created=created,
                            tls_secret=request.tls_secret if created else None)

        if current is not None:
            gw = self.get_gateway(current.namespace, current.name)
            if current.created:
                if gw is not None and not is_owned_by(gw, app):
                    raise InvalidInput(
                        f"Gateway {current.ref} is no longer Lamia's: unexpose, then expose again")
                return plan(current.namespace, current.name, True)
            if gw is None or serves(gw, request.host, app.namespace) is None:
                raise InvalidInput(
                    f"the adopted Gateway {current.ref} no longer serves {request.host}; run "
                    f"`lamia unexpose -n {app.namespace} --app {app.name}`, then expose again")
            return plan(current.namespace, current.name, False)
        if request.name is not None:
            gw = self.get_gateway(app.namespace, request.name)
            if gw is None or is_owned_by(gw, app):
                return plan(app.namespace, request.name, True)
            if serves(gw, request.host, app.namespace) is not None and \
                    dict((gw.get("spec") or {}).get("selector") or {}) == request.selector:
                return plan(app.namespace, request.name, False)
            raise InvalidInput(
                f"Gateway {app.namespace}/{request.name} exists and does not serve {request.host} on pods "
                f"labelled {_labels(request.selector)}; Lamia changes no Gateway it did not create: add the "
                "host to it, or name another with --gateway"
            )
        try:
            candidates = self.list_gateways(None)
        except Forbidden:  # no cluster-wide list: the application's namespace is what it may see
            candidates = self.list_gateways(app.namespace)
        found = find_adoptable(candidates, app, request)
        if found is not None:
            meta = found["metadata"]
            return plan(meta["namespace"], meta["name"], is_owned_by(found, app))
        name = default_name(app, GATEWAY)
        gw = self.get_gateway(app.namespace, name)
        if gw is not None and not is_owned_by(gw, app):
            raise InvalidInput(f"Gateway {app.namespace}/{name} exists, is not Lamia's and does not serve "
                               f"{request.host}; name another Gateway with --gateway")
        return plan(app.namespace, name, True)

    def _plan_ingress(self, app: Application, request: ExposeRequest, current: Exposure | None) -> Exposure:
        def plan(name: str, created: bool) -> Exposure:
            return Exposure(host=request.host, kind=INGRESS, namespace=app.namespace, name=name,
                            created=created, tls_secret=request.tls_secret if created else None)

        if current is not None:
            return plan(current.name, current.created)
        name = request.name or default_name(app, INGRESS)
        existing = self.get_ingress(app.namespace, name)
        if existing is not None and is_owned_by(existing, app):
            return plan(name, True)
        found = find_adoptable_ingress(self.list_ingresses(app.namespace), app, request.host)
        if found is not None:
            return plan(found["metadata"]["name"], is_owned_by(found, app))
        if existing is not None:
            raise InvalidInput(f"Ingress {app.namespace}/{name} exists, is not Lamia's and does not route "
                               f"{request.host}; name another with --gateway")
        return plan(name, True)

    def unexpose(self, app: Application, holder: str | None = None) -> Exposure | None:
        """Remove what :meth:`expose` added; None when the application is not exposed."""
        vs = self.get_object(VIRTUAL_SERVICE, app.namespace, virtual_service_name(app))
        exposure = exposure_of(vs)
        if exposure is None:
            return None
        self._check_holder(app, vs, holder)
        self._update_app_virtual_service(
            app, lambda cur: None if cur is None else unbind_virtual_service(cur), holder)
        if exposure.created:
            self._delete_owned(exposure.kind, exposure.namespace, exposure.name, app)
        return exposure

    def _delete_owned(self, kind: str, namespace: str, name: str, app: Application) -> bool:
        """Delete a Gateway or Ingress if it is still the one Lamia created for ``app``, carrying the
        resourceVersion read so that a change made since is never deleted unseen."""
        res = self._exposure_resource(kind)
        what = self._what(res, namespace, name)
        for _ in range(self.config.max_conflict_retries + 1):
            obj = self._get(res, namespace, name)
            if obj is None or not is_owned_by(obj, app):
                return False
            try:
                self._json("delete", what, self._deletion(kind, namespace, name,
                                                          obj["metadata"]["resourceVersion"]))
                return True
            except NotFound:
                return False
            except ConflictError:
                continue
        raise ConflictError(f"{what} kept changing while Lamia tried to delete it")

    def _deletion(self, kind: str, namespace: str, name: str, resource_version: str) -> Callable[[], Any]:
        """The delete call, only if the object is still at ``resource_version`` (else 409)."""
        body: Any = {"apiVersion": "v1", "kind": "DeleteOptions",
                     "preconditions": {"resourceVersion": resource_version}}
        opts = self._opts()
        if kind == GATEWAY:
            return lambda: self._custom.delete_namespaced_custom_object(
                ISTIO_GROUP, ISTIO_VERSION, namespace, "gateways", name, body=body, **opts)
        return lambda: self._networking.delete_namespaced_ingress(name, namespace, body=body, **opts)


def _forget_conditions(vs: Obj, routes: tuple[str, ...]) -> Obj:
    """``vs`` without the recorded condition texts of ``routes`` whose Lamia route is gone."""
    conditions = conditions_of(vs)
    present = {r.get("name") for r in (vs.get("spec") or {}).get("http") or [] if isinstance(r, dict)}
    stale = [r for r in routes if r in conditions and f"lamia-{r}" not in present]
    if not stale:
        return vs
    out = copy.deepcopy(vs)
    annotations = out["metadata"].setdefault("annotations", {})
    kept = {k: v for k, v in conditions.items() if k not in stale}
    if kept:
        annotations[CONDITIONS_ANNOTATION] = json.dumps(kept, sort_keys=True)
    else:
        annotations.pop(CONDITIONS_ANNOTATION, None)
    if not annotations:
        del out["metadata"]["annotations"]
    return out


def last_writer(obj: Obj) -> str | None:
    """Who last wrote ``obj`` other than Lamia, as far as it says: the newest managedFields entry of
    another field manager, and annotations that name a tool (kubectl apply, Argo CD, Flux, Helm)."""
    meta = obj.get("metadata") or {}
    entries = [e for e in meta.get("managedFields") or []
               if isinstance(e, dict) and e.get("manager") and e.get("manager") != FIELD_MANAGER]
    parts: list[str] = []
    if entries:
        # Times have a resolution of one second: on a tie the later entry is the later write.
        newest = max(enumerate(entries), key=lambda ie: (str(ie[1].get("time") or ""), ie[0]))[1]
        when = f" at {newest['time']}" if newest.get("time") else ""
        parts.append(f"field manager {newest['manager']!r} ({newest.get('operation', 'Update')}{when})")
    tools = [tool for key, tool in _WRITER_ANNOTATIONS.items() if key in (meta.get("annotations") or {})]
    if tools:
        parts.append(f"object annotated by {', '.join(tools)}")
    return "; ".join(parts) or None



def _labels(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items())
