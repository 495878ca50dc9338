"""Istio manifests for a gateway: a DestinationRule and a VirtualService, as plain dicts.

The DestinationRule has one subset per version (``name: <version>``, selecting
pods labelled ``version: <version>``). Rendering onto an existing one keeps
everything else: its metadata, resourceVersion, trafficPolicy and subsets not
named like a version; a subset named like a version keeps its other fields.

In a VirtualService Lamia owns only the HTTP routes named ``lamia-<route>``,
and of those only ``name``, ``match`` and ``route`` (per destination, only the
weight, and host/subset when it adds one). Every other route and field is
left as it was. Rendering onto an existing VirtualService follows this rule:

1. Lamia's default route takes the *default slot*: where a ``lamia-`` route
   without match already is; else the place of an adoptable catch-all (the
   first route without match, unnamed, sending traffic only to subsets of the
   application's host, with weights summing to 100); else the end. Adopting
   replaces the catch-all, and :func:`gateway_from_virtual_service` reads its
   weights as the default route's, so adopting a hand-written 90/10 split keeps
   it 90/10.
2. Foreign routes with a match stay where they are, so a hand-written
   ``end-user: jason`` route placed before the catch-all keeps winning.
3. Lamia's conditional routes keep their positions on re-render when their
   order still agrees with the gateway's; a new one goes right before the next
   Lamia route that follows it in the gateway's order (so, usually, right before
   the default route, after foreign conditional routes). If their order on the
   cluster disagrees with the gateway's, they are all moved before the default.
4. Lamia routes that the gateway no longer has are removed.
5. A foreign route that matches every request (no match, ``uri: {prefix: /}``,
   ``uri: {regex: .*}``) placed before Lamia's routes would swallow their
   traffic; that VirtualService is refused with InvalidInput naming the route.
   An unnamed one splitting between subsets of the host is the catch-all of 1.
6. A delegate VirtualService (no ``hosts``, used through another
   VirtualService's ``delegate``) stays host-less: adding hosts would turn it
   into a root and break the delegation. A VirtualService routing only TCP or
   TLS traffic is refused: Lamia's HTTP weights would not govern it.

Labels: another owner's labels (Helm's ``app.kubernetes.io/managed-by``) are
never changed. Lamia marks every object it writes with its own ``lamia.io/*``
labels, and sets ``app.kubernetes.io/managed-by: lamia`` only on objects it
creates.

Which objects are the gateway (:func:`pick_virtual_service`,
:func:`pick_destination_rule`): the VirtualService whose ``hosts`` name the
application's Service (short name or FQDN), or the delegate it hands the host
to, or a delegate routing to the host; the DestinationRule whose ``host`` is
the Service. More than one candidate is refused: Lamia never creates a second
gateway for a host, since Istio then silently drops one of them.

Every destination named in a route's weights is rendered, weight 0 included,
so the split is visible; Weights guarantee a sum of 100, hence at least one
destination with traffic, which Istio requires. The condition text of each
Lamia route is kept as JSON (route name → text) in the annotation
``lamia.io/conditions``, since the compiled ``match`` cannot be turned back into
what the user wrote.
"""

from __future__ import annotations

import copy
import json
from typing import Final

from lamia_core._base import Obj
from lamia_core.errors import InvalidInput
from lamia_core.models import DEFAULT_ROUTE, ROUTE_PREFIX, Application, Gateway, Route, Weights

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSION = "v1"
ISTIO_API = f"{ISTIO_GROUP}/{ISTIO_VERSION}"
VIRTUAL_SERVICE: Final = "VirtualService"
DESTINATION_RULE: Final = "DestinationRule"
PLURALS = {VIRTUAL_SERVICE: "virtualservices", DESTINATION_RULE: "destinationrules"}

#: Kubernetes' recommended ownership label: set only on objects Lamia creates.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "lamia"
#: Lamia's own marks, on every object it writes.
MANAGED_LABEL = "lamia.io/managed"
APP_LABEL = "lamia.io/app"
CONDITIONS_ANNOTATION = "lamia.io/conditions"
VERSION_LABEL = "version"

