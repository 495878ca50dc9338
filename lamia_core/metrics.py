"""Lamia's metric names and the PromQL that measures them over Istio's standard metrics.

The names are the original Lamia's, taken from Envoy's cluster statistics
(``external_upstream_rq_2xx``, ``upstream_rq_total``...). Istio exposes the same
facts as ``istio_requests_total`` and ``istio_request_duration_milliseconds``;
each name here becomes one PromQL query over them, seen by the destination
(``reporter="destination"``) and grouped by ``destination_version``, so one query
answers for every version of an application.

Count metrics are ``increase()`` over the window and are **not rounded**:
``increase()`` extrapolates to the window's edges, so it gives e.g. 41.8 for 40
requests. Rounding would not make that exact, but would skew ratios such as
``external_upstream_rq_2xx / upstream_rq_total`` (both extrapolated alike, so
their ratio is right) and would turn a handful of requests into 0. Latencies are
in milliseconds, ``histogram_quantile`` over the rate of the duration buckets,
so they are only as precise as Istio's buckets.

No data is not zero: see :func:`combine`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Literal

from pydantic import BaseModel, ConfigDict

from lamia_core.errors import InvalidInput
from lamia_core.models import check_dns_label, check_label_value

MetricKind = Literal["count", "latency", "raw"]

#: The metric that tells which versions had traffic in the window.
TOTAL = "upstream_rq_total"
#: Istio's label of the version that answered: every query groups by it, raw queries must too.
#: (Not the pods' ``version`` label, ``lamia_core.istio.VERSION_LABEL``, from which Istio takes it.)
DESTINATION_VERSION_LABEL = "destination_version"

REQUESTS = "istio_requests_total"
DURATION_BUCKETS = "istio_request_duration_milliseconds_bucket"


class MetricDef(BaseModel):
    """One metric of the catalog.

    ``code`` is a regular expression on ``response_code`` (count metrics; None
    counts every request); ``quantile`` is the latency quantile; ``promql``, when
    set, replaces the generated query and is a template with ``{namespace}``,
    ``{app}`` and ``{window}`` whose result is grouped by ``destination_version``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    kind: MetricKind
    description: str
    code: str | None = None
    quantile: float | None = None
    promql: str | None = None


_CODE_CLASSES: dict[str, tuple[str, str]] = {
    "200": ("200", "requests answered 200 OK"),
    "2xx": ("2..", "requests answered 2xx (success)"),
    "3xx": ("3..", "requests answered 3xx (redirection)"),
    "4xx": ("4..", "requests answered 4xx (client error)"),
    "500": ("500", "requests answered 500 Internal Server Error"),
    "503": ("503", "requests answered 503 Service Unavailable"),
    "5xx": ("5..", "requests answered 5xx (server error)"),
}

# Envoy splits its statistics into external/internal by the origin of the
# request; Istio's metrics carry no such split, so all three spellings are the
# same query. ``external_`` is the form the original Lamia documented.
_PREFIXES: dict[str, str] = {
    "external_": "",
    "internal_": " (same as external_: Istio does not tell internal from external requests)",
    "": " (same as external_)",
}


def _build_catalog() -> dict[str, MetricDef]:
    cat: dict[str, MetricDef] = {}
    for prefix, note in _PREFIXES.items():
        for suffix, (regex, desc) in _CODE_CLASSES.items():
            name = f"{prefix}upstream_rq_{suffix}"
            cat[name] = MetricDef(name=name, kind="count", description=f"Number of {desc}{note}", code=regex)
    cat[TOTAL] = MetricDef(name=TOTAL, kind="count", description="Number of requests, whatever their answer")
    for q in (50, 90, 99):
        name = f"request_duration_p{q}"
        cat[name] = MetricDef(
            name=name,
            kind="latency",
            description=f"{q}th percentile of request duration in milliseconds",
            quantile=q / 100,
        )
    return dict(sorted(cat.items()))


