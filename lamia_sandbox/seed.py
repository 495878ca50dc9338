"""Seed an application as Lamia finds one: a Namespace, a Service and one Deployment per version,
each with its running pods.

The namespace is left unlabelled (``lamia cluster init`` labels it). Each
Deployment ``<app>-<version>`` carries ``app``, ``version`` and ``deployment``
on itself and on its pod template, unless ``labels_missing`` leaves some off
to reproduce a badly labelled application.

Pods play the Deployment controller and Istio's sidecar injector, which the
emulator does not run: each Deployment gets ``replicas`` pods from its template,
with the ``istio-proxy`` sidecar when the namespace enables injection at the
moment they are created (``istio-injection=enabled`` or an ``istio.io/rev``
label), as the webhook decides, unless ``sidecar`` says otherwise. So pods
seeded before ``lamia cluster init`` keep lacking the sidecar until
:func:`restart_deployment` replaces them, as ``kubectl rollout restart`` does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

DEFAULT_IMAGE = "docker.io/library/nginx:1.27"
PROXY_IMAGE = "docker.io/istio/proxyv2:1.24.2"
SIDECAR = "istio-proxy"
LABELS = ("app", "version", "deployment")
CONTAINER_PORT = 8080

Obj = dict[str, Any]


class _Emulator(Protocol):
    def add_object(self, obj: Obj) -> Obj: ...
    def get_object(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None: ...
    def list_objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[Obj]: ...
    def delete_object(self, api_version: str, kind: str, namespace: str | None, name: str) -> None: ...


def injection_enabled(namespace: Obj | None) -> bool:
    """Whether Istio's webhook injects the sidecar into new pods of this Namespace."""
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    if labels.get("istio-injection") == "disabled":
        return False
    return labels.get("istio-injection") == "enabled" or bool(labels.get("istio.io/rev"))


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def pod_objects(deployment: Obj, *, sidecar: bool, generation: str = "") -> list[Obj]:
    """The pods a Deployment's ReplicaSet runs: named, labelled and shaped as on a real cluster.

    ``generation`` tells pods of a restarted Deployment apart from the ones before.
    """
    meta, spec = deployment["metadata"], deployment["spec"]
    template = json.dumps(spec["template"], sort_keys=True)
    pod_hash = _digest(template, generation)[:10]
    template_meta = spec["template"].get("metadata") or {}
    labels = {**(template_meta.get("labels") or {}), "pod-template-hash": pod_hash}
    annotations = dict(template_meta.get("annotations") or {})
    pod_spec = json.loads(json.dumps(spec["template"]["spec"]))
    if sidecar:
        pod_spec["containers"].append({
            "name": SIDECAR, "image": PROXY_IMAGE,
            "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
            "ports": [{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}],
        })
        pod_spec.setdefault("initContainers", []).append(
            {"name": "istio-init", "image": PROXY_IMAGE, "args": ["istio-iptables"]})
        annotations["sidecar.istio.io/status"] = json.dumps(
            {"initContainers": ["istio-init"], "containers": [SIDECAR], "volumes": ["istio-envoy"]})
        labels["security.istio.io/tlsMode"] = "istio"
    replicaset = f"{meta['name']}-{pod_hash}"
    pods = []
    for i in range(int(spec.get("replicas", 1))):
        suffix = _digest(replicaset, str(i))[:5]
        pods.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": f"{replicaset}-{suffix}", "namespace": meta["namespace"], "labels": labels,
                **({"annotations": annotations} if annotations else {}),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replicaset,
                                     "uid": _digest("uid", replicaset)[:32], "controller": True}],
            },
            "spec": pod_spec,
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [
                           {"name": c["name"], "ready": True, "started": True, "restartCount": 0,
                            "image": c["image"], "imageID": c["image"].split(":")[0] + "@sha256:"
                            + _digest("image", c["image"]), "state": {"running": {}}}
                           for c in pod_spec["containers"]]},
        })
    return pods


def _owned_pods(emu: _Emulator, deployment: Obj) -> list[Obj]:
    selector = deployment["spec"]["selector"].get("matchLabels") or {}
    return [p for p in emu.list_objects("v1", "Pod", deployment["metadata"]["namespace"])
            if selector.items() <= (p["metadata"].get("labels") or {}).items()
            and (p["metadata"].get("ownerReferences") or [{}])[0].get("name", "").rsplit("-", 1)[0]
            == deployment["metadata"]["name"]]


def seed_pods(emu: _Emulator, namespace: str, deployment: str, *, sidecar: bool | None = None,
              generation: str = "") -> list[Obj]:
    """Replace a Deployment's pods by new ones; ``sidecar`` None: as the namespace's injection says now."""
    d = emu.get_object("apps/v1", "Deployment", namespace, deployment)
    if d is None:
        raise ValueError(f"Deployment {namespace}/{deployment} does not exist")
    if sidecar is None:
        sidecar = injection_enabled(emu.get_object("v1", "Namespace", None, namespace))
    for pod in _owned_pods(emu, d):
        emu.delete_object("v1", "Pod", namespace, pod["metadata"]["name"])
    return [emu.add_object(p) for p in pod_objects(d, sidecar=sidecar, generation=generation)]