# Keys of an HTTP route that send traffic somewhere other than its ``route`` destinations.
_NOT_A_SPLIT = ("redirect", "directResponse", "delegate")



def virtual_service_name(app: Application) -> str:
    """The one found for the app's host; else named like the Service (always a valid object name)."""
    return app.virtual_service or app.service_name


def destination_rule_name(app: Application) -> str:
    return app.destination_rule or app.service_name


def host_aliases(app: Application) -> frozenset[str]:
    """The names under which a VirtualService may refer to the application's Service."""
    h, ns = app.host, app.namespace
    return frozenset({h, f"{h}.{ns}", f"{h}.{ns}.svc", f"{h}.{ns}.svc.cluster.local"})


def _describe(obj: Obj, kind: str) -> str:
    meta = obj.get("metadata") or {}
    return f"{kind} {meta.get('namespace', '?')}/{meta.get('name', '?')}"


def _start(kind: str, name: str, app: Application, existing: Obj | None) -> Obj:
    """A deep copy of ``existing`` (or a new object) with Lamia's labels set, no one else's changed."""
    obj: Obj = copy.deepcopy(existing) if existing else {}
    obj["apiVersion"] = ISTIO_API
    obj["kind"] = kind
    meta = obj.setdefault("metadata", {})
    meta.setdefault("name", name)
    meta.setdefault("namespace", app.namespace)
    labels = {**(meta.get("labels") or {}), MANAGED_LABEL: "true", APP_LABEL: app.name}
    if not existing:
        labels.setdefault(MANAGED_BY_LABEL, MANAGED_BY)
    meta["labels"] = labels
    if not isinstance(obj.get("spec"), dict):
        obj["spec"] = {}
    return obj


# --- DestinationRule -------------------------------------------------------------------------


def render_destination_rule(app: Application, existing: Obj | None = None) -> Obj:
    """The DestinationRule with one subset per version of ``app``, rendered onto ``existing``."""
    dr = _start(DESTINATION_RULE, destination_rule_name(app), app, existing)
    owner = None if existing is None else controller_of(existing)
    if owner:
        raise InvalidInput(f"{_describe(dr, DESTINATION_RULE)} is generated by {owner}, whose controller "
                           "rewrites it; Lamia will not take it over")
    spec = dr["spec"]
    host = spec.get("host")
    if existing and host and host not in host_aliases(app):
        raise InvalidInput(
            f"{_describe(dr, DESTINATION_RULE)} is for host {host!r}, not for application "
            f"{app.name!r}'s service {app.host!r}; Lamia will not take it over"
        )
    spec["host"] = host or app.host
    versions = app.version_names
    subsets: list[Obj] = []
    for s in spec.get("subsets") or []:
        name = s.get("name")
        if name in versions:
            s = {**s, "labels": {**(s.get("labels") or {}), VERSION_LABEL: name}}
        subsets.append(s)
    present = {s.get("name") for s in subsets}
    subsets.extend({"name": v, "labels": {VERSION_LABEL: v}} for v in versions if v not in present)
    spec["subsets"] = subsets
    return dr


# --- VirtualService: rendering ---------------------------------------------------------------


def _ordered(app: Application, weights: Weights) -> list[str]:
    """Destinations in the application's version order, so re-renders give stable diffs."""
    known = [v for v in app.version_names if v in weights.root]
    return known + [v for v in weights.versions if v not in known]


def _render_destinations(app: Application, weights: Weights, existing: list[Obj]) -> list[Obj]:
    aliases = host_aliases(app)
    by_subset: dict[str, Obj] = {}
    for d in existing:
        dest = d.get("destination") or {}
        if dest.get("host") in aliases and isinstance(dest.get("subset"), str):
            by_subset.setdefault(dest["subset"], d)
    out: list[Obj] = []
    for v in _ordered(app, weights):
        old = by_subset.get(v)
        d = copy.deepcopy(old) if old else {"destination": {"host": app.host, "subset": v}}
        d["weight"] = weights[v]
        out.append(d)
    return out


