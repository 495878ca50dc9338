"""Validate manifests against Istio's own CRD schemas, as strictly as the API server would.

The CRDs hold OpenAPI v3 *structural* schemas. To check them with jsonschema
(Draft 7) they are translated the way the API server reads them:

- an object with ``properties`` rejects unknown fields (``additionalProperties:
  false``), as with ``kubectl``'s default ``--validate=strict``, unless it is
  marked ``x-kubernetes-preserve-unknown-fields``;
- ``nullable: true`` admits null; ``x-kubernetes-int-or-string`` admits both;
- formats ``int32``/``int64`` bound integers, ``byte`` is base64;
- the CEL rules in ``x-kubernetes-validations`` that these CRDs use are
  implemented; an unknown rule fails loading instead of being skipped.

The top level (apiVersion, kind, metadata) is implicit in CRDs; it is checked
here as the API server does: the exact apiVersion and kind, a DNS-1123 name,
string label and annotation values.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_NS = {"ns": 1, "us": 1e3, "µs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def go_duration_ns(text: str) -> float | None:
    """A Go ``time.Duration`` string in nanoseconds (what CEL's ``duration()`` accepts), or None."""
    s = text[1:] if text[:1] in "+-" else text
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _DURATION_NS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        return None
    return -total if text.startswith("-") else total


def _no_star(v: Any) -> bool:
    return isinstance(v, str) and "*" not in v


def _at_most_one(*fields: str) -> Callable[[Any], bool]:
    """CEL's ``(has(self.a) ? 1 : 0) + (has(self.b) ? 1 : 0) <= 1``."""
    return lambda v: sum(1 for f in fields if f in v) <= 1


# The CEL rules these CRDs use, each as a Python predicate on ``self``.
_CEL_RULES: dict[str, Callable[[Any], bool]] = {
    # The Gateway's server TLS settings: at most one way to give certificates.
    "(has(self.tlsCertificates) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1":
        _at_most_one("tlsCertificates", "credentialNames"),
    "(has(self.credentialName) ? 1 : 0) + (has(self.credentialNames) ? 1 : 0) <= 1":
        _at_most_one("credentialName", "credentialNames"),
    "(has(self.credentialNames) ? 1 : 0) + (has(self.tlsCertificates) ? 1 : 0) <= 1":
        _at_most_one("credentialNames", "tlsCertificates"),
    "duration(self) >= duration('1ms')": lambda v: (go_duration_ns(v) or -1.0) >= 1e6,
    '!self.contains("*")': _no_star,
    'self.all(key, !key.contains("*"))': lambda v: all(_no_star(k) for k in v),
    "self.all(key, key.size() != 0)": lambda v: all(len(k) != 0 for k in v),
}


def _cel(
    validator: Any, rules: list[dict[str, Any]], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    for rule in rules:
        check = _CEL_RULES[rule["rule"]]
        ok = False
        try:
            ok = check(instance)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            yield ValidationError(f"{instance!r}: {rule.get('message') or rule['rule']}")


def _translate(node: Any) -> Any:
    """OpenAPI v3 structural schema → Draft 7 JSON schema with the API server's strictness."""
    if isinstance(node, list):
        return [_translate(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _translate(v) for k, v in node.items() if k not in ("description", "properties")}
    if "properties" in node:
        out["properties"] = {name: _translate(v) for name, v in node["properties"].items()}
    for rule in node.get("x-kubernetes-validations", []):
        if rule["rule"] not in _CEL_RULES:
            raise ValueError(f"CEL rule not implemented by the test validator: {rule['rule']}")
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _int32(v: object) -> bool:
    return not isinstance(v, int) or -(2**31) <= v < 2**31


def _int64(v: object) -> bool:
    return not isinstance(v, int) or -(2**63) <= v < 2**63


def _byte(v: object) -> bool:
    if not isinstance(v, str):
        return True
    try:
        base64.b64decode(v, validate=True)
    except binascii.Error:
        return False
    return True


_formats = FormatChecker()
for _name, _check in (("int32", _int32), ("int64", _int64), ("byte", _byte)):
    _formats.checks(_name)(_check)

_Validator = jsonschema.validators.extend(Draft7Validator, {"x-kubernetes-validations": _cel})


class IstioValidator:
    """Validates manifests of the kinds in a CRD file, for one API version (``v1``)."""

    def __init__(
        self, crds_path: Path, version: str = "v1",
        kinds: tuple[str, ...] = ("VirtualService", "DestinationRule", "Gateway"),
    ) -> None:
        self.version = version
        self.schemas: dict[str, dict[str, Any]] = {}
        # libyaml's loader: the pure-Python one takes seconds on this half-megabyte file.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        for doc in yaml.load_all(crds_path.read_text(), Loader=loader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            kind = spec["names"]["kind"]
            if kind not in kinds:
                continue
            for v in spec["versions"]:
                if v["name"] == version:
                    self.schemas[kind] = self._wrap(spec["group"], kind, v["schema"]["openAPIV3Schema"])
        self._validators = {k: _Validator(s, format_checker=_formats) for k, s in self.schemas.items()}

    def _wrap(self, group: str, kind: str, schema: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = _translate(schema)
        body["properties"] = {
            "apiVersion": {"const": f"{group}/{self.version}"},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "maxLength": 253, "pattern": _DNS_SUBDOMAIN},
                    "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            **body["properties"],
        }
        body["required"] = ["apiVersion", "kind", "metadata", "spec"]
        body["additionalProperties"] = False
        return body

    def errors(self, manifest: dict[str, Any]) -> list[str]:
        """Every violation, each as ``path: message``; empty when valid."""
        kind = manifest.get("kind")
        validator = self._validators.get(kind) if isinstance(kind, str) else None
        if validator is None:
            return [f"kind {kind!r} is not one of {sorted(self._validators)}"]
        return [
            "/".join(str(p) for p in e.absolute_path) + ": " + e.message
            for e in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))
        ]

    def validate(self, manifest: dict[str, Any]) -> None:
        errs = self.errors(manifest)
        if errs:
            raise AssertionError("manifest does not satisfy Istio's CRD schema:\n  " + "\n  ".join(errs))


@pytest.fixture(scope="session")
def istio_validator(istio_crds_path: Path) -> IstioValidator:
    return IstioValidator(istio_crds_path)


#: The Kubernetes release whose schemas built-in kinds are checked against: the emulator's.
KUBERNETES_VERSION = "1.31"


def kubernetes_errors(manifest: dict[str, Any]) -> list[str]:
    """Violations of Kubernetes' own schema for a built-in kind (an Ingress), strictly: unknown
    fields are errors, as with ``kubectl --validate=strict``.

    The schemas are the JSON-schema form of the Kubernetes OpenAPI document, as
    the ``kubernetes-validate`` package ships them per release.
    """
    import kubernetes_validate

    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return [f"{where}: {exc.message}"]
    return []
