"""The domain model: applications, versions, weights and gateways.

Terms follow the original Lamia: a *project* holds *clusters*; a *virtual
cluster* is a namespace labelled ``istio-injection=enabled``; an *application*
is the set of Deployments sharing the label ``app``, one per ``version``, each
also labelled ``deployment``; its *service* is the Kubernetes Service in front
of them; its *gateway* is Lamia's routing for it (a DestinationRule and a
VirtualService); a *policy* decides how a release moves weight.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, RootModel, model_validator

from lamia_core._base import Frozen
from lamia_core.errors import InvalidInput, WeightsError

# Kubernetes label values and DNS-1123 labels: what a version or app name may be
# so that it can be a label value, a subset name and part of a route name.
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

#: Prefix of every HTTP route Lamia owns in a VirtualService.
ROUTE_PREFIX = "lamia-"
#: Name of the catch-all route (the last one, without a condition).
DEFAULT_ROUTE = "default"


def _shown(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error must not echo megabytes back."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_label_value(kind: str, value: str) -> str:
    if not _LABEL_VALUE.fullmatch(value):
        raise InvalidInput(
            f"{kind} {_shown(value, 80)} is not a valid Kubernetes label value "
            "(letters, digits, '-', '_', '.', at most 63 characters, alphanumeric at both ends)"
        )
    return value


def check_dns_label(kind: str, value: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        raise InvalidInput(
            f"{kind} {_shown(value, 80)} is not a valid DNS-1123 label "
            "(lower-case letters, digits and '-', at most 63 characters)"
        )
    return value


def check_two_versions(baseline: str, target: str) -> None:
    """A release moves traffic from one version to another: the one rule on its two names, said the
    same way by the engine's spec and the flow's preflight."""
    if baseline == target:
        raise InvalidInput(f"baseline and target are both {target!r}: a release needs two versions")


#: Field types that validate as Kubernetes does, with Lamia's error naming the field's role.
NamespaceName = Annotated[str, AfterValidator(lambda v: check_dns_label("namespace", v))]
AppName = Annotated[str, AfterValidator(lambda v: check_label_value("application", v))]
VersionName = Annotated[str, AfterValidator(lambda v: check_label_value("version", v))]
RouteName = Annotated[str, AfterValidator(lambda v: check_dns_label("route name", v))]
ServiceName = Annotated[str, AfterValidator(lambda v: check_dns_label("service", v))]


class Version(Frozen):
    """One version of an application: the Deployment labelled ``version=<name>``."""

    name: VersionName
    deployment: str


class Application(Frozen):
    """Deployments sharing the label ``app=<name>`` in a namespace."""

    namespace: NamespaceName
    name: AppName
    versions: tuple[Version, ...] = ()
    #: The Kubernetes Service in front of the app; by convention named like the app.
    service: str | None = None
    #: The VirtualService and DestinationRule found for the Service's host, when they exist
    #: under another name than the Service's (a delegate, a hand-written object).
    virtual_service: str | None = None
    destination_rule: str | None = None

    @property
    def service_name(self) -> str:
        return self.service or self.name

    @property
    def host(self) -> str:
        """The VirtualService/DestinationRule host: the Service, short name."""
        return self.service_name

    @property
    def version_names(self) -> list[str]:
        return [v.name for v in self.versions]

    def version(self, name: str) -> Version:
        for v in self.versions:
            if v.name == name:
                return v
        known = ", ".join(self.version_names) or "none"
        raise InvalidInput(
            f"unknown version {name!r} of application {self.name!r} in namespace "
            f"{self.namespace!r} (known versions: {known})"
        )


class Weights(RootModel[dict[str, int]]):
    """Integer weights 0..100 per version that sum to exactly 100."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise WeightsError(f"weights must be a mapping of version to integer, got {type(data).__name__}")
        out: dict[str, int] = {}
        for k, v in data.items():
            if isinstance(v, bool) or not isinstance(v, int):
                if isinstance(v, str) and re.fullmatch(r"[+-]?\d+", v.strip()):
                    v = _small_int(str(k), v.strip())
                elif isinstance(v, float) and v.is_integer():
                    v = int(v)
                else:
                    raise WeightsError(f"weight of version {_shown(k)} must be an integer, got {_shown(v)}")
            out[str(k)] = v
        return out

    @model_validator(mode="after")
    def _check(self) -> Weights:
        w = self.root
        if not w:
            raise WeightsError("no weights given: name at least one version, e.g. v1=100")
        bad = {k: v for k, v in w.items() if v < 0 or v > 100}
        if bad:
            desc = ", ".join(f"{k}={v}" for k, v in bad.items())
            raise WeightsError(f"weights must be between 0 and 100: {desc}")
        for k in w:
            check_label_value("version", k)
        total = sum(w.values())
        if total != 100:
            desc = ", ".join(f"{k}={v}" for k, v in w.items())
            raise WeightsError(f"weights must sum to 100, got {total} ({desc})")
        return self

    # No __iter__ over version names: pydantic models iterate as (field, value) pairs, and
    # Prefect relies on that when it visits task arguments (dict(model)); a Weights that
    # iterated its versions crashed every task taking it unless each name was two characters.
    def __getitem__(self, version: str) -> int:
        return self.root.get(version, 0)

    def __contains__(self, version: object) -> bool:
        return version in self.root

    def __len__(self) -> int:
        return len(self.root)

    @property
    def versions(self) -> tuple[str, ...]:
        """The versions named, in order."""
        return tuple(self.root)

    def items(self) -> Iterable[tuple[str, int]]:
        return self.root.items()

    def as_dict(self) -> dict[str, int]:
        return dict(self.root)

    @classmethod
    def all_on(cls, version: str, others: Iterable[str] = ()) -> Weights:
        """100 on ``version``, 0 on each of ``others``."""
        d = {o: 0 for o in others if o != version}
        d[version] = 100
        return cls(d)

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.root.items())


