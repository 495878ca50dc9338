"""The Kubernetes adapter: discover applications, label namespaces, read and write gateways.

Objects travel as plain dicts (the API's JSON), so that fields Lamia does not
know survive a read-modify-write. Every write goes through one optimistic-
concurrency loop, :meth:`KubeAdapter.update_object`: read, change a copy, write
it back carrying the resourceVersion read, and on a 409 start again from a
fresh read. Another writer's change is therefore never overwritten, and a
change that leaves the object as it was is not written at all.

Failures come out as Lamia's errors (see :mod:`lamia_core.errors`), each naming
the object and, where it helps, the server.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, cast

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from pydantic import BaseModel, ConfigDict, Field

from lamia_core.errors import (
    ConflictError,
    Forbidden,
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
    DESTINATION_RULE,
    ISTIO_GROUP,
    ISTIO_VERSION,
    PLURALS,
    VERSION_LABEL,
    VIRTUAL_SERVICE,
    destination_rule_name,
    gateway_from_virtual_service,
    render_destination_rule,
    render_virtual_service,
    virtual_service_name,
)
from lamia_core.lease import lease_of
from lamia_core.models import (
    DEFAULT_ROUTE,
    Application,
    Gateway,
    Version,
    Weights,
    check_dns_label,
    check_label_value,
)

Obj = dict[str, Any]
Kind = Literal["VirtualService", "DestinationRule"]
Mutation = Callable[[Obj | None], Obj | None]

#: Labels every Deployment of an application needs besides ``app``.
REQUIRED_LABELS = (VERSION_LABEL, "deployment")
#: Labels ``init_namespace`` puts on a namespace.
NAMESPACE_LABELS = {"istio-injection": "enabled", "lamia.io/managed": "true"}


class KubeConfig(BaseModel):
    """How to reach a cluster: a kubeconfig file (and context) or the pod's service account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kubeconfig: str | None = None
    """Path(s) of the kubeconfig, ``:``-separated like $KUBECONFIG; None for the default location."""
    context: str | None = None
    in_cluster: bool = False
    request_timeout: float = Field(default=10.0, gt=0)
    """Seconds for each request, connecting included."""
    max_conflict_retries: int = Field(default=5, ge=0)
    """Fresh reads and re-applied changes after a 409 before giving up."""


