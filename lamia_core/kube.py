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
    ServerError,
    Timeout,
    Unreachable,
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
