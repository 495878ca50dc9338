"""Policies as settings (validation, JSON schema, defaults) and their verdicts on measured values."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from lamia_core.errors import InvalidInput, LanguageError
from lamia_core.metrics import duration_seconds
from lamia_core.policies import (
    DEFAULT_HEALTH_EXPRESSION,
    REQUESTS_METRIC,
    CustomPolicy,
    Evidence,
    HealthPolicy,
    MetricPolicy,
    Policy,
    TimePolicy,
    Verdict,
)

POLICY = TypeAdapter(Policy)
OK = "external_upstream_rq_2xx"
P99 = "request_duration_p99"
VERSIONS = ("v1", "v2")

RATIO_PROGRAM = """
ok1 = metric "v1" "external_upstream_rq_2xx" / metric "v1" "upstream_rq_total";
ok2 = metric "v2" "external_upstream_rq_2xx" / metric "v2" "upstream_rq_total";
if ok2 >= ok1 { best = "v2"; } else { best = "v1"; }
best
"""


Row = dict[str, float | None]


def row(total: float | None, ok_ratio: float | None = 1.0, p99: float | None = None) -> Row:
    """One version's values as the metrics module reports them (None = no data)."""
    ok = None if total is None or ok_ratio is None else total * ok_ratio
    return {REQUESTS_METRIC: total, OK: ok, P99: p99}


def assess(policy: HealthPolicy | MetricPolicy | CustomPolicy, values: dict[str, dict[str, float | None]],
           weights: dict[str, int] | None = None, versions: tuple[str, ...] = VERSIONS,
           baseline: str = "v1", target: str = "v2") -> Verdict:
    weights = weights or {v: 100 // len(versions) for v in versions}
    policy.validate_for(versions)
    return policy.assess(baseline=baseline, target=target, versions=versions, weights=weights, values=values)


def by(evidence: tuple[Evidence, ...], version: str | None, metric: str) -> Evidence:
    found = [e for e in evidence if e.version == version and e.metric == metric]
    assert len(found) == 1, evidence
    return found[0]


# -- settings ------------------------------------------------------------------------------------


def test_defaults_follow_the_original_lamia() -> None:
    h = HealthPolicy()
    assert (h.step, h.interval, h.max_weight, h.final_action) == (10, 10.0, 100, "promote")
    assert (h.expression, h.threshold, h.direction) == (DEFAULT_HEALTH_EXPRESSION, 0.8, "higher")
    assert (h.window, h.min_requests, h.no_data, h.failure_limit, h.failure_mode) == (
        "1m", 20, "hold", 3, "consecutive")
    assert h.window_seconds == 60.0
    assert not TimePolicy().observes and HealthPolicy().observes


@pytest.mark.parametrize("cls", [TimePolicy, HealthPolicy, MetricPolicy, CustomPolicy])
def test_every_setting_is_documented_for_the_ui_form(cls: type[BaseModel]) -> None:
    for name, field in cls.model_fields.items():
        if name != "kind":
            assert field.description and len(field.description) > 20, f"{cls.__name__}.{name}"


def test_kind_selects_the_policy_from_json() -> None:
    assert isinstance(POLICY.validate_python({"kind": "time", "step": 25}), TimePolicy)
    p = POLICY.validate_json(json.dumps({"kind": "metric", "expression": P99, "direction": "lower"}))
    assert isinstance(p, MetricPolicy) and p.direction == "lower"
    c = POLICY.validate_python({"kind": "custom", "program": RATIO_PROGRAM})
    assert isinstance(c, CustomPolicy)
    # A round trip through JSON (how Prefect stores parameters) keeps the parsed program usable.
    again = POLICY.validate_json(POLICY.dump_json(c))
    assert again == c
    assert assess(again, {"v1": row(100, 0.5), "v2": row(100, 0.9)}).favour == "v2"
    with pytest.raises(ValidationError, match="kind"):
        POLICY.validate_python({"kind": "random"})
    with pytest.raises(ValidationError, match="extra"):
        POLICY.validate_python({"kind": "time", "threshold": 0.5})


def test_json_schema_is_a_discriminated_union_that_validates_settings() -> None:
    schema = POLICY.json_schema()
    assert schema["discriminator"]["propertyName"] == "kind"
    assert set(schema["discriminator"]["mapping"]) == {"time", "health", "metric", "custom", "compare"}
    jsonschema.validate({"kind": "health", "step": 5, "threshold": 0.95}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"kind": "health", "step": 0}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"kind": "custom"}, schema)  # the program is required


