"""How Istio routes one HTTP request by a VirtualService, as pure functions.

:func:`choose` picks the first HTTP route whose ``match`` list has an entry
matching the request (``HTTPMatchRequest``: the fields of one entry are ANDed,
the entries ORed, a route without ``match`` matches everything), then a
destination by weight. Regexes are RE2 and must match the whole value, as
Envoy's ``safe_regex`` does. A header match without a value (``{}``) checks
presence; in ``withoutHeaders`` it checks absence.

:func:`applies` says whether Istio uses a VirtualService for a request at all:
its ``gateways`` must name where the request comes in (``mesh`` for sidecars,
the default when the field is absent; ``NS/NAME`` or, in the VirtualService's
own namespace, ``NAME`` for a Gateway), and at a Gateway its ``hosts`` must
cover the request's Host (authority).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import re2

from lamia_core.errors import InvalidInput


@dataclass(frozen=True)
class Request:
    """The parts of an HTTP request a VirtualService can match on. Header names are case-insensitive."""

    headers: Mapping[str, str] = field(default_factory=dict)
    path: str = "/"
    method: str = "GET"
    authority: str = ""
    query: Mapping[str, str] = field(default_factory=dict)
    scheme: str = "http"
    port: int | None = None
    source_labels: Mapping[str, str] = field(default_factory=dict)
    source_namespace: str = ""
    gateway: str = "mesh"

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers.items():
            if k.lower() == name:
                return v
        return None


MESH = "mesh"


def host_covers(pattern: str, host: str) -> bool:
    """Whether a VirtualService host (exact, ``*.example.com`` or ``*``) covers a request's Host."""
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    pattern, host = pattern.lower(), host.lower()
    if pattern == "*" or pattern == host:
        return True
    return pattern.startswith("*.") and host.endswith(pattern[1:])


def applies(virtual_service: Mapping[str, Any], req: Request) -> bool:
    """Whether Istio applies ``virtual_service`` to ``req`` (see the module docstring)."""
    spec = virtual_service.get("spec", virtual_service)
    namespace = str((virtual_service.get("metadata") or {}).get("namespace") or "")
    refs = {g if g == MESH or "/" in g else f"{namespace}/{g}" for g in (spec.get("gateways") or [MESH])}
    if req.gateway not in refs:
        return False
    return req.gateway == MESH or any(host_covers(str(h), req.authority) for h in spec.get("hosts") or [])


class Choice(NamedTuple):
    """Where a request goes: the HTTP route's name and the destination subset (None: any pod)."""

    route: str
    subset: str | None


class NoRoute(Exception):
    """No HTTP route matches, or the matching route sends traffic nowhere (Envoy answers 404/503)."""


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> Any:
    try:
        return re2.compile(pattern)
    except re2.error as exc:
        raise InvalidInput(f"invalid RE2 regular expression {pattern!r} in VirtualService: {exc}") from exc


def string_match(spec: Mapping[str, Any] | None, value: str | None, *, ignore_case: bool = False) -> bool:
    """Istio's ``StringMatch`` (exact | prefix | regex) on ``value``; None means absent.

    An empty match only asks for presence.
    """
    if value is None:
        return False
    if not spec:
        return True
    if len(spec) != 1:
        raise InvalidInput(f"a StringMatch has exactly one of exact, prefix, regex; got {dict(spec)}")
    (kind, expected), = spec.items()
    if not isinstance(expected, str):
        raise InvalidInput(f"StringMatch {kind} must be a string, got {expected!r}")
    if kind == "regex":
        return bool(_regex(expected).fullmatch(value))
    if ignore_case:
        value, expected = value.lower(), expected.lower()
    if kind == "exact":
        return value == expected
    if kind == "prefix":
        return value.startswith(expected)
    raise InvalidInput(f"unknown StringMatch kind {kind!r} (exact, prefix or regex)")


# Fields that only name or tag a match; they never affect routing.
_INERT = frozenset({"name", "statPrefix"})


def entry_matches(entry: Mapping[str, Any], req: Request) -> bool:
    """Whether one ``HTTPMatchRequest`` matches: every field given must hold."""
    for key, spec in entry.items():
        if key in _INERT:
            continue
        if key == "ignoreUriCase":
            continue
        if key == "uri":
            ok = string_match(spec, req.path, ignore_case=bool(entry.get("ignoreUriCase")))
        elif key == "method":
            ok = string_match(spec, req.method)
        elif key == "authority":
            ok = string_match(spec, req.authority)
        elif key == "scheme":
            ok = string_match(spec, req.scheme)
        elif key == "headers":
            ok = all(string_match(m, req.header(h)) for h, m in spec.items())
        elif key == "withoutHeaders":
            ok = not any(string_match(m, req.header(h)) for h, m in spec.items())
        elif key == "queryParams":
            ok = all(string_match(m, req.query.get(q)) for q, m in spec.items())
        elif key == "port":
            ok = req.port == spec
        elif key == "sourceLabels":
            ok = all(req.source_labels.get(k) == v for k, v in spec.items())
        elif key == "sourceNamespace":
            ok = req.source_namespace == spec
        elif key == "gateways":
            ok = req.gateway in spec
        else:
            raise InvalidInput(f"unsupported field {key!r} in an HTTP match of a VirtualService")
        if not ok:
            return False
    return True


def route_matches(route: Mapping[str, Any], req: Request) -> bool:
    matches = route.get("match")
    if not matches:
        return True
    return any(entry_matches(e, req) for e in matches)


def route_name(route: Mapping[str, Any], index: int) -> str:
    return str(route.get("name") or f"http[{index}]")


def pick_destination(destinations: list[Mapping[str, Any]], rng: random.Random) -> Mapping[str, Any] | None:
    """A weighted choice; a single destination without weight takes everything, as in Istio."""
    if len(destinations) == 1 and "weight" not in destinations[0]:
        return destinations[0]
    weights = [max(int(d.get("weight", 0) or 0), 0) for d in destinations]
    total = sum(weights)
    if total <= 0:
        return None
    x = rng.random() * total
    for d, w in zip(destinations, weights, strict=True):
        if x < w:
            return d
        x -= w
    return destinations[-1]


def choose(virtual_service: Mapping[str, Any], req: Request, rng: random.Random) -> Choice:
    """The route and subset ``req`` goes to; NoRoute when Envoy would not forward it.

    The destination's host is not checked: the simulator serves one application.
    """
    spec = virtual_service.get("spec", virtual_service)
    for i, route in enumerate(spec.get("http") or []):
        if not route_matches(route, req):
            continue
        name = route_name(route, i)
        dest = pick_destination(list(route.get("route") or []), rng)
        if dest is None:
            raise NoRoute(f"route {name!r} has no destination with a positive weight")
        subset = (dest.get("destination") or {}).get("subset")
        return Choice(name, subset or None)
    raise NoRoute("no HTTP route of the VirtualService matches the request")