def _small_int(version: str, digits: str) -> int:
    """The integer in ``digits``, refused before conversion when it has far more digits than a
    weight can (Python refuses to convert more than 4,300 digits at all)."""
    if len(digits.lstrip("+-").lstrip("0")) > 3:
        raise WeightsError(
            f"weight of version {_shown(version)} must be between 0 and 100, got {_shown(digits)}")
    return int(digits)


def parse_weights(spec: str | Iterable[str]) -> Weights:
    """Parse ``"v1=90,v2=10"`` or ``["v1=90", "v2=10"]`` into :class:`Weights`."""
    parts: list[str] = []
    items = [spec] if isinstance(spec, str) else list(spec)
    for item in items:
        parts.extend(p for p in item.split(",") if p.strip())
    if not parts:
        raise WeightsError("no weights given: expected VERSION=WEIGHT pairs such as v1=90,v2=10")
    out: dict[str, int] = {}
    for p in parts:
        name, sep, value = p.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise WeightsError(f"weight {p.strip()!r} is not of the form VERSION=WEIGHT (e.g. v1=90)")
        if name in out:
            raise WeightsError(f"version {name!r} is given more than one weight")
        if not re.fullmatch(r"[+-]?\d+", value):
            raise WeightsError(f"weight of version {_shown(name)} must be an integer, got {_shown(value)}")
        out[name] = _small_int(name, value)
    return Weights(out)


class Route(Frozen):
    """One HTTP route of a gateway.

    ``match`` is the compiled Istio ``HTTPMatchRequest`` list (see
    :mod:`lamia_core.conditions`); ``condition`` keeps the source text the user
    wrote, for display and for re-compiling. A route without a match is the
    default route and must come last.
    """

    name: RouteName = DEFAULT_ROUTE
    condition: str | None = None
    match: tuple[dict[str, Any], ...] | None = None
    weights: Weights

    @property
    def istio_name(self) -> str:
        return ROUTE_PREFIX + self.name

    @property
    def is_default(self) -> bool:
        return not self.match


class Gateway(Frozen):
    """An application's routing: ordered routes; the last, unconditional, is the default."""

    application: Application
    routes: tuple[Route, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Gateway:
        names = [r.name for r in self.routes]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise InvalidInput(f"route names must be unique, repeated: {', '.join(sorted(dup))}")
        for r in self.routes[:-1]:
            if r.is_default:
                raise InvalidInput(f"route {r.name!r} has no condition but is not the last route")
        if not self.routes[-1].is_default:
            raise InvalidInput("the last route must be the default route, without a condition")
        if self.application.versions:
            known = set(self.application.version_names)
            for r in self.routes:
                unknown = [v for v in r.weights.versions if v not in known]
                if unknown:
                    raise InvalidInput(
                        f"route {r.name!r} names unknown version(s) {', '.join(unknown)} of application "
                        f"{self.application.name!r} (known versions: {', '.join(sorted(known))})"
                    )
        return self

    @property
    def default_route(self) -> Route:
        return self.routes[-1]

    def route(self, name: str) -> Route:
        for r in self.routes:
            if r.name == name:
                return r
        raise InvalidInput(f"gateway of {self.application.name!r} has no route {name!r}")

    def with_route(self, route: Route) -> Gateway:
        """A copy with ``route`` replacing the route of that name, or added just before the default."""
        if route.is_default:
            if route.name != self.default_route.name:
                raise InvalidInput(
                    f"route {route.name!r} has no condition; only the default route may lack one"
                )
            return Gateway(application=self.application, routes=(*self.routes[:-1], route))
        if any(r.name == route.name for r in self.routes):
            routes = tuple(route if r.name == route.name else r for r in self.routes)
        else:
            routes = (*self.routes[:-1], route, self.routes[-1])
        return Gateway(application=self.application, routes=routes)

    def without_route(self, name: str) -> Gateway:
        """A copy without the conditional route ``name`` (no-op when absent)."""
        if name == self.default_route.name:
            raise InvalidInput("the default route cannot be removed")
        return Gateway(application=self.application, routes=tuple(r for r in self.routes if r.name != name))

    def with_weights(self, weights: Weights, route: str = DEFAULT_ROUTE) -> Gateway:
        """A copy with ``route``'s weights replaced."""
        self.route(route)
        routes = tuple(
            r.model_copy(update={"weights": weights}) if r.name == route else r for r in self.routes
        )
        return Gateway(application=self.application, routes=routes)