def restart_deployment(emu: _Emulator, namespace: str, deployment: str) -> list[Obj]:
    """What ``kubectl rollout restart`` leads to: new pods, injected if the namespace says so now."""
    d = emu.get_object("apps/v1", "Deployment", namespace, deployment)
    if d is None:
        raise ValueError(f"Deployment {namespace}/{deployment} does not exist")
    restarts = str(int((d["metadata"].get("annotations") or {}).get("lamia.io/restarts", "0")) + 1)
    d["metadata"].setdefault("annotations", {})["lamia.io/restarts"] = restarts
    emu.add_object(d)
    return seed_pods(emu, namespace, deployment, generation=restarts)


def application_objects(namespace: str, app: str, versions: list[str], *, image: str = DEFAULT_IMAGE,
                        labels_missing: Mapping[str, str | Iterable[str]] | None = None) -> list[Obj]:
    """The Namespace, Service and Deployments to create, in that order."""
    if not versions or len(set(versions)) != len(versions):
        raise ValueError(f"versions must be a non-empty list of distinct names, got {versions!r}")
    missing: dict[str, set[str]] = {}
    for version, names in (labels_missing or {}).items():
        if version not in versions:
            raise ValueError(f"labels_missing names version {version!r}, not one of {', '.join(versions)}")
        missing[version] = {names} if isinstance(names, str) else set(names)
        if unknown := missing[version] - set(LABELS):
            raise ValueError(f"labels_missing for {version!r}: {sorted(unknown)} are not among {LABELS}")
    objects: list[Obj] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": app, "namespace": namespace, "labels": {"app": app}},
         "spec": {"type": "ClusterIP", "selector": {"app": app},
                  "ports": [{"name": "http", "port": 80, "targetPort": CONTAINER_PORT, "protocol": "TCP"}]}},
    ]
    for version in versions:
        name = f"{app}-{version}"
        full = {"app": app, "version": version, "deployment": name}
        labels = {k: v for k, v in full.items() if k not in missing.get(version, set())}
        selector = {k: v for k, v in labels.items() if k != "deployment"} or labels
        if not selector:
            raise ValueError(f"Deployment {name} needs at least one label for its selector")
        objects.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": app, "image": image,
                                             "ports": [{"name": "http", "containerPort": CONTAINER_PORT}]}]},
                },
            },
            # What the Deployment controller would report once the pod is up; a real
            # API server drops it on create, so it only reaches the emulator's store.
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
                       "availableReplicas": 1},
        })
    return objects


def seed_application(emu_or_api: _Emulator | k8s.ApiClient, namespace: str, app: str, versions: list[str], *,
                     image: str = DEFAULT_IMAGE,
                     labels_missing: Mapping[str, str | Iterable[str]] | None = None,
                     sidecar: bool | None = None) -> list[Obj]:
    """Create the application on an emulator's store directly, or over HTTP through an ``ApiClient``.

    An existing Namespace is kept as it is; on the emulator, an existing Service
    or Deployment is overwritten (and its pods replaced), over HTTP it is an
    error (409). Each Deployment's pods are created too (see the module
    docstring for ``sidecar``). Returns the Namespace, Service and Deployments
    as stored.
    """
    objects = application_objects(namespace, app, versions, image=image, labels_missing=labels_missing)
    if isinstance(emu_or_api, k8s.ApiClient):
        return _create(emu_or_api, objects, sidecar)
    out = []
    for obj in objects:
        if obj["kind"] == "Namespace":
            existing = emu_or_api.get_object("v1", "Namespace", None, namespace)
            if existing is not None:
                out.append(existing)
                continue
        out.append(emu_or_api.add_object(obj))
    for d in out:
        if d["kind"] == "Deployment":
            seed_pods(emu_or_api, namespace, d["metadata"]["name"], sidecar=sidecar)
    return out


def _create(api: k8s.ApiClient, objects: list[Obj], sidecar: bool | None) -> list[Obj]:
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    raw: dict[str, Any] = {"_preload_content": False}
    out = []
    response: Any
    for obj in objects:
        ns = obj["metadata"].get("namespace")
        body: Any = obj  # the client's validate_call turns a dict into its model
        if obj["kind"] == "Namespace":
            try:
                response = core.create_namespace(body, **raw)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                response = core.read_namespace(obj["metadata"]["name"], **raw)
        elif obj["kind"] == "Service":
            response = core.create_namespaced_service(ns, body, **raw)
        else:
            response = apps.create_namespaced_deployment(ns, body, **raw)
        out.append(json.loads(response.data))
    injected = injection_enabled(out[0]) if sidecar is None else sidecar
    for d in out:
        if d["kind"] == "Deployment":
            for pod in pod_objects(d, sidecar=injected):
                core.create_namespaced_pod(d["metadata"]["namespace"], cast(Any, pod), **raw)
    return out
