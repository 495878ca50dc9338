"""Seed an application as Lamia finds one: a Namespace, a Service and one Deployment per version.

The namespace is left unlabelled (``lamia cluster init`` labels it). Each
Deployment ``<app>-<version>`` carries ``app``, ``version`` and ``deployment``
on itself and on its pod template, unless ``labels_missing`` leaves some off
to reproduce a badly labelled application.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

DEFAULT_IMAGE = "docker.io/library/nginx:1.27"
LABELS = ("app", "version", "deployment")
CONTAINER_PORT = 8080

Obj = dict[str, Any]


class _Emulator(Protocol):
    def add_object(self, obj: Obj) -> Obj: ...
    def get_object(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None: ...


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
                     labels_missing: Mapping[str, str | Iterable[str]] | None = None) -> list[Obj]:
    """Create the application on an emulator's store directly, or over HTTP through an ``ApiClient``.

    An existing Namespace is kept as it is; on the emulator, an existing Service
    or Deployment is overwritten, over HTTP it is an error (409). Returns the
    objects as stored.
    """
    objects = application_objects(namespace, app, versions, image=image, labels_missing=labels_missing)
    if isinstance(emu_or_api, k8s.ApiClient):
        return _create(emu_or_api, objects)
    out = []
    for obj in objects:
        if obj["kind"] == "Namespace":
            existing = emu_or_api.get_object("v1", "Namespace", None, namespace)
            if existing is not None:
                out.append(existing)
                continue
        out.append(emu_or_api.add_object(obj))
    return out


def _create(api: k8s.ApiClient, objects: list[Obj]) -> list[Obj]:
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
    return out