def _in_pod_default(config: KubeConfig) -> KubeConfig:
    """A config naming no kubeconfig, in a pod with no kubeconfig, means the pod's service account.

    A flow run by the Kubernetes work pool gets the default KubeConfig from the
    UI form; making users tick in_cluster there would be a trap.
    """
    if config.in_cluster or config.kubeconfig or config.context:
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
            else:
                self.api_client = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=self.config.kubeconfig, context=self.config.context,
                    persist_config=False, client_configuration=configuration,
                )
        except (ConfigException, OSError, yaml.YAMLError) as exc:
            where = "in-cluster service account" if self.config.in_cluster else (
                f"kubeconfig {self.config.kubeconfig or '(default location)'}"
                + (f", context {self.config.context!r}" if self.config.context else "")
            )
            raise InvalidInput(f"cannot load the Kubernetes configuration from {where}: {exc}") from None
        self.server: str = configuration.host
        self._core = k8s.CoreV1Api(self.api_client)
        self._apps = k8s.AppsV1Api(self.api_client)
        custom = k8s.CustomObjectsApi(self.api_client)
        opts = self._opts()
        g, v = ISTIO_GROUP, ISTIO_VERSION

        def istio(kind: str) -> _Resource:
            p = PLURALS[kind]
            return _Resource(
                kind, True,
                get=lambda ns, n: custom.get_namespaced_custom_object(g, v, ns, p, n, **opts),
                create=lambda ns, b: custom.create_namespaced_custom_object(g, v, ns, p, b, **opts),
                replace=lambda ns, n, b: custom.replace_namespaced_custom_object(g, v, ns, p, n, b, **opts),
            )

        self._resources = {kind: istio(kind) for kind in (VIRTUAL_SERVICE, DESTINATION_RULE)}
        self._namespace = _Resource(
            "Namespace", False,
            get=lambda _, n: self._core.read_namespace(n, **opts),
            # The client's validate_call turns the dict into a V1Namespace.
            create=lambda _, b: self._core.create_namespace(cast(Any, b), **opts),
            replace=lambda _, n, b: self._core.replace_namespace(n, cast(Any, b), **opts),
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
            raise self._api_error(action, what, exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise self._transport_error(action, what, exc) from None

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
        if status == 404:
            return NotFound(f"{head}: {detail}")
        if status in (400, 422):
            return InvalidInput(f"{head}: the cluster rejected it: {detail}")
        if status in (401, 403):
            return Forbidden(f"{head}: {self.server} refused with HTTP {status}: {detail}")
        if status == 409:
            return ConflictError(f"{head}: {detail}")
        if status == 429 or status >= 500:
            return ServerError(f"{head}: {self.server} answered HTTP {status}: {detail}")
        return InvalidInput(f"{head}: {self.server} answered HTTP {status}: {detail}")

    def _transport_error(self, action: str, what: str, exc: urllib3.exceptions.HTTPError) -> LamiaError:
        reason: BaseException = exc
        if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
            reason = exc.reason
        # NewConnectionError subclasses ConnectTimeoutError: test it first.
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            short = str(reason).split(": ", 1)[-1]
            return Unreachable(f"cannot reach the Kubernetes API server at {self.server} "
                               f"to {action} {what}: {short}")
        if isinstance(reason, urllib3.exceptions.TimeoutError):
            return Timeout(f"the Kubernetes API server at {self.server} did not answer within "
                           f"{self.config.request_timeout:g}s to {action} {what}")
        return Unreachable(f"cannot talk to the Kubernetes API server at {self.server} "
                           f"to {action} {what}: {reason}")

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

    def update_object(self, kind: Kind, namespace: str, name: str, mutate: Mutation) -> Obj | None:
        """Create or change one object by ``mutate``, safely against concurrent writers.

        ``mutate`` gets a deep copy of the object as read (None if missing) and
        returns the object wanted, or None for no change. It is called again on a
        fresh read after each conflict, at most ``max_conflict_retries`` times
        more, then ConflictError. Returns the object as written (or as read, when
        nothing was written).
        """
        return self._update(self._resource(kind), namespace, name, mutate)

    def _update(self, res: _Resource, namespace: str, name: str, mutate: Mutation) -> Obj | None:
        what = self._what(res, namespace, name)
        attempts = 0
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
                if attempts > self.config.max_conflict_retries:
                    raise ConflictError(
                        f"{what} was changed by another writer each time Lamia tried to write it; "
                        f"gave up after {attempts} attempts (last: {exc})"
                    ) from None

    # --- applications and namespaces -------------------------------------------------------------

    def _write(self, res: _Resource, namespace: str, name: str, body: Obj, *, create: bool) -> Obj:
        what = self._what(res, namespace, name)
        if create:
            return self._json("create", what, lambda: res.create(namespace, body))
        return self._json("replace", what, lambda: res.replace(namespace, name, body))

    def discover_application(self, namespace: str, app: str) -> Application:
        """The application's versions, from its Deployments (labelled app, version, deployment)."""
        check_dns_label("namespace", namespace)
        check_label_value("application", app)
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
        for d in sorted(items, key=lambda d: str(d["metadata"]["name"])):
            name = d["metadata"]["name"]
            labels = d["metadata"].get("labels") or {}
            missing = [label for label in REQUIRED_LABELS if not labels.get(label)]
            if missing:
                lacking.append(f"Deployment {namespace}/{name} lacks label {' and '.join(missing)}")
            else:
                owners.setdefault(labels[VERSION_LABEL], []).append(name)
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
        versions = tuple(Version(name=v, deployment=owners[v][0]) for v in sorted(owners, key=_natural))
        return Application(namespace=namespace, name=app, versions=versions,
                           service=self._find_service(namespace, app))

    def _find_service(self, namespace: str, app: str) -> str | None:
        """The Service selecting all versions of the app (selector app=<app>, no version)."""
        listed = self._json("list", f"Services in namespace {namespace}",
                            lambda: self._core.list_namespaced_service(namespace, **self._opts()))
        names = sorted(
            s["metadata"]["name"] for s in listed.get("items") or []
            if ((s.get("spec") or {}).get("selector") or {}).get("app") == app
            and VERSION_LABEL not in ((s.get("spec") or {}).get("selector") or {})
        )
        # By convention the Service is named like the app; without one, the host is the app's name.
        return app if app in names else (names[0] if names else None)

    def init_namespace(self, namespace: str) -> Obj:
        """Label a namespace for Istio sidecar injection and Lamia; create it when missing."""
        check_dns_label("namespace", namespace)

        def mutate(ns: Obj | None) -> Obj:
            ns = ns or {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            meta = ns.setdefault("metadata", {})
            meta["labels"] = {**(meta.get("labels") or {}), **NAMESPACE_LABELS}
            return ns

        result = self._update(self._namespace, "", namespace, mutate)
        assert result is not None  # mutate never declines
        return result

    # --- gateways --------------------------------------------------------------------------------

    def read_gateway(self, app: Application) -> Gateway | None:
        """The app's gateway from its VirtualService; None when there is none to read."""
        vs = self.get_object(VIRTUAL_SERVICE, app.namespace, virtual_service_name(app))
        return None if vs is None else gateway_from_virtual_service(app, vs)

    def apply_gateway(self, gateway: Gateway) -> tuple[Obj, Obj]:
        """Write the DestinationRule, then the VirtualService (so subsets exist before routes use them)."""
        app = gateway.application
        if not app.versions:
            raise InvalidInput(
                f"application {app.name!r} has no versions: discover it before applying its gateway"
            )
        dr, vs, _ = self._write_gateway(app, lambda _: gateway)
        return dr, vs

    def set_weights(self, app: Application, weights: Weights, route: str = DEFAULT_ROUTE) -> Gateway:
        """Change one route's weights, re-applied onto whatever the VirtualService holds at write time."""
        for v in weights.versions:
            app.version(v)

        def gateway_of(vs: Obj | None) -> Gateway:
            gw = None if vs is None else gateway_from_virtual_service(app, vs)
            if gw is None:
                self._no_gateway(app)
            return gw.with_weights(weights, route)

        return self._write_gateway(app, gateway_of)[2]

    def _write_gateway(self, app: Application, gateway_of: Callable[[Obj | None], Gateway]
                       ) -> tuple[Obj, Obj, Gateway]:
        """Write the DestinationRule, then the VirtualService with ``gateway_of(<VirtualService as read>)``.

        The VirtualService is rendered once onto its current state before
        anything is written, so that a refusal (no gateway, an unknown route, a
        route in the way) leaves the cluster as it was.
        """
        ns, vs_name = app.namespace, virtual_service_name(app)
        current = self.get_object(VIRTUAL_SERVICE, ns, vs_name)
        render_virtual_service(gateway_of(current), current)
        dr = self._update(self._resources[DESTINATION_RULE], ns, destination_rule_name(app),
                          lambda cur: render_destination_rule(app, cur))
        written: list[Gateway] = []

        def mutate(vs: Obj | None) -> Obj:
            written.append(gateway_of(vs))
            return render_virtual_service(written[-1], vs)

        vs = self._update(self._resources[VIRTUAL_SERVICE], ns, vs_name, mutate)
        assert dr is not None and vs is not None  # the render functions never decline
        return dr, vs, written[-1]

    @staticmethod
    def _no_gateway(app: Application) -> NoReturn:
        raise NotFound(
            f"application {app.name!r} in namespace {app.namespace!r} has no gateway yet; create it with "
            f"`lamia gateway apply --namespace {app.namespace} --app {app.name}`"
        )

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
        lease = lease_of(vs)
        if lease is not None and lease.holder != holder:
            raise ReleaseLocked(
                f"a release of application {app.name!r} in namespace {app.namespace!r} is running "
                f"({lease.describe()}); its gateway is changed by that run only: wait for it to end "
                f"or abort it with `lamia release abort {app.name} -n {app.namespace}`"
            )

    def _update_app_virtual_service(self, app: Application, mutate: Mutation,
                                    holder: str | None) -> Obj | None:
        """The one way the methods below write the application's VirtualService: refused
        (ReleaseLocked) when a release lease is held by anyone but ``holder``."""

        def guarded(vs: Obj | None) -> Obj | None:
            self._check_holder(app, vs, holder)
            return mutate(vs)

        vs_resource = self._resources[VIRTUAL_SERVICE]
        return self._update(vs_resource, app.namespace, virtual_service_name(app), guarded)

    def expose(self, app: Application, request: ExposeRequest, holder: str | None = None) -> Exposure:
        """Make the application reachable from outside the mesh (see :mod:`lamia_core.exposure`).

        Everything is decided and checked before the first write; then the Gateway
        or Ingress is written (when Lamia creates it), then the VirtualService.
        Asking again for the same host is a no-op (or re-renders Lamia's own Gateway).
        """
        vs = self.get_object(VIRTUAL_SERVICE, app.namespace, virtual_service_name(app))
        if vs is None:
            self._no_gateway(app)
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
                self._no_gateway(app)
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


def _labels(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items())
