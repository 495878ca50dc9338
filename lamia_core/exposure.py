"""Exposing an application outside the mesh, as pure functions over manifests (plain dicts).

Two ways in, as ``lamia expose`` offers them:

- an Istio ``Gateway`` (``networking.istio.io/v1``) on the ingress gateway's
  pods, port 80 and, with a TLS secret, 443 (``credentialName``; port 80 then
  redirects to HTTPS), with the application's VirtualService bound to it:
  ``gateways: [mesh, NS/NAME]`` and the public host added to ``hosts``. The
  same HTTP routes then serve mesh and public traffic, so a release shifts both;
- a Kubernetes ``Ingress`` (``networking.k8s.io/v1``, ``ingressClassName:
  istio``) to the application's Service, for clusters that use Ingress
  objects. Istio turns it into routes of its own to the Service, which do not
  go through the application's VirtualService: public traffic then reaches
  every version's pods, whatever the weights.

An existing Gateway that already serves the host (same selector, an HTTP or
HTTPS server whose hosts cover it) is adopted rather than a second one made, and
so is an Ingress that already routes the host to the application's Service.

What expose added is recorded on the VirtualService (annotation
:data:`EXPOSURE_ANNOTATION`): the object it used and whether it created it, and
exactly the ``hosts`` and ``gateways`` entries it added. Unexpose removes those
entries and nothing else, and deletes the object only when expose created it
(it carries :data:`OWNER_ANNOTATION` naming the application).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lamia_core.errors import InvalidInput
from lamia_core.istio import APP_LABEL, ISTIO_API, MANAGED_BY, MANAGED_BY_LABEL
from lamia_core.models import Application, check_label_value

Obj = dict[str, Any]

GATEWAY: Literal["Gateway"] = "Gateway"
INGRESS: Literal["Ingress"] = "Ingress"
INGRESS_API = "networking.k8s.io/v1"
INGRESS_CLASS = "istio"
#: The reserved gateway name for every sidecar of the mesh.
MESH = "mesh"
#: On the VirtualService: what expose added (JSON of :class:`Exposure`).
EXPOSURE_ANNOTATION = "lamia.io/exposure"
#: On a Gateway or Ingress that expose created: ``NAMESPACE/APP``, so unexpose deletes only its own.
OWNER_ANNOTATION = "lamia.io/exposed-app"
#: The pods of Istio's default ingress gateway.
DEFAULT_SELECTOR: Mapping[str, str] = {"istio": "ingressgateway"}

_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})+$")
_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_WEB = ("HTTP", "HTTPS", "HTTP2")


def check_host(host: str) -> str:
    """A public host name: lower-case DNS name with at least one dot, no wildcard, no port."""
    if not _HOST.fullmatch(host) or re.fullmatch(r"[\d.]+", host):
        raise InvalidInput(
            f"host {host!r} is not a public DNS name like shop.example.com (lower-case letters, "
            "digits, '-' and at least one '.'; no wildcard, port, scheme or IP address)"
        )
    return host


def check_object_name(kind: str, name: str) -> str:
    if not _SUBDOMAIN.fullmatch(name):
        raise InvalidInput(
            f"{kind} name {name!r} is not a valid Kubernetes object name "
            "(lower-case letters, digits, '-' and '.', at most 253 characters)"
        )
    return name


class ExposeRequest(BaseModel):
    """What ``lamia expose`` was asked for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(description="Public host name, e.g. shop.example.com")
    tls_secret: str | None = Field(
        None, description="Secret with the certificate, in the ingress gateway's namespace; adds HTTPS"
    )
    name: str | None = Field(
        None, description="Name of the Gateway (or Ingress) to use or create; default <service>-gateway"
    )
    selector: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_SELECTOR), description="Labels of the ingress gateway's pods"
    )
    ingress: bool = Field(False, description="A Kubernetes Ingress (class istio) instead of an Istio Gateway")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_host(v)

    @field_validator("tls_secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        return None if v is None else check_object_name("TLS secret", v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else check_object_name("Gateway", v)

    @field_validator("selector")
    @classmethod
    def _selector(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise InvalidInput("the ingress gateway selector names no label, e.g. istio=ingressgateway")
        for key, value in v.items():
            check_label_value("selector label", key.rpartition("/")[2])
            check_label_value(f"selector label {key!r} value", value)
        return v

    @property
    def kind(self) -> Literal["Gateway", "Ingress"]:
        return INGRESS if self.ingress else GATEWAY


def parse_selector(text: str) -> dict[str, str]:
    """``istio=ingressgateway,app=edge`` as a dict; InvalidInput naming the bad part."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InvalidInput(f"selector part {part!r} is not LABEL=VALUE (e.g. istio=ingressgateway)")
        out[key.strip()] = value.strip()
    return out


def default_name(app: Application, kind: str = GATEWAY) -> str:
    return f"{app.service_name}-{'ingress' if kind == INGRESS else 'gateway'}"


def owner(app: Application) -> str:
    return f"{app.namespace}/{app.name}"


class Exposure(BaseModel):
    """What expose did, as recorded on the VirtualService."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    kind: Literal["Gateway", "Ingress"]
    namespace: str
    name: str
    created: bool
    """Lamia created the Gateway or Ingress (unexpose deletes it); False when it adopted one."""
    tls_secret: str | None = None
    hosts_added: tuple[str, ...] = ()
    gateways_added: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """How a VirtualService names the Gateway."""
        return f"{self.namespace}/{self.name}"

    def describe(self) -> str:
        how = "created" if self.created else "adopted"
        return f"{self.host} through {self.kind} {self.ref} ({how})"


def exposure_of(vs: Obj | None) -> Exposure | None:
    """The exposure recorded on a VirtualService; InvalidInput when the record is unreadable."""
    raw = (((vs or {}).get("metadata") or {}).get("annotations") or {}).get(EXPOSURE_ANNOTATION)
    if not raw:
        return None
    try:
        return Exposure.model_validate_json(raw)
    except ValidationError as exc:
        meta = (vs or {}).get("metadata") or {}
        raise InvalidInput(
            f"VirtualService {meta.get('namespace')}/{meta.get('name')} has an unreadable "
            f"{EXPOSURE_ANNOTATION} annotation: remove it by hand, then expose again"
        ) from exc


def _owned_meta(obj: Obj, app: Application, name: str) -> None:
    meta = obj.setdefault("metadata", {})
    meta["name"] = name
    meta["namespace"] = app.namespace
    meta["labels"] = {**(meta.get("labels") or {}), MANAGED_BY_LABEL: MANAGED_BY, APP_LABEL: app.name}
    meta["annotations"] = {**(meta.get("annotations") or {}), OWNER_ANNOTATION: owner(app)}


def is_owned_by(obj: Obj | None, app: Application) -> bool:
    return (((obj or {}).get("metadata") or {}).get("annotations") or {}).get(OWNER_ANNOTATION) == owner(app)


# --- Gateway ---------------------------------------------------------------------------------


def render_gateway(app: Application, request: ExposeRequest, name: str, existing: Obj | None = None) -> Obj:
    """The Gateway expose creates, rendered onto ``existing`` (its own, from an earlier expose):
    its spec is Lamia's entirely, its other metadata is kept."""
    gw: Obj = copy.deepcopy(existing) if existing else {}
    gw["apiVersion"], gw["kind"] = ISTIO_API, GATEWAY
    _owned_meta(gw, app, name)
    http: Obj = {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [request.host]}
    servers = [http]
    if request.tls_secret:
        http["tls"] = {"httpsRedirect": True}
        servers.append({
            "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
            "hosts": [request.host],
            "tls": {"mode": "SIMPLE", "credentialName": request.tls_secret},
        })
    gw["spec"] = {"selector": dict(request.selector), "servers": servers}
    gw.pop("status", None)
    return gw


def _host_match(pattern: str, host: str) -> int | None:
    """How well a Gateway server's host covers ``host``: 0 exactly, 1 by a wildcard, 2 by ``*``."""
    if pattern == host:
        return 0
    if pattern.startswith("*.") and host.endswith(pattern[1:]):
        return 1
    return 2 if pattern == "*" else None


def serves(gateway: Obj, host: str, namespace: str) -> int | None:
    """How well ``gateway`` serves ``host`` to VirtualServices of ``namespace`` (lower is better),
    or None when it does not: an HTTP(S) server whose hosts cover it, with a namespace part
    (``ns/host``) that lets ``namespace`` bind."""
    meta = gateway.get("metadata") or {}
    best: int | None = None
    for server in (gateway.get("spec") or {}).get("servers") or []:
        protocol = str((server.get("port") or {}).get("protocol") or "").upper()
        if protocol not in _WEB:
            continue
        for entry in server.get("hosts") or []:
            ns, sep, dns = str(entry).rpartition("/")
            if sep and ns not in ("*", namespace) and not (ns == "." and meta.get("namespace") == namespace):
                continue
            quality = _host_match(dns, host)
            if quality is not None and (best is None or quality < best):
                best = quality
    return best


def find_adoptable(gateways: list[Obj], app: Application, request: ExposeRequest) -> Obj | None:
    """The Gateway serving the host on the same ingress pods that expose would adopt, if any:
    the closest host match, then one in the application's namespace, then by name.

    A Gateway that Lamia created for another application is not adopted (its
    unexpose would delete it); one serving the host is refused instead.
    """
    ranked: list[tuple[int, int, str, Obj]] = []
    for gw in gateways:
        quality = serves(gw, request.host, app.namespace)
        if quality is None or dict((gw.get("spec") or {}).get("selector") or {}) != request.selector:
            continue
        meta = gw.get("metadata") or {}
        other = (meta.get("annotations") or {}).get(OWNER_ANNOTATION)
        if other and other != owner(app):
            raise InvalidInput(
                f"host {request.host} is already exposed through Gateway {meta.get('namespace')}/"
                f"{meta.get('name')}, which Lamia created for application {other}; unexpose that first"
            )
        ranked.append((quality, 0 if meta.get("namespace") == app.namespace else 1,
                       f"{meta.get('namespace')}/{meta.get('name')}", gw))
    return min(ranked, key=lambda t: t[:3])[3] if ranked else None


# --- Ingress ---------------------------------------------------------------------------------


def render_ingress(app: Application, request: ExposeRequest, name: str, port: int | str,
                   existing: Obj | None = None) -> Obj:
    """The Ingress expose creates: the host to the application's Service on ``port``."""
    ing: Obj = copy.deepcopy(existing) if existing else {}
    ing["apiVersion"], ing["kind"] = INGRESS_API, INGRESS
    _owned_meta(ing, app, name)
    backend_port = {"number": port} if isinstance(port, int) else {"name": port}
    spec: Obj = {
        "ingressClassName": INGRESS_CLASS,
        "rules": [{"host": request.host, "http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": app.service_name, "port": backend_port}},
        }]}}],
    }
    if request.tls_secret:
        spec["tls"] = [{"hosts": [request.host], "secretName": request.tls_secret}]
    ing["spec"] = spec
    ing.pop("status", None)
    return ing


