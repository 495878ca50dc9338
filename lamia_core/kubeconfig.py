"""One context of a kubeconfig, made self-contained: what a saved cluster carries to another machine.

A kubeconfig names certificate, key and token files by path (relative to the
file), and holds every context's credentials. A flow run on a worker has none
of those files, and needs only one context. So :func:`select_context` merges
the files as kubectl does (the first file to define a name wins; the first
``current-context`` set is the default), keeps the chosen context with only
its cluster and its user, and copies each file they name into the matching
``*-data`` field. What cannot travel as data is said in ``notes``: an exec
credential plugin or an auth provider runs a command (or asks a service)
where the flow runs.
"""

from __future__ import annotations

import base64
import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lamia_core.errors import InvalidInput

Obj = dict[str, Any]

#: File fields and the data fields that replace them, per section of a kubeconfig.
_CLUSTER_FILES = {"certificate-authority": "certificate-authority-data"}
_USER_FILES = {"client-certificate": "client-certificate-data", "client-key": "client-key-data"}


@dataclass(frozen=True)
class SelectedContext:
    """A context ready to be saved: ``config`` is a whole kubeconfig naming only that context."""

    context: str
    server: str
    config: Obj
    notes: list[str] = field(default_factory=list)


def default_paths() -> list[str]:
    """Where kubectl looks: $KUBECONFIG (``:``-separated), else ~/.kube/config."""
    raw = os.environ.get("KUBECONFIG") or "~/.kube/config"
    return [os.path.expanduser(p) for p in raw.split(os.pathsep) if p]


def _load(path: str) -> Obj:
    try:
        text = Path(path).read_text()
    except FileNotFoundError as exc:
        raise InvalidInput(f"kubeconfig file {path} does not exist") from exc
    except OSError as exc:
        raise InvalidInput(f"cannot read kubeconfig file {path}: {exc.strerror or exc}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"kubeconfig file {path} is not YAML: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidInput(f"kubeconfig file {path} holds a {type(doc).__name__}, not a kubeconfig mapping")
    return doc


def _entries(doc: Obj, section: str, path: str) -> list[Obj]:
    items = doc.get(section) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) and "name" in i for i in items):
        raise InvalidInput(f"kubeconfig file {path}: {section} must be a list of entries with a name")
    return items


def select_context(paths: list[str] | None, context: str | None) -> SelectedContext:
    """The context ``context`` (default: the current one) of the kubeconfig files ``paths``
    (default: :func:`default_paths`), self-contained. InvalidInput naming the file and field
    when a file is missing or malformed, the context does not exist, or a file it names is gone."""
    files = paths if paths else default_paths()
    existing = [p for p in files if os.path.exists(p)] if len(files) > 1 else files
    if not existing:
        raise InvalidInput(f"none of the kubeconfig files {', '.join(files)} exists")
    # name -> (entry, the file it came from): the first definition wins, as in kubectl.
    found: dict[str, dict[str, tuple[Obj, str]]] = {"contexts": {}, "clusters": {}, "users": {}}
    current: str | None = None
    for path in existing:
        doc = _load(path)
        for section, seen in found.items():
            for entry in _entries(doc, section, path):
                seen.setdefault(str(entry["name"]), (entry, path))
        if current is None and doc.get("current-context"):
            current = str(doc["current-context"])
    where = ", ".join(existing)
    name = context or current
    if not name:
        raise InvalidInput(f"kubeconfig {where} sets no current-context: name one with --context")
    if name not in found["contexts"]:
        known = ", ".join(sorted(found["contexts"])) or "none"
        raise InvalidInput(f"kubeconfig {where} has no context {name!r} (its contexts: {known})")
    ctx_entry, ctx_path = found["contexts"][name]
    ctx = ctx_entry.get("context") or {}
    cluster_name, user_name = str(ctx.get("cluster") or ""), str(ctx.get("user") or "")
    if cluster_name not in found["clusters"]:
        raise InvalidInput(f"kubeconfig {ctx_path}: context {name!r} names cluster {cluster_name!r}, "
                           "which no kubeconfig file defines")
    cluster_entry, cluster_path = found["clusters"][cluster_name]
    cluster = _inline(copy.deepcopy(cluster_entry.get("cluster") or {}), _CLUSTER_FILES, cluster_path,
                      f"cluster {cluster_name!r}")
    server = str(cluster.get("server") or "")
    if not server:
        raise InvalidInput(f"kubeconfig {cluster_path}: cluster {cluster_name!r} has no server")
    notes: list[str] = []
    user: Obj = {}
    if user_name:
        if user_name not in found["users"]:
            raise InvalidInput(f"kubeconfig {ctx_path}: context {name!r} names user {user_name!r}, "
                               "which no kubeconfig file defines")
        user_entry, user_path = found["users"][user_name]
        user = _inline(copy.deepcopy(user_entry.get("user") or {}), _USER_FILES, user_path,
                       f"user {user_name!r}")
        user = _inline_token(user, user_path, f"user {user_name!r}", notes)
        notes.extend(_travel_notes(user, user_name))
    config: Obj = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": user_name, "user": user}] if user_name else [],
        "contexts": [{"name": name, "context": copy.deepcopy(ctx)}],
        "current-context": name,
    }
    return SelectedContext(context=name, server=server, config=config, notes=notes)


def _read_bytes(ref: str, base: str, what: str, key: str) -> bytes:
    path = Path(os.path.expanduser(ref))
    if not path.is_absolute():
        path = Path(base).resolve().parent / path  # kubectl resolves relative to the file that names it
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"kubeconfig {base}: {what} {key} {path}: {exc.strerror or exc}") from exc


def _inline(section: Obj, files: dict[str, str], base: str, what: str) -> Obj:
    for key, data_key in files.items():
        ref = section.pop(key, None)
        if ref and not section.get(data_key):
            section[data_key] = base64.b64encode(_read_bytes(str(ref), base, what, key)).decode()
    return section


def _inline_token(user: Obj, base: str, what: str, notes: list[str]) -> Obj:
    ref = user.pop("tokenFile", None)
    if ref and not user.get("token"):
        user["token"] = _read_bytes(str(ref), base, what, "tokenFile").decode().strip()
        notes.append(f"{what}: the token was read from {ref} now; a token that rotates there will expire "
                     "in the saved cluster (save it again, or use --in-cluster on the cluster itself)")
    return user


def _travel_notes(user: Obj, user_name: str) -> list[str]:
    notes = []
    exec_cfg = user.get("exec")
    if isinstance(exec_cfg, dict) and exec_cfg.get("command"):
        notes.append(f"user {user_name!r} gets its credentials by running {exec_cfg['command']!r} "
                     "(an exec plugin): it must be installed, and logged in, where the flows run")
    provider = user.get("auth-provider")
    if isinstance(provider, dict):
        notes.append(f"user {user_name!r} authenticates through the auth provider "
                     f"{provider.get('name', '?')!r}, whose tokens expire: prefer a service account token")
    return notes