def _render_route(route: Route, app: Application, existing: Obj | None) -> Obj:
    """``route`` as an HTTP route, keeping fields Lamia does not own from ``existing``."""
    old = existing or {}
    out: Obj = {"name": route.istio_name}
    if route.match:
        out["match"] = [copy.deepcopy(m) for m in route.match]
    out["route"] = _render_destinations(app, route.weights, old.get("route") or [])
    for k, v in old.items():
        if k not in ("name", "match", "route"):
            out[k] = copy.deepcopy(v)
    return out


def _is_lamia(r: Obj) -> bool:
    name = r.get("name")
    return isinstance(name, str) and name.startswith(ROUTE_PREFIX)


def _has_match(r: Obj) -> bool:
    return bool(r.get("match"))


# Path regexes that match every request path (RE2, whole value; a path is never empty).
_ALL_PATHS = frozenset({".*", ".+", "/.*", "(.*)", "/(.*)", "/?.*", "(/.*)"})


def _matches_every_request(m: Obj) -> bool:
    """Whether one HTTPMatchRequest lets every request through: nothing but a trivial ``uri``."""
    if set(m) - {"name", "uri", "ignoreUriCase"}:
        return False
    uri = m.get("uri")
    if not uri:
        return True
    if not isinstance(uri, dict) or len(uri) != 1:
        return False
    (kind, value), = uri.items()
    if kind == "prefix":
        return value in ("", "/")
    if kind == "regex" and isinstance(value, str):
        return value.removeprefix("^").removesuffix("$") in _ALL_PATHS
    return False


def matches_everything(r: Obj) -> bool:
    """Whether an HTTP route takes every request that reaches it (no match, or a match of all)."""
    match = r.get("match")
    if not match:
        return True
    return isinstance(match, list) and any(isinstance(m, dict) and _matches_every_request(m) for m in match)


def _catch_all(http: list[Obj], app: Application) -> tuple[int, Weights] | None:
    """The adoptable catch-all (index and weights): the first foreign route matching every request,
    when it is unnamed and splits traffic between subsets of the application's host."""
    for i, r in enumerate(http):
        if _is_lamia(r) or not matches_everything(r):
            continue
        if r.get("name"):
            return None
        try:
            return i, _weights_of(r, app, "", i)
        except InvalidInput:
            return None
    return None


_DEFAULT_SLOT = "\0default"


def render_virtual_service(gateway: Gateway, existing: Obj | None = None) -> Obj:
    """The VirtualService for ``gateway``, rendered onto ``existing`` (see the module docstring)."""
    app = gateway.application
    vs = _start(VIRTUAL_SERVICE, virtual_service_name(app), app, existing)
    spec = vs["spec"]
    problem = None if existing is None else unadoptable(app, existing)
    if problem:
        raise InvalidInput(f"{_describe(vs, VIRTUAL_SERVICE)} exists but Lamia cannot adopt it: {problem}")
    if existing is None:
        spec["hosts"] = [app.host]
    # An existing one keeps its hosts; a delegate has none and must keep none.

    conditions = {r.name: r.condition for r in gateway.routes if r.condition is not None}
    annotations = dict(vs["metadata"].get("annotations") or {})
    annotations.pop(CONDITIONS_ANNOTATION, None)
    if conditions:
        annotations[CONDITIONS_ANNOTATION] = json.dumps(conditions, sort_keys=True)
    if annotations:
        vs["metadata"]["annotations"] = annotations
    else:
        vs["metadata"].pop("annotations", None)

    spec["http"] = _merge_http(gateway, spec.get("http") or [], _describe(vs, VIRTUAL_SERVICE))
    return vs