def ingress_backends(ingress: Obj, host: str) -> set[str]:
    """The Services an Ingress sends ``host`` to (empty when it has no rule for the host)."""
    out: set[str] = set()
    for rule in (ingress.get("spec") or {}).get("rules") or []:
        if rule.get("host") != host:
            continue
        for path in (rule.get("http") or {}).get("paths") or []:
            service = ((path.get("backend") or {}).get("service") or {}).get("name")
            if service:
                out.add(str(service))
    return out


def find_adoptable_ingress(ingresses: list[Obj], app: Application, host: str) -> Obj | None:
    """An Ingress of the namespace that already routes ``host`` to the application's Service;
    InvalidInput when one routes it elsewhere (two Ingresses for one host fight)."""
    for ing in sorted(ingresses, key=lambda i: str((i.get("metadata") or {}).get("name"))):
        backends = ingress_backends(ing, host)
        if not backends:
            continue
        meta = ing.get("metadata") or {}
        if backends != {app.service_name}:
            raise InvalidInput(
                f"Ingress {meta.get('namespace')}/{meta.get('name')} already routes {host} to Service "
                f"{', '.join(sorted(backends))}, not to {app.service_name}; Lamia will not add a second"
            )
        return ing
    return None


def service_port(service: Obj) -> int | str:
    """The Service port an Ingress should use: the one named ``http``, else the first."""
    ports = (service.get("spec") or {}).get("ports") or []
    meta = service.get("metadata") or {}
    if not ports:
        raise InvalidInput(f"Service {meta.get('namespace')}/{meta.get('name')} has no ports to expose")
    chosen = next((p for p in ports if p.get("name") == "http"), ports[0])
    number = chosen.get("port")
    if not isinstance(number, int):
        raise InvalidInput(f"Service {meta.get('namespace')}/{meta.get('name')} has a port without a number")
    return number