CATALOG: Mapping[str, MetricDef] = MappingProxyType(_build_catalog())


def metric_names() -> frozenset[str]:
    """Every metric name the catalog knows."""
    return frozenset(CATALOG)


def unknown_metric(name: str) -> InvalidInput:
    return InvalidInput(f"unknown metric {name!r}; known metrics: {', '.join(sorted(CATALOG))}")


# --- validation and escaping --------------------------------------------------------------------

# Prometheus' duration syntax: units from years down to milliseconds, each at most once, in order.
_DURATION = re.compile(r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?")
_DURATION_UNITS = (365 * 86400.0, 7 * 86400.0, 86400.0, 3600.0, 60.0, 1.0, 0.001)


def duration_seconds(window: str) -> float:
    """Seconds in a Prometheus duration (``"1m30s"`` -> 90.0, ``"0s"`` -> 0.0); InvalidInput otherwise."""
    m = _DURATION.fullmatch(window) if isinstance(window, str) and window else None
    if m is None:
        raise InvalidInput(
            f"window {window!r} is not a Prometheus duration: a number and a unit "
            "(ms, s, m, h, d, w, y), e.g. 30s, 1m, 5m, 1h30m"
        )
    return sum(int(g) * unit for g, unit in zip(m.groups(), _DURATION_UNITS, strict=True) if g)


def check_window(window: str) -> str:
    """A Prometheus duration longer than zero, such as ``30s``, ``1m``, ``1h30m``; InvalidInput otherwise."""
    if duration_seconds(window) <= 0:
        raise InvalidInput(f"window {window!r} must be longer than zero")
    return window


def promql_string(value: str) -> str:
    """``value`` as a double-quoted PromQL string literal.

    PromQL strings use Go's escapes, of which JSON's are a subset.
    """
    return json.dumps(value)


def _escaped(value: str) -> str:
    return promql_string(value)[1:-1]


def _selector(namespace: str, app: str, code: str | None) -> str:
    labels = [
        'reporter="destination"',
        f"destination_workload_namespace={promql_string(namespace)}",
        f"destination_app={promql_string(app)}",
    ]
    if code is not None:
        labels.append(f"response_code=~{promql_string(code)}")
    return "{" + ",".join(labels) + "}"


_PLACEHOLDER = re.compile(r"\{(namespace|app|window)\}")


def render_template(template: str, *, namespace: str, app: str, window: str) -> str:
    """Fills ``{namespace}``, ``{app}`` and ``{window}``; other braces (label matchers) stay.

    Values are escaped for use inside a PromQL string, so ``destination_app="{app}"`` is safe.
    """
    values = {"namespace": _escaped(namespace), "app": _escaped(app), "window": window}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def metric_def(name: str, raw: Mapping[str, str] | None = None) -> MetricDef:
    """The definition of ``name``, with ``raw[name]`` (if any) as its query.

    A raw query for a name outside the catalog defines a new metric of kind ``raw``.
    """
    template = (raw or {}).get(name)
    base = CATALOG.get(name)
    if template is not None:
        if not isinstance(template, str) or not template.strip():
            raise InvalidInput(f"raw query of metric {name!r} is empty")
        if base is None:
            return MetricDef(name=name, kind="raw", description="user-supplied PromQL", promql=template)
        return base.model_copy(update={"promql": template})
    if base is None:
        raise unknown_metric(name)
    return base


def build_query(
    name: str,
    *,
    namespace: str,
    app: str,
    window: str,
    raw: Mapping[str, str] | None = None,
) -> str:
    """The PromQL for metric ``name`` of ``app`` in ``namespace`` over ``window``, by version."""
    check_window(window)
    check_dns_label("namespace", namespace)
    check_label_value("application", app)
    d = metric_def(name, raw)
    if d.promql is not None:
        return render_template(d.promql, namespace=namespace, app=app, window=window)
    if d.kind == "count":
        sel = _selector(namespace, app, d.code)
        return f"sum by ({DESTINATION_VERSION_LABEL}) (increase({REQUESTS}{sel}[{window}]))"
    assert d.quantile is not None
    sel = _selector(namespace, app, None)
    return (
        f"histogram_quantile({d.quantile:g}, sum by (le, {DESTINATION_VERSION_LABEL}) "
        f"(rate({DURATION_BUCKETS}{sel}[{window}])))"
    )


# --- from query results to values ---------------------------------------------------------------


def sample_value(text: str) -> float | None:
    """A sample value as Prometheus sends it ("12.5", "NaN", "+Inf"); non-finite is no data."""
    v = float(text)
    return v if math.isfinite(v) else None


def combine(
    names: Collection[str],
    by_name: Mapping[str, Mapping[str, float | None]],
    *,
    versions: Collection[str] | None = None,
    raw: Mapping[str, str] | None = None,
) -> dict[str, dict[str, float | None]]:
    """version → metric → value from each metric's per-version result.

    ``by_name`` must include :data:`TOTAL`. A version without requests in the
    window (no total, or a total of 0) has no data: None for every metric. A
    version with requests but no series for a count metric had none of those
    requests: 0.0. A latency (or raw metric) without a result is None.
    ``versions``, if given, are the versions reported, each one present.
    """
    totals = by_name[TOTAL]
    with_traffic = {v for v, x in totals.items() if x is not None and x > 0}
    if versions is None:
        seen: set[str] = set()
        for res in by_name.values():
            seen.update(res)
        versions = sorted(seen)
    out: dict[str, dict[str, float | None]] = {}
    for v in versions:
        row: dict[str, float | None] = {}
        for n in names:
            value: float | None = None
            if v in with_traffic:
                value = by_name[n].get(v)
                if value is None and metric_def(n, raw).kind == "count":
                    value = 0.0
            row[n] = value
        out[v] = row
    return out


# --- raw counters for the compare judge ---------------------------------------------------------

#: Labels that tell one scrape target (one proxy) from another: its counters reset together.
SCRAPE_TARGET_LABELS = ("instance", "pod")


def counter_queries(namespace: str, app: str) -> dict[str, str]:
    """Instant queries of Istio's raw counters of ``app``, per version and scrape target.

    ``requests``, ``errors`` (5xx) and ``buckets`` (the duration histogram, by ``le``) are
    sums over the series of one proxy, not ``increase()``: the compare judge takes the
    differences between two readings itself, so nothing is extrapolated and no request is
    counted twice. ``scraped`` is the time of each version's newest sample.
    """
    check_dns_label("namespace", namespace)
    check_label_value("application", app)
    by = ", ".join((DESTINATION_VERSION_LABEL, *SCRAPE_TARGET_LABELS))
    sel = _selector(namespace, app, None)
    errors = _selector(namespace, app, "5..")
    return {
        "requests": f"sum by ({by}) ({REQUESTS}{sel})",
        "errors": f"sum by ({by}) ({REQUESTS}{errors})",
        "buckets": f"sum by ({by}, le) ({DURATION_BUCKETS}{sel})",
        "scraped": f"max by ({DESTINATION_VERSION_LABEL}) (timestamp({REQUESTS}{sel}))",
    }


def no_series(namespace: str, app: str, where: str) -> str:
    """Why a reading is empty, said so that it can be checked: the series Lamia looked for."""
    return (f"Prometheus at {where} has no series {REQUESTS}{_selector(namespace, app, None)}: {app} has "
            f"served no request yet, or Prometheus does not scrape its sidecars (lamia doctor checks)")


def samples_query(namespace: str, app: str, seconds: int) -> str:
    """The raw samples of ``app``'s request counters over the last ``seconds``, to measure the scrape
    interval from their timestamps."""
    check_dns_label("namespace", namespace)
    check_label_value("application", app)
    return f"{REQUESTS}{_selector(namespace, app, None)}[{seconds}s]"