def _merge_http(gateway: Gateway, http: list[Obj], where: str) -> list[Obj]:
    app = gateway.application
    conditional = [r.istio_name for r in gateway.routes[:-1]]
    old: dict[str, Obj] = {}  # previous dict of each Lamia slot, to keep fields Lamia does not own
    slots: list[Obj | str] = []  # foreign routes as they were, or the name of a Lamia route
    has_lamia_default = any(_is_lamia(r) and not _has_match(r) for r in http)
    found = None if has_lamia_default else _catch_all(http, app)
    catch_all = found[0] if found else None
    for i, r in enumerate(http):
        if i == catch_all or (_is_lamia(r) and not _has_match(r)):
            if _DEFAULT_SLOT not in old:
                old[_DEFAULT_SLOT] = r
                slots.append(_DEFAULT_SLOT)
        elif _is_lamia(r):
            if r["name"] in conditional and r["name"] not in old:
                old[r["name"]] = r
                slots.append(r["name"])
        else:
            slots.append(r)
    if _DEFAULT_SLOT not in slots:
        slots.append(_DEFAULT_SLOT)

    d = slots.index(_DEFAULT_SLOT)
    placed = [s for s in slots[:d] if isinstance(s, str)]
    misplaced = any(isinstance(s, str) for s in slots[d + 1:])
    if misplaced or placed != [n for n in conditional if n in placed]:
        slots = [s for s in slots if not isinstance(s, str) or s == _DEFAULT_SLOT]
    anchor = _DEFAULT_SLOT
    for name in reversed(conditional):
        if name not in slots:
            slots.insert(slots.index(anchor), name)
        anchor = name

    routes = {r.istio_name: r for r in gateway.routes}
    routes[_DEFAULT_SLOT] = gateway.default_route
    out: list[Obj] = []
    for i, s in enumerate(slots):
        if isinstance(s, str):
            out.append(_render_route(routes[s], app, old.get(s)))
            continue
        if matches_everything(s) and any(isinstance(t, str) for t in slots[i:]):
            what = "has no match" if not _has_match(s) else "matches every request"
            raise InvalidInput(
                f"{where}: HTTP route {_route_label(s, http.index(s))} {what} and comes before Lamia's "
                "routes, so they would never be used; Lamia adopts only an unnamed catch-all that routes "
                f"to subsets of host {app.host!r} with weights summing to 100. Move or remove that route"
            )
        out.append(s)
    return out


def _destination_label(d: Obj) -> str:
    dest = d.get("destination") or {}
    where = str(dest.get("host", "?")) + (f"/{dest['subset']}" if dest.get("subset") else "")
    return where + (f" {d['weight']}" if "weight" in d else "")


def _route_label(r: Obj, index: int | None = None) -> str:
    """A route as a person finds it in the YAML: its name, else its position and what it does."""
    name = r.get("name")
    if name:
        return repr(name)
    parts = ["unnamed"]
    if r.get("match"):
        parts.append(f"{len(r['match'])} match entr{'y' if len(r['match']) == 1 else 'ies'}")
    dests = [_destination_label(d) for d in r.get("route") or [] if isinstance(d, dict)]
    kinds = [k for k in _NOT_A_SPLIT if k in r]
    if dests:
        parts.append("to " + ", ".join(dests))
    parts.extend(kinds)
    at = f"#{index + 1} " if index is not None else ""
    return f"{at}({', '.join(parts)})"


# --- which objects are the gateway -------------------------------------------------------------


def _hosts(vs: Obj) -> list[str]:
    hosts = (vs.get("spec") or {}).get("hosts") or []
    return [h for h in hosts if isinstance(h, str)]


def routes_host(vs: Obj, app: Application) -> bool:
    """Whether ``vs`` routes the application's Service (its hosts name it)."""
    return bool(host_aliases(app) & set(_hosts(vs)))


def _destination_hosts(vs: Obj) -> set[str]:
    out: set[str] = set()
    for r in (vs.get("spec") or {}).get("http") or []:
        for d in (r.get("route") or []) if isinstance(r, dict) else []:
            host = (d.get("destination") or {}).get("host") if isinstance(d, dict) else None
            if isinstance(host, str):
                out.add(host)
    return out


def is_delegate_for(vs: Obj, app: Application) -> bool:
    """A delegate (no hosts) whose routes send traffic to the application's Service."""
    return not _hosts(vs) and bool(host_aliases(app) & _destination_hosts(vs))


def _delegated_to(vs: Obj, namespace: str) -> list[tuple[str, str]]:
    out = []
    for r in (vs.get("spec") or {}).get("http") or []:
        target = r.get("delegate") if isinstance(r, dict) else None
        if isinstance(target, dict) and target.get("name"):
            out.append((str(target.get("namespace") or namespace), str(target["name"])))
    return out


def _names(objs: list[Obj]) -> str:
    return ", ".join(sorted(str((o.get("metadata") or {}).get("name")) for o in objs))


