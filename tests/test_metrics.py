"""The metric catalog, PromQL building and the no-data rules, without a server.

That Prometheus accepts these queries and that they measure the right thing is
tested against a real Prometheus in test_prometheus.py.
"""

from __future__ import annotations

import json
import re

import pytest
import re2

from lamia_core.errors import InvalidInput
from lamia_core.metrics import (
    CATALOG,
    TOTAL,
    build_query,
    check_window,
    combine,
    duration_seconds,
    metric_def,
    metric_names,
    promql_string,
    render_template,
)

CODES = ["200", "201", "204", "301", "304", "400", "404", "429", "500", "502", "503", "504"]


def q(name: str, **kw: str) -> str:
    args = {"namespace": "shop", "app": "cart", "window": "1m", **kw}
    return build_query(name, **args)


def test_catalog_has_the_original_names_and_every_entry_is_consistent() -> None:
    names = metric_names()
    for expected in [
        "external_upstream_rq_200", "external_upstream_rq_2xx", "upstream_rq_3xx",
        "external_upstream_rq_3xx", "external_upstream_rq_4xx", "external_upstream_rq_500",
        "external_upstream_rq_503", "external_upstream_rq_5xx", "upstream_rq_total",
        "internal_upstream_rq_2xx", "internal_upstream_rq_5xx",
        "request_duration_p50", "request_duration_p90", "request_duration_p99",
    ]:
        assert expected in names
    assert names == frozenset(CATALOG)
    for name, d in CATALOG.items():
        assert d.name == name and d.description
        assert (d.kind == "latency") == (d.quantile is not None)
        if d.kind == "count" and name != TOTAL:
            assert d.code is not None
    with pytest.raises(TypeError):
        CATALOG["x"] = CATALOG[TOTAL]  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(n for n, d in CATALOG.items() if d.kind == "count" and d.code))
def test_code_regexes_select_the_codes_their_name_says(name: str) -> None:
    suffix = name.rsplit("_", 1)[1]
    code = CATALOG[name].code
    assert code is not None
    selected = [c for c in CODES if re2.fullmatch(code, c)]
    if suffix.endswith("xx"):
        assert selected == [c for c in CODES if c[0] == suffix[0]]
    else:
        assert selected == [suffix]
    # The query selects on exactly that regex.
    assert f'response_code=~{json.dumps(code)}' in q(name)


def test_aliases_give_the_same_query() -> None:
    for code in ("200", "2xx", "3xx", "4xx", "500", "503", "5xx"):
        queries = {q(f"{p}upstream_rq_{code}") for p in ("external_", "internal_", "")}
        assert len(queries) == 1


def test_count_query_shape() -> None:
    promql = q("external_upstream_rq_2xx", window="5m")
    assert promql.startswith("sum by (destination_version) (increase(istio_requests_total{")
    assert promql.endswith("}[5m]))")
    for label in ('reporter="destination"', 'destination_workload_namespace="shop"', 'destination_app="cart"',
                  'response_code=~"2.."'):
        assert label in promql
    assert "response_code" not in q(TOTAL)


def test_latency_query_shape() -> None:
    for n, quantile in (("50", "0.5"), ("90", "0.9"), ("99", "0.99")):
        promql = q(f"request_duration_p{n}", window="30s")
        assert promql.startswith(f"histogram_quantile({quantile}, sum by (le, destination_version) (rate(")
        assert "istio_request_duration_milliseconds_bucket{" in promql
        assert promql.endswith("}[30s])))")
        assert "response_code" not in promql


@pytest.mark.parametrize("window", ["30s", "1m", "5m", "1h30m", "500ms", "2d", "1w", "1y"])
def test_valid_windows(window: str) -> None:
    assert check_window(window) == window
    assert f"[{window}]" in q(TOTAL, window=window)


@pytest.mark.parametrize(
    ("window", "seconds"),
    [("30s", 30.0), ("1m30s", 90.0), ("1h30m", 5400.0), ("500ms", 0.5), ("2d", 172800.0),
     ("1w", 604800.0), ("1y", 31536000.0), ("0s", 0.0), ("1h0m5s", 3605.0)],
)
def test_duration_seconds(window: str, seconds: float) -> None:
    assert duration_seconds(window) == seconds


@pytest.mark.parametrize("window", ["", "1", "m", " 1m", "1m\n", "30s1m", "1.5m", "ms"])
def test_duration_seconds_refuses_what_is_not_a_duration(window: str) -> None:
    with pytest.raises(InvalidInput, match="is not a Prometheus duration"):
        duration_seconds(window)


