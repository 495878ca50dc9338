"""The resource types the Kubernetes emulator serves, and its discovery documents.

A :class:`Catalog` is what one emulator serves: every resource below, with the
versions of some groups narrowed (an older Istio that serves no ``v1``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

ISTIO_GROUP = "networking.istio.io"
# Every version served from one storage, as a CRD with conversion strategy None does.
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
VERBS = ["create", "delete", "get", "list", "patch", "update"]


@dataclass(frozen=True)
class Resource:
    group: str
    versions: tuple[str, ...]
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    #: A custom resource (CRD): PUT needs a resourceVersion, no strategic merge patch.
    custom: bool = False
    #: Writes to the main resource leave .status alone (it has a /status subresource).
    status_subresource: bool = False
    #: DELETE answers with the object rather than a Status (pods, services, namespaces).
    returns_deleted: bool = False
    #: Has ``metadata.generation``, bumped by changes outside metadata and status.
    generation: bool = False
    #: Verbs discovery lists; a review kind (SelfSubjectAccessReview) is create-only and never stored.
    verbs: tuple[str, ...] = tuple(VERBS)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified(self) -> str:
        """``virtualservices.networking.istio.io`` or ``namespaces``: how errors name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version


RESOURCES: tuple[Resource, ...] = (
    Resource("", ("v1",), "namespaces", "Namespace", namespaced=False, short_names=("ns",),
             returns_deleted=True, status_subresource=True),
    Resource("", ("v1",), "services", "Service", short_names=("svc",), returns_deleted=True,
             status_subresource=True),
    Resource("", ("v1",), "pods", "Pod", short_names=("po",), returns_deleted=True, status_subresource=True),
    Resource("", ("v1",), "configmaps", "ConfigMap", short_names=("cm",)),
    Resource("apps", ("v1",), "deployments", "Deployment", short_names=("deploy",), status_subresource=True,
             generation=True),
    Resource("coordination.k8s.io", ("v1",), "leases", "Lease"),
    Resource(ISTIO_GROUP, ISTIO_VERSIONS, "virtualservices", "VirtualService", short_names=("vs",),
             custom=True, status_subresource=True, generation=True),
    Resource(ISTIO_GROUP, ISTIO_VERSIONS, "destinationrules", "DestinationRule", short_names=("dr",),
             custom=True, status_subresource=True, generation=True),
    Resource(ISTIO_GROUP, ISTIO_VERSIONS, "gateways", "Gateway", short_names=("gw",),
             custom=True, status_subresource=True, generation=True),
    Resource("networking.k8s.io", ("v1",), "ingresses", "Ingress", short_names=("ing",),
             status_subresource=True, generation=True),
    Resource("authorization.k8s.io", ("v1",), "selfsubjectaccessreviews", "SelfSubjectAccessReview",
             namespaced=False, verbs=("create",)),
)

#: Kinds that are answered, not stored.
REVIEWS = frozenset({"SelfSubjectAccessReview"})


class Catalog:
    """The resources one emulator serves; ``versions`` narrows some groups, e.g. to an older Istio's."""

    def __init__(self, versions: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.set_versions(versions or {})

    def set_versions(self, versions: Mapping[str, tuple[str, ...]]) -> None:
        if "" in versions:
            raise ValueError("the core group's versions cannot be narrowed")
        served = []
        for r in RESOURCES:
            if r.group in versions:
                unknown = set(versions[r.group]) - set(r.versions)
                if unknown or not versions[r.group]:
                    raise ValueError(f"group {r.group!r} cannot serve versions {sorted(versions[r.group])}")
                r = replace(r, versions=tuple(v for v in r.versions if v in versions[r.group]))
            served.append(r)
        self.resources: tuple[Resource, ...] = tuple(served)

    def groups(self) -> dict[str, tuple[str, ...]]:
        """Group name ("" for core) to its versions, preferred first."""
        out: dict[str, tuple[str, ...]] = {}
        for r in self.resources:
            out.setdefault(r.group, r.versions)
        return out

    def find(self, group: str, version: str, plural: str) -> Resource | None:
        for r in self.resources:
            if r.group == group and r.plural == plural and version in r.versions:
                return r
        return None

    def group_versions(self, group: str) -> list[dict[str, str]]:
        return [{"groupVersion": f"{group}/{v}" if group else v, "version": v} for v in self.groups()[group]]

    def api_group(self, group: str) -> dict[str, Any]:
        versions = self.group_versions(group)
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
                "preferredVersion": versions[0]}

    def api_group_list(self) -> dict[str, Any]:
        named = [self.api_group(g) for g in self.groups() if g]
        for g in named:
            del g["kind"], g["apiVersion"]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": named}

    def api_resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        served = [r for r in self.resources if r.group == group and version in r.versions]
        if not served:
            return None
        resources = []
        for r in served:
            entry: dict[str, Any] = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                                     "kind": r.kind, "verbs": list(r.verbs)}
            if r.short_names:
                entry["shortNames"] = list(r.short_names)
            resources.append(entry)
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": served[0].api_version(version),
                "resources": resources}


_DEFAULT = Catalog()


def groups() -> dict[str, tuple[str, ...]]:
    """Group name ("" for core) to its versions, preferred first, when every version is served."""
    return _DEFAULT.groups()


def find(group: str, version: str, plural: str) -> Resource | None:
    return _DEFAULT.find(group, version, plural)


def by_api_version(api_version: str, kind: str) -> tuple[Resource, str]:
    """The resource and version for an object's ``apiVersion`` and ``kind``; ValueError when not served."""
    group, _, version = api_version.rpartition("/")
    for r in RESOURCES:
        if r.group == group and r.kind == kind and version in r.versions and kind not in REVIEWS:
            return r, version
    raise ValueError(f"the emulator does not serve kind {kind!r} in apiVersion {api_version!r}")


VERSION_INFO = {
    "major": "1", "minor": "31", "gitVersion": "v1.31.0-lamia-emulator", "gitCommit": "0" * 40,
    "gitTreeState": "clean", "buildDate": "2024-08-13T00:00:00Z", "goVersion": "go1.22.5",
    "compiler": "gc", "platform": "linux/amd64",
}