def pick_virtual_service(app: Application, candidates: list[Obj]) -> Obj | None:
    """The VirtualService that is the app's gateway among ``candidates`` (those of its namespace).

    The one routing the app's host; if that one hands the host to a delegate
    routing to the app, the delegate; else a delegate routing to the app. None
    when there is none (Lamia creates one); InvalidInput when there are several,
    naming them, since Istio would keep one of them and drop the others.
    """
    ns = app.namespace
    rooted = [vs for vs in candidates if routes_host(vs, app)]
    if len(rooted) > 1:
        raise InvalidInput(
            f"host {app.host!r} of application {app.name!r} is routed by several VirtualServices in "
            f"namespace {ns!r} ({_names(rooted)}); Istio uses only one of them. Merge them into one and "
            "try again"
        )
    delegates = [vs for vs in candidates if is_delegate_for(vs, app)]
    if rooted:
        handed = set(_delegated_to(rooted[0], ns))
        chosen = [d for d in delegates
                  if (str(d["metadata"].get("namespace") or ns), d["metadata"]["name"]) in handed]
        if len(chosen) > 1:
            raise InvalidInput(
                f"VirtualService {ns}/{rooted[0]['metadata']['name']} delegates host {app.host!r} to several "
                f"VirtualServices ({_names(chosen)}); Lamia can manage the weights of one route only"
            )
        return chosen[0] if chosen else rooted[0]
    if len(delegates) > 1:
        raise InvalidInput(
            f"several delegate VirtualServices in namespace {ns!r} route to host {app.host!r} "
            f"({_names(delegates)}); Lamia cannot tell which one is the application's"
        )
    return delegates[0] if delegates else None


def pick_destination_rule(app: Application, candidates: list[Obj]) -> Obj | None:
    """The DestinationRule for the app's host among ``candidates``; None when there is none."""
    aliases = host_aliases(app)
    found = [dr for dr in candidates if (dr.get("spec") or {}).get("host") in aliases]
    if len(found) > 1:
        raise InvalidInput(
            f"host {app.host!r} of application {app.name!r} has several DestinationRules in namespace "
            f"{app.namespace!r} ({_names(found)}); merge them into one and try again"
        )
    return found[0] if found else None


