"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902) over plain JSON values.

Kept here rather than taken from the ``jsonpatch`` package, which Lamia does
not depend on directly, so that errors split the way the API server's do:
a malformed patch is :class:`PatchMalformed` (400), a patch that does not
apply, a failing ``test`` included, is :class:`PatchFailed` (422).
"""

from __future__ import annotations

import copy
from typing import Any


class PatchMalformed(ValueError):
    pass


class PatchFailed(ValueError):
    pass


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _pointer(text: Any) -> list[str]:
    if not isinstance(text, str) or (text and not text.startswith("/")):
        raise PatchMalformed(f"invalid JSON pointer {text!r}: it must be empty or start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in text.split("/")[1:]]


def _index(container: list[Any], token: str, path: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchFailed(f"invalid array index {token!r} in path {path!r}")
    idx = int(token)
    if idx > len(container) or (idx == len(container) and not allow_end):
        raise PatchFailed(f"array index {idx} out of bounds in path {path!r}")
    return idx


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for tok in tokens[:-1]:
        if isinstance(node, dict) and tok in node:
            node = node[tok]
        elif isinstance(node, list):
            node = node[_index(node, tok, path, allow_end=False)]
        else:
            raise PatchFailed(f"path {path!r} does not exist: no {tok!r}")
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens, path), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, path, allow_end=False)]
    raise PatchFailed(f"path {path!r} does not exist")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _parent(doc, tokens, path), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, allow_end=True), value)
    else:
        raise PatchFailed(f"cannot add at {path!r}: its parent is not an object or array")
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise PatchFailed("cannot remove the whole document")
    parent, last = _parent(doc, tokens, path), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, path, allow_end=False)]
    else:
        raise PatchFailed(f"cannot remove {path!r}: it does not exist")
    return doc


def _json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: 1 equals 1.0 but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchMalformed("a JSON patch must be a JSON array of operations")
    doc = copy.deepcopy(target)
    for n, op in enumerate(operations):
        if not isinstance(op, dict) or not isinstance(op.get("op"), str) or "path" not in op:
            raise PatchMalformed(f"operation {n} must be an object with 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchMalformed(f"operation {n} ({kind} {path}) lacks 'value'")
        if kind in ("move", "copy") and "from" not in op:
            raise PatchMalformed(f"operation {n} ({kind} {path}) lacks 'from'")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            value = copy.deepcopy(op["value"])
            doc = _add(_remove(doc, path), path, value) if _pointer(path) else value
        elif kind == "move":
            src = op["from"]
            if path != src and path.startswith(src + "/"):
                raise PatchFailed(f"cannot move {src!r} into its own child {path!r}")
            value = _get(doc, src)
            doc = _add(_remove(doc, src), path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            actual = _get(doc, path)
            if not _json_equal(actual, op["value"]):
                raise PatchFailed(f"testing value {path} failed: expected {op['value']!r}, found {actual!r}")
        else:
            raise PatchMalformed(f"unexpected kind of operation {kind!r} (operation {n})")
    return doc