@pytest.mark.parametrize(
    "window", ["", "1", "m", "1 m", "-1m", "1.5m", "1M", "5m]", "0s", "0m0s", "30s1m", "1m;", "1m\n"]
)
def test_invalid_windows(window: str) -> None:
    with pytest.raises(InvalidInput, match="window"):
        q(TOTAL, window=window)


def test_unknown_metric_lists_the_known_ones() -> None:
    with pytest.raises(InvalidInput) as err:
        q("upstream_rq_6xx")
    msg = str(err.value)
    assert "'upstream_rq_6xx'" in msg
    assert all(n in msg for n in metric_names())


def test_names_are_validated() -> None:
    with pytest.raises(InvalidInput, match="namespace"):
        q(TOTAL, namespace='x"}')
    with pytest.raises(InvalidInput, match="application"):
        q(TOTAL, app='a"b')


@pytest.mark.parametrize("value", ['plain', 'quote"inside', "back\\slash", "new\nline", "tab\t", "é ü"])
def test_promql_strings_round_trip(value: str) -> None:
    literal = promql_string(value)
    assert literal.startswith('"') and literal.endswith('"')
    # Go's string escapes, which PromQL uses, read JSON's escapes the same way.
    assert json.loads(literal) == value
    assert re.fullmatch(r'"(?:[^"\\\n]|\\.)*"', literal)


def test_raw_template_fills_placeholders_escaped_and_keeps_label_braces() -> None:
    t = 'sum by (destination_version) (rate(m{app="{app}",ns="{namespace}",x="{other}"}[{window}]))'
    out = render_template(t, namespace="shop", app='we"ird', window="2m")
    assert out == 'sum by (destination_version) (rate(m{app="we\\"ird",ns="shop",x="{other}"}[2m]))'


def test_raw_overrides_a_catalog_metric_and_defines_new_ones() -> None:
    raw = {
        "external_upstream_rq_5xx": 'custom5xx{a="{app}"}[{window}]',
        "saturation": 'sat{n="{namespace}"}',
    }
    assert q("external_upstream_rq_5xx") != build_query(
        "external_upstream_rq_5xx", namespace="shop", app="cart", window="1m", raw=raw)
    assert build_query("external_upstream_rq_5xx", namespace="shop", app="cart", window="1m", raw=raw) == \
        'custom5xx{a="cart"}[1m]'
    assert metric_def("external_upstream_rq_5xx", raw).kind == "count"
    assert metric_def("saturation", raw).kind == "raw"
    assert build_query("saturation", namespace="shop", app="cart", window="1m", raw=raw) == 'sat{n="shop"}'
    with pytest.raises(InvalidInput, match="empty"):
        metric_def("x", {"x": "  "})
    with pytest.raises(InvalidInput, match="window"):
        build_query("saturation", namespace="shop", app="cart", window="soon", raw=raw)


# --- combine: no data is not zero ---------------------------------------------------------------


def test_a_version_without_requests_has_no_data_for_any_metric() -> None:
    names = ["external_upstream_rq_5xx", "request_duration_p99", TOTAL]
    by_name = {
        TOTAL: {"v1": 100.0, "v2": 0.0},
        "external_upstream_rq_5xx": {"v2": 3.0},  # inconsistent on purpose: no requests wins
        "request_duration_p99": {"v1": 12.0},
    }
    out = combine(names, by_name)
    assert out == {
        "v1": {"external_upstream_rq_5xx": 0.0, "request_duration_p99": 12.0, TOTAL: 100.0},
        "v2": {"external_upstream_rq_5xx": None, "request_duration_p99": None, TOTAL: None},
    }


def test_counts_missing_for_a_version_with_requests_are_zero_but_latency_is_not() -> None:
    names = ["external_upstream_rq_2xx", "request_duration_p50"]
    by_name = {TOTAL: {"v1": 10.0}, "external_upstream_rq_2xx": {}, "request_duration_p50": {"v1": None}}
    assert combine(names, by_name) == {"v1": {"external_upstream_rq_2xx": 0.0, "request_duration_p50": None}}


def test_requested_versions_are_all_reported_and_only_them() -> None:
    by_name = {TOTAL: {"v1": 10.0, "v2": 5.0}, "external_upstream_rq_2xx": {"v1": 10.0, "v2": 5.0}}
    out = combine(["external_upstream_rq_2xx"], by_name, versions=["v2", "v9"])
    assert out == {"v2": {"external_upstream_rq_2xx": 5.0}, "v9": {"external_upstream_rq_2xx": None}}
    assert sorted(combine(["external_upstream_rq_2xx"], by_name)) == ["v1", "v2"]


def test_raw_metric_without_result_is_no_data() -> None:
    raw = {"ratio": "r"}
    out = combine(["ratio"], {TOTAL: {"v1": 10.0}, "ratio": {}}, raw=raw)
    assert out == {"v1": {"ratio": None}}
