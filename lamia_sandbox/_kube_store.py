"""The emulator's object store: the API server's write semantics, without HTTP.

One lock guards everything. Objects are kept at their resource's first
version and shown at whichever version was asked for. Every failure is an
:class:`ApiError` holding the ``Status`` the real API server would send.
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lamia_sandbox import _kube_resources as kr
from lamia_sandbox._kube_patch import PatchFailed, PatchMalformed, json_patch, merge_patch
from lamia_sandbox._kube_resources import Resource
from lamia_sandbox._kube_selectors import LABEL_VALUE, label_key_error

Obj = dict[str, Any]
Key = tuple[str, str, str, str]  # group, plural, namespace ("" when cluster-scoped), name

NAMESPACES = kr.RESOURCES[0]
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# What create leaves in .status where a /status subresource owns it; absent kinds get none.
_STATUS_ON_CREATE: dict[str, Obj] = {
    "Namespace": {"phase": "Active"}, "Service": {"loadBalancer": {}}, "Pod": {"phase": "Pending"},
    "Deployment": {}, "Ingress": {"loadBalancer": {}},
}
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status: Obj = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details or {}, "code": code,
        }


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _details(res: Resource, name: str) -> Obj:
    return {"name": name, **({"group": res.group} if res.group else {}), "kind": res.plural}


def not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name))


def conflict(res: Resource, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}',
                    _details(res, name))


def invalid(res: Resource, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 for ``causes`` given as (field, reason, message)."""
    parts = [f"{field}: {msg}" for field, _, msg in causes]
    text = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = {"name": name, **({"group": res.group} if res.group else {}), "kind": res.kind,
               "causes": [{"reason": r, "message": m, "field": f} for f, r, m in causes]}
    return ApiError(422, "Invalid", f'{res.qualified_kind} "{name}" is invalid: {text}', details)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec(obj: Obj) -> Obj:
    """The part of an object whose change bumps ``metadata.generation``: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}


def _changed_fields(new: Obj, old: Obj | None) -> Obj:
    """A coarse fieldsV1: the top-level fields (and metadata's labels/annotations keys) a write changed."""
    fields: Obj = {}
    before = old or {}
    for k, v in new.items():
        if k in ("apiVersion", "kind", "metadata"):
            continue
        if isinstance(v, dict) and isinstance(before.get(k), dict):
            sub_fields: Obj = {f"f:{sub}": {} for sub, x in v.items() if before[k].get(sub) != x}
            if sub_fields:
                fields[f"f:{k}"] = sub_fields
        elif before.get(k) != v:
            fields[f"f:{k}"] = {}
    meta, old_meta = new.get("metadata") or {}, before.get("metadata") or {}
    for part in ("labels", "annotations"):
        changed: Obj = {f"f:{key}": {} for key, x in (meta.get(part) or {}).items()
                   if (old_meta.get(part) or {}).get(key) != x}
        if changed:
            fields.setdefault("f:metadata", {})[f"f:{part}"] = changed
    return fields


def _record_manager(meta: Obj, manager: str, api_version: str, fields: Obj) -> None:
    entries = [e for e in meta.get("managedFields") or []
               if not (e.get("manager") == manager and e.get("operation") == "Update")]
    entries.append({"manager": manager, "operation": "Update", "apiVersion": api_version, "time": _now(),
                    "fieldsType": "FieldsV1", "fieldsV1": fields})
    meta["managedFields"] = entries


class Store:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._objects: dict[Key, Obj] = {}
        self._rv = 0
        for ns in (*PROTECTED_NAMESPACES, "kube-node-lease"):
            self.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # --- shared --------------------------------------------------------------------------------

    @staticmethod
    def _key(res: Resource, namespace: str | None, name: str) -> Key:
        return (res.group, res.plural, (namespace or "") if res.namespaced else "", name)

    @staticmethod
    def _present(res: Resource, version: str, obj: Obj) -> Obj:
        rest = copy.deepcopy({k: v for k, v in obj.items() if k not in ("apiVersion", "kind")})
        return {"apiVersion": res.api_version(version), "kind": res.kind, **rest}

    def _commit(self, res: Resource, key: Key, new: Obj, old: Obj | None, *, dry_run: bool = False,
                always_bump: bool = False, manager: str = "") -> Obj:
        """Store ``new`` over ``old`` with server-owned metadata; a write that changes nothing is skipped."""
        meta = new.setdefault("metadata", {})
        # managedFields sent back as read are the server's to update; different ones replace them.
        sent = meta.pop("managedFields", None)
        before = (old or {}).get("metadata", {}).get("managedFields")
        if sent is not None and sent != before:
            meta["managedFields"] = sent
        elif before is not None:
            meta["managedFields"] = copy.deepcopy(before)
        if res is NAMESPACES:
            meta["labels"] = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": meta["name"]}
            new.setdefault("spec", {"finalizers": ["kubernetes"]})
        new["apiVersion"], new["kind"] = res.api_version(res.versions[0]), res.kind
        meta.pop("generation", None)
        if old is None:
            meta["uid"] = meta.get("uid") or str(uuid.uuid4())
            meta["creationTimestamp"] = meta.get("creationTimestamp") or _now()
            if res.generation:
                meta["generation"] = 1
            if res is NAMESPACES:
                new.setdefault("status", {"phase": "Active"})
        else:
            for field in ("uid", "creationTimestamp"):
                meta[field] = old["metadata"][field]
            if res.generation:
                meta["generation"] = old["metadata"]["generation"] + (_spec(new) != _spec(old))
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            if new == old and not always_bump:
                return old
        if manager:
            _record_manager(meta, manager, new["apiVersion"], _changed_fields(new, old))
        if dry_run:
            return new
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._objects[key] = copy.deepcopy(new)
        return new

    # --- direct access for tests and seeding ---------------------------------------------------

    def put(self, obj: Obj, *, must_exist: bool = False) -> Obj:
        """Create or overwrite ``obj`` as another writer would: no checks of resourceVersion."""
        res, version = kr.by_api_version(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        meta = obj.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace")
        if not name:
            raise ValueError(f"{res.kind} needs metadata.name")
        if res.namespaced and not namespace:
            raise ValueError(f"{res.kind} {name!r} needs metadata.namespace")
        key = self._key(res, namespace, name)
        with self.lock:
            if res.namespaced and self._key(NAMESPACES, None, str(namespace)) not in self._objects:
                raise ValueError(f"namespace {namespace!r} does not exist: add the Namespace first")
            old = self._objects.get(key)
            if must_exist and old is None:
                raise LookupError(f"{res.qualified} {name!r} does not exist in namespace {namespace!r}")
            try:
                new = self._checked(res, version, namespace, obj, url_name=name)
            except ApiError as exc:
                raise ValueError(f"a real API server would refuse this {res.kind}: {exc}") from None
            new["metadata"].pop("resourceVersion", None)
            return self._present(res, version, self._commit(res, key, new, old, always_bump=True))

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        res, version = kr.by_api_version(api_version, kind)
        with self.lock:
            obj = self._objects.get(self._key(res, namespace, name))
            return None if obj is None else self._present(res, version, obj)

    def select(self, res: Resource, version: str, namespace: str | None,
               match: Callable[[Obj], bool] = lambda _: True) -> list[Obj]:
        with self.lock:
            found = [o for (g, p, ns, _), o in sorted(self._objects.items())
                     if g == res.group and p == res.plural and (namespace is None or ns == namespace)]
            return [self._present(res, version, o) for o in found if match(o)]

    # --- the API's verbs -----------------------------------------------------------------------

    def list(self, res: Resource, version: str, namespace: str | None, match: Callable[[Obj], bool]) -> Obj:
        with self.lock:
            items = self.select(res, version, namespace, match)
            rv = str(self._rv)
        if not res.custom:  # built-in lists carry apiVersion and kind once, not per item
            for item in items:
                del item["apiVersion"], item["kind"]
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version(version),
                "metadata": {"resourceVersion": rv}, "items": items}

    def read(self, res: Resource, version: str, namespace: str | None, name: str) -> Obj:
        with self.lock:
            obj = self._objects.get(self._key(res, namespace, name))
            if obj is None:
                raise not_found(res, name)
            return self._present(res, version, obj)

    def create(self, res: Resource, version: str, namespace: str | None, body: Any, *, dry_run: bool,
               manager: str = "") -> Obj:
        if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
            meta = body["metadata"]
            if not meta.get("name") and isinstance(meta.get("generateName"), str):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        new = self._checked(res, version, namespace, body, url_name=None)
        meta = new["metadata"]
        if meta.pop("resourceVersion", None):
            # What etcd storage answers, as a 500, when a client sends one.
            raise ApiError(500, "InternalError", "resourceVersion should not be set on objects to be created")
        for field in ("uid", "creationTimestamp", "generation"):
            meta.pop(field, None)
        if res.status_subresource:
            new.pop("status", None)
            if res.kind in _STATUS_ON_CREATE:
                new["status"] = copy.deepcopy(_STATUS_ON_CREATE[res.kind])
        key = self._key(res, namespace, meta["name"])
        with self.lock:
            if res.namespaced and self._key(NAMESPACES, None, namespace or "") not in self._objects:
                raise not_found(NAMESPACES, str(namespace))
            if key in self._objects:
                raise ApiError(409, "AlreadyExists", f'{res.qualified} "{meta["name"]}" already exists',
                               _details(res, meta["name"]))
            return self._present(res, version, self._commit(res, key, new, None, dry_run=dry_run,
                                                            manager=manager))

    def update(self, res: Resource, version: str, namespace: str | None, name: str, body: Any,
               *, dry_run: bool, manager: str = "") -> Obj:
        new = self._checked(res, version, namespace, body, url_name=name)
        with self.lock:
            old = self._objects.get(self._key(res, namespace, name))
            if old is None:
                raise not_found(res, name)
            rv = new["metadata"].get("resourceVersion")
            if not rv and res.custom:
                # Built-in kinds allow an unconditional update; custom resources do not.
                raise invalid(res, name, [("metadata.resourceVersion", "FieldValueInvalid",
                                           "Invalid value: 0x0: must be specified for an update")])
            return self._write(res, version, old, new, rv, dry_run, manager)

    def patch(self, res: Resource, version: str, namespace: str | None, name: str, content_type: str,
              patch: Any, *, dry_run: bool, manager: str = "") -> Obj:
        with self.lock:
            old = self._objects.get(self._key(res, namespace, name))
            if old is None:
                raise not_found(res, name)
            current = self._present(res, version, old)
            try:
                if content_type == JSON_PATCH:
                    patched = json_patch(current, patch)
                elif not isinstance(patch, dict):
                    raise PatchMalformed(f"a {content_type} body must be a JSON object")
                else:  # merge patch, and strategic merge patch taken as one (see the module docstring)
                    patched = merge_patch(current, patch)
            except PatchMalformed as exc:
                raise bad_request(str(exc)) from None
            except PatchFailed as exc:
                raise ApiError(422, "Invalid", str(exc)) from None
            new = self._checked(res, version, namespace, patched, url_name=name)
            rv = new["metadata"].get("resourceVersion")
            return self._write(res, version, old, new, rv, dry_run, manager)

    def _write(self, res: Resource, version: str, old: Obj, new: Obj, rv: str | None, dry_run: bool,
               manager: str = "") -> Obj:
        name = old["metadata"]["name"]
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        if res.status_subresource:
            new.pop("status", None)
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        key = self._key(res, old["metadata"].get("namespace"), name)
        return self._present(res, version, self._commit(res, key, new, old, dry_run=dry_run, manager=manager))

    def delete(self, res: Resource, version: str, namespace: str | None, name: str, options: Any,
               *, dry_run: bool) -> Obj:
        pre = options.get("preconditions") if isinstance(options, dict) else None
        key = self._key(res, namespace, name)
        with self.lock:
            old = self._objects.get(key)
            if old is None:
                raise not_found(res, name)
            for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                want = (pre or {}).get(field)
                if want and want != old["metadata"][field]:
                    raise conflict(res, name, f"Precondition failed: {label} in precondition: {want}, "
                                              f"{label} in object meta: {old['metadata'][field]}")
            if res is NAMESPACES and name in PROTECTED_NAMESPACES:
                raise ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may '
                                                 "not be deleted", _details(res, name))
            if not dry_run:
                # A namespace takes its contents with it (at once, where a real one lingers Terminating).
                doomed = [k for k in self._objects if k == key or (res is NAMESPACES and k[2] == name)]
                for k in doomed:
                    del self._objects[k]
                self._rv += 1
        if not res.returns_deleted:
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {**_details(res, name), "uid": old["metadata"]["uid"]}}
        out = self._present(res, version, old)
        if res is NAMESPACES:
            out["metadata"]["deletionTimestamp"] = _now()
            out["status"] = {"phase": "Terminating"}
        return out

    # --- validation ----------------------------------------------------------------------------

    @staticmethod
    def _checked(res: Resource, version: str, namespace: str | None, body: Any, *,
                 url_name: str | None) -> Obj:
        """A normalised copy of a written object, or the 400/422 the API server would answer."""
        if not isinstance(body, dict):
            raise bad_request(f"the body must be a JSON object (a {res.kind}), not {type(body).__name__}")
        obj = copy.deepcopy(body)
        expected = res.api_version(version)
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if res.custom and not (api_version and kind):
            raise bad_request(f"Object 'apiVersion' and 'Kind' must be set on a {res.kind}: "
                              f"expected apiVersion {expected!r} and kind {res.kind!r}")
        if api_version and api_version != expected:
            raise bad_request(f"the API version in the data ({api_version}) does not match the expected "
                              f"API version ({expected})")
        if kind and kind != res.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({res.kind})")
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be a JSON object")
        name = meta.get("name") or ""
        if url_name is not None and name != url_name:
            raise bad_request(f"the name of the object ({name}) does not match the name on the URL "
                              f"({url_name})")
        if res.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent "
                                  "on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        causes: list[tuple[str, str, str]] = []
        for field in ("labels", "annotations"):
            value = meta.get(field)
            if value is None:
                continue
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise bad_request(f"metadata.{field} must be a map of strings to strings, got {value!r}")
            for k, v in value.items():
                if err := label_key_error(k):
                    causes.append((f"metadata.{field}", "FieldValueInvalid", f"Invalid value: {k!r}: {err}"))
                elif field == "labels" and not LABEL_VALUE.match(v):
                    causes.append(("metadata.labels", "FieldValueInvalid",
                                   f"Invalid value: {v!r}: a valid label value must be 63 characters or "
                                   "less, alphanumeric, '-', '_' or '.' inside, alphanumeric at both ends"))
        if not name:
            causes.insert(0, ("metadata.name", "FieldValueRequired",
                              "Required value: name or generateName is required"))
        else:
            short = res.plural in ("namespaces", "services")
            ok = _DNS_LABEL.match(name) if short else len(name) <= 253 and _SUBDOMAIN.match(name)
            if not ok:
                what = "RFC 1123 label" if short else "RFC 1123 subdomain"
                causes.insert(0, ("metadata.name", "FieldValueInvalid",
                                  f"Invalid value: {name!r}: a lowercase {what} must consist of lower case "
                                  "alphanumeric characters, '-' or '.', and must start and end with an "
                                  "alphanumeric character"))
        if causes:
            raise invalid(res, name, causes)
        return obj