def controller_of(obj: Obj) -> str | None:
    """The controlling owner of an object (Flagger's Canary, an operator's resource), as "Kind name"."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            group = str(ref.get("apiVersion", "")).split("/")[0]
            return f"{ref.get('kind', '?')} {ref.get('name', '?')}" + (f" ({group})" if group else "")
    return None


def unadoptable(app: Application, vs: Obj) -> str | None:
    """Why Lamia cannot manage ``vs`` at all, or None. (A route in the way is found when rendering.)"""
    spec = vs.get("spec") or {}
    hosts = _hosts(vs)
    owner = controller_of(vs)
    if owner:
        return (f"it is generated by {owner}, whose controller rewrites it: Lamia would fight it. Let that "
                "controller run the release, or remove it first")
    if hosts and not routes_host(vs, app):
        return (f"it routes hosts {', '.join(hosts)}, not application {app.name!r}'s service {app.host!r}; "
                "Lamia will not take it over")
    if not hosts and not is_delegate_for(vs, app) and spec.get("http"):
        return f"it has no hosts and none of its routes goes to host {app.host!r}"
    if not spec.get("http") and (spec.get("tcp") or spec.get("tls")):
        kinds = " and ".join(k.upper() for k in ("tcp", "tls") if spec.get(k))
        return (f"it routes only {kinds} traffic; Lamia's weights are HTTP route weights and would not "
                "govern that traffic")
    return None


def describe_unadopted(app: Application, vs: Obj) -> str:
    """Why a VirtualService has no gateway for Lamia to read, for the "no gateway" message."""
    where = _describe(vs, VIRTUAL_SERVICE)
    problem = unadoptable(app, vs)
    if problem:
        return f"{where} exists but Lamia cannot adopt it: {problem}"
    http = (vs.get("spec") or {}).get("http") or []
    listed = "; ".join(_route_label(r, i) for i, r in enumerate(http)) or "no HTTP routes"
    return (f"{where} exists but has no route Lamia manages and no unnamed catch-all splitting traffic "
            f"between subsets of host {app.host!r} that it could adopt (its routes: {listed})")


# --- VirtualService: reading back ------------------------------------------------------------


def _weights_of(r: Obj, app: Application, where: str, index: int | None = None) -> Weights:
    """The weights of an HTTP route's destinations, all subsets of the application's host."""
    aliases = host_aliases(app)
    dests = r.get("route") or []
    label = _route_label(r, index)
    if not dests:
        raise InvalidInput(f"{where}: HTTP route {label} has no destinations")
    for key in _NOT_A_SPLIT:
        if key in r:
            raise InvalidInput(f"{where}: HTTP route {label} has {key}, it is not a traffic split")
    known = set(app.version_names)
    out: dict[str, int] = {}
    for d in dests:
        dest = d.get("destination") or {}
        host, subset = dest.get("host"), dest.get("subset")
        if host not in aliases or not isinstance(subset, str) or not subset:
            raise InvalidInput(
                f"{where}: HTTP route {label} sends traffic to {host!r} subset {subset!r}, "
                f"not to a subset of host {app.host!r}"
            )
        weight = d.get("weight")
        # Istio gives a lone destination without weight all the traffic.
        w = weight if weight is not None else (100 if len(dests) == 1 else 0)
        if isinstance(w, int) and not isinstance(w, bool):
            out[subset] = out.get(subset, 0) + w
        else:
            raise InvalidInput(f"{where}: HTTP route {label}: weight {w!r} is not an integer")
    # A version whose Deployment is gone but that gets no traffic is just history.
    out = {v: w for v, w in out.items() if w or not known or v in known}
    try:
        return Weights(out)
    except InvalidInput as exc:
        raise InvalidInput(f"{where}: HTTP route {label}: {exc}") from exc


def lamia_route(vs: Obj, route: str) -> Obj | None:
    """The HTTP route Lamia names ``lamia-<route>`` in ``vs`` as it stands, or None."""
    for r in (vs.get("spec") or {}).get("http") or []:
        if isinstance(r, dict) and r.get("name") == ROUTE_PREFIX + route:
            return r
    return None


def route_weights(app: Application, vs: Obj, route: str) -> Weights | None:
    """The weights of Lamia's route ``route`` on ``vs``; None when the route is gone or unreadable."""
    r = lamia_route(vs, route)
    if r is None:
        return None
    try:
        return _weights_of(r, app, "")
    except InvalidInput:
        return None


def conditions_of(vs: Obj) -> dict[str, str]:
    """The condition texts recorded on a VirtualService; an unreadable annotation counts as none,
    since the compiled matches, which are what Istio uses, are still there."""
    raw = ((vs.get("metadata") or {}).get("annotations") or {}).get(CONDITIONS_ANNOTATION)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, str)}


def gateway_from_virtual_service(app: Application, vs: Obj) -> Gateway | None:
    """Lamia's routes read back from ``vs`` (or an adoptable catch-all); None when it has neither."""
    where = _describe(vs, VIRTUAL_SERVICE)
    http = (vs.get("spec") or {}).get("http") or []
    conditions = conditions_of(vs)
    try:
        routes: list[Route] = []
        default: Route | None = None
        for i, r in enumerate(http):
            if not _is_lamia(r):
                continue
            name = r["name"][len(ROUTE_PREFIX):]
            weights = _weights_of(r, app, where, i)
            if not _has_match(r):
                default = default or Route(name=name, weights=weights)
            elif all(x.name != name for x in routes):
                routes.append(Route(name=name, condition=conditions.get(name),
                                    match=tuple(r["match"]), weights=weights))
        found = None if default else _catch_all(http, app)
        if found:
            default = Route(name=DEFAULT_ROUTE, weights=found[1])
        if default is None:
            if routes:
                raise InvalidInput("it has Lamia conditional routes but no default route")
            return None
        return Gateway(application=app, routes=(*routes, default))
    except InvalidInput as exc:
        msg = str(exc)
        raise InvalidInput(msg if msg.startswith(where) else f"{where}: {msg}") from exc