# --- the VirtualService ----------------------------------------------------------------------


def gateway_refs(vs: Obj) -> list[str]:
    """The VirtualService's gateways; an absent field (or an empty list) means the mesh only."""
    return list((vs.get("spec") or {}).get("gateways") or []) or [MESH]


def _binds(refs: list[str], exposure: Exposure, vs_namespace: str) -> bool:
    short = exposure.name if exposure.namespace == vs_namespace else None
    return exposure.ref in refs or (short is not None and short in refs)


def bind_virtual_service(vs: Obj, exposure: Exposure) -> Obj:
    """A copy of ``vs`` bound to the exposure's Gateway (Ingress: only recorded), with the record of
    exactly what was added. The exposure's own ``*_added`` fields are ignored and recomputed,
    keeping what an earlier expose of the same host and object added."""
    out = copy.deepcopy(vs)
    spec = out.setdefault("spec", {})
    meta = out.setdefault("metadata", {})
    earlier = exposure_of(vs)
    hosts_added = list(earlier.hosts_added) if earlier else []
    gateways_added = list(earlier.gateways_added) if earlier else []
    if exposure.kind == GATEWAY:
        refs = gateway_refs(out)
        had_field = bool(spec.get("gateways"))
        if not _binds(refs, exposure, str(meta.get("namespace") or "")):
            if not had_field:
                # No gateways meant the mesh: keep mesh traffic routed by naming it explicitly.
                refs = [MESH]
                gateways_added.append(MESH)
            refs.append(exposure.ref)
            gateways_added.append(exposure.ref)
            spec["gateways"] = refs
        hosts = list(spec.get("hosts") or [])
        if exposure.host not in hosts:
            hosts.append(exposure.host)
            hosts_added.append(exposure.host)
            spec["hosts"] = hosts
    record = exposure.model_copy(update={"hosts_added": tuple(dict.fromkeys(hosts_added)),
                                         "gateways_added": tuple(dict.fromkeys(gateways_added))})
    annotations = dict(meta.get("annotations") or {})
    annotations[EXPOSURE_ANNOTATION] = record.model_dump_json()
    meta["annotations"] = annotations
    return out


def unbind_virtual_service(vs: Obj) -> Obj | None:
    """A copy of ``vs`` without what the recorded exposure added; None when nothing is recorded."""
    exposure = exposure_of(vs)
    if exposure is None:
        return None
    out = copy.deepcopy(vs)
    spec = out.setdefault("spec", {})
    if "gateways" in spec:
        refs = [g for g in spec["gateways"] if g not in exposure.gateways_added]
        if refs:
            spec["gateways"] = refs
        else:
            del spec["gateways"]
    if "hosts" in spec:
        spec["hosts"] = [h for h in spec["hosts"] if h not in exposure.hosts_added]
    meta = out["metadata"]
    del meta["annotations"][EXPOSURE_ANNOTATION]
    if not meta["annotations"]:
        del meta["annotations"]
    return out


def same_target(current: Exposure, request: ExposeRequest, name: str) -> bool:
    """Whether an expose asks again for what is recorded (then it is re-applied, not refused)."""
    return current.host == request.host and current.kind == request.kind and current.name == name