@pytest.mark.parametrize("settings", [
    {"kind": "time", "step": 0}, {"kind": "time", "step": 101}, {"kind": "time", "interval": 0},
    {"kind": "health", "max_weight": 0}, {"kind": "health", "failure_limit": 0},
    {"kind": "health", "failure_mode": "sometimes"}, {"kind": "metric", "direction": "up"},
    {"kind": "health", "min_requests": -1}, {"kind": "time", "final_action": "rollback"},
])
def test_out_of_range_settings_are_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        POLICY.validate_python(settings)


@pytest.mark.parametrize("text,seconds",
                         [("1m", 60), ("30s", 30), ("1m30s", 90), ("2h", 7200), ("500ms", 0.5)])
def test_window_is_a_prometheus_duration(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds
    assert HealthPolicy(window=text).window_seconds == seconds


@pytest.mark.parametrize("text", ["", "1", "m", "1 minute", "30s1m", "-1m", "0s"])
def test_bad_window_says_what_is_wrong(text: str) -> None:
    with pytest.raises(InvalidInput, match="window"):
        HealthPolicy(window=text)


def test_window_must_span_a_few_scrape_intervals() -> None:
    p = HealthPolicy(window="30s")
    p.validate_for(VERSIONS, scrape_interval=5)
    with pytest.raises(InvalidInput, match="4 scrape intervals"):
        p.validate_for(VERSIONS, scrape_interval=15)


def test_bad_expression_is_a_language_error_with_position() -> None:
    with pytest.raises(LanguageError) as err:
        HealthPolicy(expression="external_upstream_rq_2xx / ")
    assert err.value.line == 1 and err.value.column >= 26
    with pytest.raises(LanguageError, match="unknown metric"):
        MetricPolicy(expression="upstream_rq_totl * 2")
    # Alone, an unknown name could be a version until the release names its versions.
    lone = MetricPolicy(expression="upstream_rq_totl")
    with pytest.raises(LanguageError, match="upstream_rq_totl"):
        lone.validate_for(VERSIONS)
    with pytest.raises(LanguageError):
        CustomPolicy(program='if { "v2" }')


def test_expression_may_only_name_the_release_versions() -> None:
    p = HealthPolicy(expression='metric "v9" "upstream_rq_total" / upstream_rq_total')
    with pytest.raises(LanguageError, match="v9"):
        p.validate_for(VERSIONS)
    p.validate_for(("v1", "v2", "v9"))


def test_result_of_the_wrong_type_is_refused_for_the_release() -> None:
    with pytest.raises(InvalidInput, match="must give a number"):
        HealthPolicy(expression='"v2"').validate_for(VERSIONS)
    with pytest.raises(InvalidInput, match="must give a version"):
        CustomPolicy(program="upstream_rq_total").validate_for(VERSIONS)


def test_required_metrics_always_include_the_request_count() -> None:
    assert TimePolicy().required_metrics(VERSIONS) == frozenset()
    assert HealthPolicy().required_metrics(VERSIONS) == {OK, REQUESTS_METRIC}
    assert MetricPolicy(expression=P99).required_metrics(VERSIONS) == {P99, REQUESTS_METRIC}
    c = CustomPolicy(program='if metric "v2" "request_duration_p50" < 100 { x = "v2"; } else { x = "v1"; } x')
    assert c.required_metrics(VERSIONS) == {"request_duration_p50", REQUESTS_METRIC}


def test_a_copy_with_another_expression_uses_that_expression() -> None:
    p = HealthPolicy()
    q = p.model_copy(update={"expression": P99, "direction": "lower", "threshold": 300})
    assert q.required_metrics(VERSIONS) == {P99, REQUESTS_METRIC}
    assert assess(q, {"v2": row(100, 0.0, 120.0)}).outcome == "pass"
    assert assess(p, {"v2": row(100, 0.0, 120.0)}).outcome == "fail"


def test_evidence_describes_itself_in_one_line() -> None:
    e = Evidence(version="v2", metric=REQUESTS_METRIC, value=12345.0, threshold=20, comparison="min requests",
                 passed=True)
    assert e.describe() == "v2: upstream_rq_total = 12345 (min requests 20) ✓"
    r = Evidence(version="v1", metric=OK, value=0.98765, comparison="reference")
    assert r.describe() == f"v1: {OK} = 0.9877 (reference)"


# -- health --------------------------------------------------------------------------------------


def test_health_passes_a_healthy_target_with_evidence() -> None:
    v = assess(HealthPolicy(), {"v1": row(500, 0.99), "v2": row(50, 0.9)}, {"v1": 90, "v2": 10})
    assert (v.outcome, v.favour) == ("pass", "v2")
    req = by(v.evidence, "v2", REQUESTS_METRIC)
    assert (req.value, req.threshold, req.comparison, req.passed) == (50, 20, "min requests", True)
    score = by(v.evidence, "v2", DEFAULT_HEALTH_EXPRESSION)
    assert score.value == pytest.approx(0.9)
    assert (score.threshold, score.comparison, score.passed) == (0.8, ">=", True)
    ref = by(v.evidence, "v1", DEFAULT_HEALTH_EXPRESSION)
    assert ref.value == pytest.approx(0.99) and ref.passed is None and ref.comparison == "reference"
    assert "v2 healthy" in v.reason and "0.9" in v.reason and ">= 0.8" in v.reason


def test_health_fails_above_twenty_percent_errors() -> None:
    at_limit = assess(HealthPolicy(), {"v1": row(100), "v2": row(100, 0.8)})
    assert at_limit.outcome == "pass"
    v = assess(HealthPolicy(), {"v1": row(100), "v2": row(100, 0.79)})
    assert (v.outcome, v.favour) == ("fail", "v1")
    assert by(v.evidence, "v2", DEFAULT_HEALTH_EXPRESSION).passed is False
    assert "v2 unhealthy" in v.reason


def test_health_without_enough_requests_gives_no_verdict() -> None:
    v = assess(HealthPolicy(), {"v1": row(500), "v2": row(19, 0.0)})
    assert v.outcome == "no_data" and v.favour is None
    e = by(v.evidence, "v2", REQUESTS_METRIC)
    assert (e.value, e.threshold, e.comparison, e.passed) == (19, 20, "min requests", False)
    assert "not enough data" in v.reason and "v2" in v.reason
    # No series at all (the metrics module reports None) is not enough either.
    assert assess(HealthPolicy(), {"v1": row(500), "v2": row(None)}).outcome == "no_data"
    assert assess(HealthPolicy(), {"v1": row(500)}).outcome == "no_data"
    # With the minimum at 0 a handful of requests is judged.
    assert assess(HealthPolicy(min_requests=0), {"v2": row(3, 1.0)}).outcome == "pass"


def test_health_nil_value_is_no_data_not_a_failure() -> None:
    v = assess(HealthPolicy(expression=P99, direction="lower", threshold=300), {"v2": row(100, 1.0, None)})
    assert v.outcome == "no_data"
    assert by(v.evidence, "v2", P99).passed is None


def test_health_lower_is_better_for_latency() -> None:
    p = HealthPolicy(expression=P99, direction="lower", threshold=300)
    fast = assess(p, {"v2": row(100, 1.0, 120.0)})
    slow = assess(p, {"v2": row(100, 1.0, 450.0)})
    assert fast.outcome == "pass" and slow.outcome == "fail"
    assert by(slow.evidence, "v2", P99).comparison == "<="


def test_health_reference_is_left_out_when_the_baseline_has_no_traffic() -> None:
    v = assess(HealthPolicy(), {"v2": row(100)}, {"v1": 0, "v2": 100})
    assert [e.version for e in v.evidence] == ["v2", "v2"]


# -- metric --------------------------------------------------------------------------------------

THREE = ("v1", "v2", "v3")


def test_metric_favours_the_best_of_three() -> None:
    vals = {"v1": row(300, 0.95), "v2": row(100, 0.90), "v3": row(100, 0.99)}
    v = assess(MetricPolicy(), vals, {"v1": 80, "v2": 10, "v3": 10}, THREE)
    assert (v.outcome, v.favour, v.ranking) == ("pass", "v3", ("v3", "v1", "v2"))
    assert by(v.evidence, "v3", DEFAULT_HEALTH_EXPRESSION).passed is True
    assert by(v.evidence, "v2", DEFAULT_HEALTH_EXPRESSION).passed is False
    assert by(v.evidence, "v3", DEFAULT_HEALTH_EXPRESSION).comparison == "best (higher)"


def test_metric_lower_direction_picks_the_fastest() -> None:
    vals = {"v1": row(300, 1, 200.0), "v2": row(100, 1, 150.0), "v3": row(100, 1, 90.0)}
    v = assess(MetricPolicy(expression=P99, direction="lower"), vals, {"v1": 80, "v2": 10, "v3": 10}, THREE)
    assert v.favour == "v3" and v.ranking == ("v3", "v2", "v1")


def test_metric_baseline_best_is_a_failure() -> None:
    v = assess(MetricPolicy(), {"v1": row(300, 0.99), "v2": row(100, 0.5)})
    assert (v.outcome, v.favour) == ("fail", "v1")
    assert "baseline v1 scores best" in v.reason


def test_metric_ties_go_to_the_target_and_tolerance_widens_them() -> None:
    assert assess(MetricPolicy(), {"v1": row(100, 1.0), "v2": row(100, 1.0)}).favour == "v2"
    close = {"v1": row(1000, 0.999), "v2": row(1000, 0.995)}
    assert assess(MetricPolicy(), close).outcome == "fail"
    assert assess(MetricPolicy(tolerance=0.01), close).favour == "v2"


def test_metric_nil_cannot_win_and_all_nil_holds() -> None:
    p = MetricPolicy(expression=P99, direction="lower")
    one = assess(p, {"v1": row(100, 1, None), "v2": row(100, 1, 500.0)})
    assert one.favour == "v2" and one.ranking == ("v2", "v1")
    assert by(one.evidence, "v1", P99).passed is None
    none = assess(p, {"v1": row(100, 1, None), "v2": row(100, 1, None)})
    assert none.outcome == "no_data" and "nil for every version" in none.reason


def test_metric_needs_requests_from_every_version_with_traffic() -> None:
    v = assess(MetricPolicy(), {"v1": row(300), "v2": row(5), "v3": row(None)}, {"v1": 90, "v2": 10, "v3": 0},
               THREE)
    assert v.outcome == "no_data" and "v2" in v.reason
    # v3 has no weight: it is out of the running and not asked for data.
    assert {e.version for e in v.evidence} == {"v1", "v2"}


# -- custom --------------------------------------------------------------------------------------


def test_custom_program_chooses_the_better_version() -> None:
    p = CustomPolicy(program=RATIO_PROGRAM)
    better = assess(p, {"v1": row(200, 0.9), "v2": row(100, 0.99)})
    assert (better.outcome, better.favour) == ("pass", "v2")
    chosen = by(better.evidence, None, RATIO_PROGRAM)
    assert (chosen.value, chosen.comparison, chosen.passed) == ("v2", "chooses", True)
    worse = assess(p, {"v1": row(200, 0.99), "v2": row(100, 0.5)})
    assert (worse.outcome, worse.favour) == ("fail", "v1")
    assert by(worse.evidence, None, RATIO_PROGRAM).passed is False


def test_custom_nil_holds() -> None:
    # Enough requests but no 2xx series for v1: its ratio is nil, so the if takes no branch.
    p = CustomPolicy(program=RATIO_PROGRAM)
    v = assess(p, {"v1": {REQUESTS_METRIC: 100.0, OK: None}, "v2": row(100, 0.99)})
    assert v.outcome == "hold" and v.favour is None and "nil" in v.reason


def test_custom_nil_with_the_target_taking_all_traffic_passes() -> None:
    p = CustomPolicy(program=RATIO_PROGRAM)
    v = assess(p, {"v1": row(None), "v2": row(600)}, {"v1": 0, "v2": 100})
    assert (v.outcome, v.favour) == ("pass", "v2")
    assert by(v.evidence, None, RATIO_PROGRAM).value is None
    # The baseline isn't asked for requests: it gets no traffic.
    assert [e.version for e in v.evidence if e.metric == REQUESTS_METRIC] == ["v2"]


def test_custom_needs_requests_from_the_versions_it_reads() -> None:
    p = CustomPolicy(program=RATIO_PROGRAM)
    v = assess(p, {"v1": row(200), "v2": row(3)})
    assert v.outcome == "no_data"
    assert by(v.evidence, "v2", REQUESTS_METRIC).passed is False


def test_custom_bare_metrics_are_the_target() -> None:
    p = CustomPolicy(program='if request_duration_p50 < 100 { x = "v2"; } else { x = "v1"; } x')
    assert assess(p, {"v1": row(100, 1, 500.0) | {"request_duration_p50": 500.0},
                      "v2": row(100, 1) | {"request_duration_p50": 50.0}}).favour == "v2"


def test_custom_choosing_a_version_outside_the_release_holds() -> None:
    p = CustomPolicy(program='"v3"')
    v = assess(p, {"v1": row(100), "v2": row(100), "v3": row(100)}, {"v1": 90, "v2": 10, "v3": 0}, THREE)
    assert v.outcome == "hold" and "neither baseline nor target" in v.reason
