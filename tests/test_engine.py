"""The release engine run as whole releases in virtual time against a simulated world.

The world turns the weights of the moment into what Prometheus would report
over the query window: requests split by weight, answered 2xx at each version's
success ratio, with no data at all for a version without traffic (as
``lamia_core.metrics.combine`` reports it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamia_core.engine import (
    Decision,
    Observation,
    ReleaseSpec,
    ReleaseState,
    abort,
    decide,
    start,
)
from lamia_core.errors import InvalidInput, LanguageError, WeightsError
from lamia_core.models import Weights
from lamia_core.policies import DEFAULT_HEALTH_EXPRESSION, REQUESTS_METRIC

OK = "external_upstream_rq_2xx"
P99 = "request_duration_p99"
T0 = 1000.0

RATIO_PROGRAM = """
ok1 = metric "v1" "external_upstream_rq_2xx" / metric "v1" "upstream_rq_total";
ok2 = metric "v2" "external_upstream_rq_2xx" / metric "v2" "upstream_rq_total";
if ok2 >= ok1 { best = "v2"; } else { best = "v1"; }
best
"""

#: A version's success ratio at a time; None = the version reports no 2xx series (nil).
Health = Callable[[float], float | None]


@dataclass
class World:
    """Traffic of ``rps`` requests per second split by weight, over a ``window``-second query window."""

    success: Mapping[str, float | Health | None]
    rps: float = 10.0
    window: float = 60.0
    latency: Mapping[str, float] = field(default_factory=dict)
    seen: list[tuple[float, dict[str, int]]] = field(default_factory=list)

    def __call__(self, weights: Weights, t: float) -> Observation:
        self.seen.append((t, weights.as_dict()))
        values: dict[str, dict[str, float | None]] = {}
        for version, w in weights.items():
            total = self.rps * self.window * w / 100
            if total == 0:
                values[version] = {REQUESTS_METRIC: None, OK: None, P99: None}
                continue
            s = self.success.get(version, 1.0)
            ratio = s(t) if callable(s) else s
            values[version] = {
                REQUESTS_METRIC: total,
                OK: None if ratio is None else total * ratio,
                P99: self.latency.get(version),
            }
        return Observation(time=t, values=values)


def spec(policy: dict[str, Any] | None = None, **kw: Any) -> ReleaseSpec:
    fields: dict[str, Any] = {"namespace": "shop", "app": "web", "baseline": "v1", "target": "v2",
                              "policy": policy or {"kind": "health"}}
    fields.update(kw)
    return ReleaseSpec.model_validate(fields)


def check_invariants(s: ReleaseSpec, d: Decision) -> None:
    w = d.state.weights
    assert sum(w.root.values()) == 100 and all(0 <= x <= 100 for x in w.root.values())
    assert set(w.root) == set(s.versions)
    if d.state.phase != "promoted":
        assert all(w[c] <= s.policy.max_weight for c in s.candidates), w
    if d.state.phase == "rolled-back":
        assert w[s.baseline] == 100
    if d.action in ("set_weights", "promote", "rollback"):
        assert d.weights == w
    else:
        assert d.weights is None
    assert (d.wake_at is None) == d.state.terminal


def run(s: ReleaseSpec, world: Callable[[Weights, float], Observation | None], *, limit: int = 200
        ) -> list[tuple[float, Decision]]:
    """A whole release: start, then observe and decide at each wake-up, until it is over (or ``limit``)."""
    d = start(s, T0)
    log = [(T0, d)]
    check_invariants(s, d)
    while d.wake_at is not None and len(log) < limit:
        now = d.wake_at
        d = decide(s, d.state, now, world(d.state.weights, now))
        check_invariants(s, d)
        log.append((now, d))
    return log


def actions(log: list[tuple[float, Decision]]) -> list[str]:
    return [d.action for _, d in log]


def target_weights(log: list[tuple[float, Decision]], target: str = "v2") -> list[int]:
    return [d.state.weights[target] for _, d in log]


def last(log: list[tuple[float, Decision]]) -> Decision:
    return log[-1][1]


# -- time ----------------------------------------------------------------------------------------


def test_time_policy_steps_to_100_then_promotes_at_exact_times() -> None:
    s = spec({"kind": "time"})
    log = run(s, lambda w, t: None)
    assert actions(log) == ["set_weights"] * 10 + ["promote"]
    assert [t for t, _ in log] == [T0 + 10 * i for i in range(11)]
    assert target_weights(log) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 100]
    assert [d.wake_at for _, d in log[:-1]] == [T0 + 10 * i for i in range(1, 11)]
    end = last(log)
    assert end.weights == Weights({"v1": 0, "v2": 100})
    assert (end.state.phase, end.state.winner, end.state.steps) == ("promoted", "v2", 10)
    assert "promoting v2" in end.reason
    # A terminal state answers finish forever, whatever comes in.
    for later in (T0 + 200, T0 + 10_000):
        again = decide(s, end.state, later, Observation(time=later))
        assert again.action == "finish" and again.state == end.state and again.wake_at is None


def test_time_policy_ignores_observations() -> None:
    s = spec({"kind": "time", "window": "30s"})
    assert s.policy.required_metrics(s.versions) == frozenset() and s.policy.window == "30s"
    world = World({"v2": 0.0})
    log = run(s, world)
    assert actions(log) == ["set_weights"] * 10 + ["promote"]
    assert last(log).state.failures == 0 and last(log).state.observations == 0


def test_step_that_does_not_divide_100_never_overshoots() -> None:
    log = run(spec({"kind": "time", "step": 30, "interval": 5}), lambda w, t: None)
    assert target_weights(log) == [30, 60, 90, 100, 100]
    assert [t for t, _ in log] == [T0, T0 + 5, T0 + 10, T0 + 15, T0 + 20]


def test_max_weight_caps_the_target_then_promote_jumps_to_100() -> None:
    world = World({"v2": 1.0})
    log = run(spec({"kind": "health", "max_weight": 45}), world)
    assert target_weights(log) == [10, 20, 30, 40, 45, 100]
    assert actions(log)[-1] == "promote" and last(log).weights == Weights({"v1": 0, "v2": 100})
    # The promotion came after a healthy observation at max weight.
    assert world.seen[-1] == (T0 + 50, {"v1": 55, "v2": 45})


def test_final_hold_leaves_the_weights_as_asked() -> None:
    log = run(spec({"kind": "time", "max_weight": 30, "final_action": "hold"}), lambda w, t: None)
    assert actions(log) == ["set_weights"] * 3 + ["finish"]
    end = last(log)
    assert end.state.phase == "held" and end.state.weights == Weights({"v1": 70, "v2": 30})
    assert "holding there as asked" in end.reason
    at_100 = run(spec({"kind": "time", "final_action": "hold"}), lambda w, t: None)
    assert last(at_100).state.phase == "held" and last(at_100).state.weights["v2"] == 100
    assert last(at_100).action == "finish"


def test_initial_weights_are_the_starting_point_and_are_clamped() -> None:
    d = start(spec({"kind": "time"}, initial_weights={"v1": 70, "v2": 30}), T0)
    assert d.weights == Weights({"v1": 60, "v2": 40})
    d = start(spec({"kind": "time", "max_weight": 50}, initial_weights={"v1": 20, "v2": 80}), T0)
    assert d.weights == Weights({"v1": 50, "v2": 50})


# -- health --------------------------------------------------------------------------------------


def test_healthy_target_is_promoted_with_evidence_at_every_step() -> None:
    log = run(spec(), World({"v1": 0.99, "v2": 0.97}))
    assert actions(log) == ["set_weights"] * 10 + ["promote"]
    assert [t for t, _ in log] == [T0 + 10 * i for i in range(11)]
    d = log[3][1]  # the third observation, taken at 30% on the target
    assert d.state.weights == Weights({"v1": 60, "v2": 40})
    req = next(e for e in d.evidence if e.metric == REQUESTS_METRIC)
    assert (req.version, req.value, req.threshold, req.passed) == ("v2", 180.0, 20, True)
    score = next(e for e in d.evidence if e.version == "v2" and e.metric == DEFAULT_HEALTH_EXPRESSION)
    assert score.value == pytest.approx(0.97)
    assert (score.threshold, score.comparison, score.passed) == (0.8, ">=", True)
    assert "v2 healthy" in d.reason and "step 4 toward v2: v1=60, v2=40" in d.reason
    assert "\n" not in d.reason
    assert last(log).state.observations == 10 and last(log).state.failures == 0


def test_unhealthy_target_is_rolled_back_within_the_failure_limit() -> None:
    log = run(spec(), World({"v2": 0.5}))
    assert actions(log) == ["set_weights", "hold", "hold", "rollback"]
    # Backing off never goes below one step, so the target stays measurable.
    assert target_weights(log) == [10, 10, 10, 0]
    assert log[-1][0] == T0 + 3 * 10
    end = last(log)
    assert end.weights == Weights({"v1": 100, "v2": 0}) and end.state.phase == "rolled-back"
    assert end.state.failures == 3 and end.state.consecutive_failures == 3
    assert "failure 3 of 3 (consecutive): rolling back to v1" in end.reason
    bad = next(e for e in end.evidence if e.metric == DEFAULT_HEALTH_EXPRESSION and e.version == "v2")
    assert bad.value == pytest.approx(0.5) and bad.passed is False and bad.threshold == 0.8


def test_target_failing_midway_backs_off_then_rolls_back() -> None:
    world = World({"v2": lambda t: 1.0 if t < T0 + 45 else 0.6})
    log = run(spec(), world)
    assert target_weights(log) == [10, 20, 30, 40, 50, 40, 30, 0]
    assert actions(log)[-3:] == ["set_weights", "set_weights", "rollback"]
    assert "backing off toward v1: v1=60, v2=40" in log[5][1].reason


def test_failure_limit_one_rolls_back_at_once() -> None:
    log = run(spec({"kind": "health", "failure_limit": 1}), World({"v2": 0.1}))
    assert actions(log) == ["set_weights", "rollback"]


def test_no_data_holds_by_default() -> None:
    log = run(spec(), World({}, rps=0), limit=30)
    assert actions(log) == ["set_weights"] + ["hold"] * 29
    assert {d.state.weights["v2"] for _, d in log} == {10}
    assert last(log).state.failures == 0 and last(log).state.phase == "progressing"
    assert "not enough data" in last(log).reason


def test_progress_deadline_rolls_back_a_release_that_cannot_move() -> None:
    log = run(spec({"kind": "health", "progress_deadline": 35}), World({}, rps=0))
    # Started at T0 with one step; holds at T0+10, +20, +30; at +40 the weights would have
    # stood still for 40 s, past the 35 s deadline.
    assert actions(log) == ["set_weights", "hold", "hold", "hold", "rollback"]
    assert log[-1][0] - T0 == 40
    assert "progress deadline of 35 s" in last(log).reason
    assert last(log).state.weights == Weights({"v1": 100, "v2": 0})


def test_progress_deadline_does_not_touch_a_release_that_moves() -> None:
    log = run(spec({"kind": "health", "progress_deadline": 15}), World({"v2": 1.0}))
    assert actions(log)[-1] == "promote" and "hold" not in actions(log)


def test_no_data_can_count_as_failure() -> None:
    log = run(spec({"kind": "health", "no_data": "fail"}), World({}, rps=0))
    assert actions(log) == ["set_weights", "hold", "hold", "rollback"]
    assert last(log).weights == Weights({"v1": 100, "v2": 0})
    assert "not enough data" in last(log).reason and "failure 3 of 3" in last(log).reason


def test_missing_observation_is_no_data() -> None:
    s = spec({"kind": "health", "no_data": "fail", "failure_limit": 1})
    log = run(s, lambda w, t: None)
    assert actions(log) == ["set_weights", "rollback"] and "no observation" in last(log).reason


def test_too_little_traffic_is_not_enough_data() -> None:
    # 2 req/s over a minute, 10% of it: 12 requests on the target.
    log = run(spec(), World({"v2": 1.0}, rps=2), limit=3)
    d = log[1][1]
    assert d.action == "hold" and d.state.weights["v2"] == 10
    e = d.evidence[0]
    assert (e.version, e.metric, e.value, e.threshold, e.comparison, e.passed) == (
        "v2", REQUESTS_METRIC, 12.0, 20, "min requests", False)
    assert d.reason.startswith("not enough data: fewer than 20 requests in 1m for v2")
    lower = run(spec({"kind": "health", "min_requests": 10}), World({"v2": 1.0}, rps=2))
    assert actions(lower)[-1] == "promote"


def _flapping(t: float) -> float:
    # Observations at T0+10, +20, ...: every third one (the 1st, 4th, ...) sees errors.
    return 0.5 if round((t - T0) / 10) % 3 == 1 else 1.0


def test_flapping_health_with_consecutive_failures_gets_through() -> None:
    log = run(spec(), World({"v2": _flapping}))
    end = last(log)
    assert end.action == "promote"
    assert end.state.failures > 3 and end.state.consecutive_failures == 0


def test_flapping_health_with_total_failures_rolls_back() -> None:
    log = run(spec({"kind": "health", "failure_mode": "total"}), World({"v2": _flapping}))
    end = last(log)
    assert end.action == "rollback" and end.state.failures == 3
    assert log[-1][0] == T0 + 70
    assert "failure 3 of 3 (total)" in end.reason


def test_target_that_recovers_is_promoted() -> None:
    log = run(spec(), World({"v2": lambda t: 0.3 if t < T0 + 25 else 0.95}))
    assert actions(log)[:3] == ["set_weights", "hold", "hold"]
    end = last(log)
    assert end.action == "promote" and end.state.failures == 2 and end.state.consecutive_failures == 0


def test_reason_is_one_line_even_for_a_multi_line_expression() -> None:
    pol = {"kind": "health", "expression": "external_upstream_rq_2xx\n  / upstream_rq_total"}
    log = run(spec(pol), World({"v2": 0.9}), limit=2)
    assert "\n" not in last(log).reason
    assert "external_upstream_rq_2xx / upstream_rq_total = 0.9" in last(log).reason


def test_latency_health_with_lower_direction() -> None:
    pol = {"kind": "health", "expression": P99, "direction": "lower", "threshold": 250}
    assert last(run(spec(pol), World({}, latency={"v1": 100, "v2": 180}))).action == "promote"
    assert last(run(spec(pol), World({}, latency={"v1": 100, "v2": 400}))).action == "rollback"


# -- which observations count --------------------------------------------------------------------


def test_observation_from_before_the_change_settled_is_ignored() -> None:
    s = spec()
    first = start(s, T0)
    world = World({"v2": 0.0})
    stale = decide(s, first.state, T0 + 10, world(first.state.weights, T0 + 5))
    assert stale.action == "hold" and "ignored" in stale.reason
    assert stale.state.failures == 0 and stale.state.observations == 0
    counted = decide(s, stale.state, T0 + 20, world(first.state.weights, T0 + 20))
    assert counted.state.failures == 1
    # The same observation again does not count twice.
    twice = decide(s, counted.state, T0 + 30, world(first.state.weights, T0 + 20))
    assert twice.action == "hold" and twice.state.failures == 1


def test_epoch_times_read_plainly_in_reasons() -> None:
    s = spec({"kind": "time"})
    now = 1_764_230_000.25
    early = decide(s, start(s, now).state, now + 1, None)
    assert "next check at t=1764230010.25, now t=1764230001.25" in early.reason


def test_deciding_before_the_wake_up_time_changes_nothing() -> None:
    s = spec({"kind": "time"})
    first = start(s, T0)
    early = decide(s, first.state, T0 + 4, None)
    assert early.action == "hold" and early.state == first.state and early.wake_at == T0 + 10
    assert "too early" in early.reason


# -- metric and custom ---------------------------------------------------------------------------

THREE = ("v1", "v2", "v3")


def test_metric_policy_with_three_versions_picks_the_best() -> None:
    s = spec({"kind": "metric"}, versions=THREE)
    world = World({"v1": 0.95, "v2": 0.90, "v3": 0.99})
    log = run(s, world)
    assert log[0][1].weights == Weights({"v1": 80, "v2": 10, "v3": 10})
    # Weight goes to v3, taken from the worst (v2) first, then from the baseline.
    assert log[1][1].weights == Weights({"v1": 80, "v2": 0, "v3": 20})
    assert log[2][1].weights == Weights({"v1": 70, "v2": 0, "v3": 30})
    end = last(log)
    assert end.action == "promote" and end.state.winner == "v3"
    assert end.weights == Weights({"v1": 0, "v2": 0, "v3": 100})
    assert "v3 scores best" in log[1][1].reason


def test_metric_policy_lower_is_better() -> None:
    s = spec({"kind": "metric", "expression": P99, "direction": "lower"}, versions=THREE)
    end = last(run(s, World({}, latency={"v1": 200, "v2": 90, "v3": 150})))
    assert end.state.winner == "v2"


def test_metric_policy_rolls_back_when_the_baseline_is_best() -> None:
    s = spec({"kind": "metric"}, versions=THREE)
    log = run(s, World({"v1": 0.99, "v2": 0.5, "v3": 0.7}))
    assert actions(log) == ["set_weights", "hold", "hold", "rollback"]
    assert last(log).weights == Weights({"v1": 100, "v2": 0, "v3": 0})


def test_metric_policy_holds_when_every_score_is_nil() -> None:
    s = spec({"kind": "metric", "expression": P99, "direction": "lower"})
    log = run(s, World({}), limit=5)
    assert actions(log) == ["set_weights"] + ["hold"] * 4
    assert "nil for every version" in last(log).reason


def test_metric_seeding_needs_room_on_the_baseline() -> None:
    with pytest.raises(InvalidInput, match="first step"):
        spec({"kind": "metric", "step": 40}, versions=THREE, initial_weights={"v1": 30, "v2": 0, "v3": 70})
    d = start(spec({"kind": "metric", "step": 40}, versions=THREE), T0)
    assert d.weights == Weights({"v1": 20, "v2": 40, "v3": 40})


def test_custom_policy_with_the_ratio_program() -> None:
    pol = {"kind": "custom", "program": RATIO_PROGRAM}
    better = run(spec(pol), World({"v1": 0.9, "v2": 0.99}))
    assert actions(better) == ["set_weights"] * 10 + ["promote"]
    # At 100% the baseline has no traffic left to compare with: the program's nil then promotes.
    assert "nothing left to compare with" in last(better).reason
    worse = run(spec(pol), World({"v1": 0.99, "v2": 0.8}))
    assert actions(worse)[-1] == "rollback" and "program chose the baseline v1" in last(worse).reason
    # No 2xx series for the baseline: the comparison is nil, so the program holds, without a failure.
    nil = run(spec(pol), World({"v1": None, "v2": 0.99}), limit=6)
    assert actions(nil) == ["set_weights"] + ["hold"] * 5
    assert last(nil).state.failures == 0 and "program returned nil" in last(nil).reason


# -- abort ---------------------------------------------------------------------------------------


def test_abort_rolls_back_to_the_baseline() -> None:
    s = spec({"kind": "time"})
    log = run(s, lambda w, t: None, limit=4)
    d = abort(s, last(log).state, T0 + 35, "flow cancelled by alice")
    assert d.action == "rollback" and d.weights == Weights({"v1": 100, "v2": 0})
    assert d.state.phase == "rolled-back" and d.wake_at is None
    assert d.reason == "aborted: flow cancelled by alice; rolling back to v1"
    assert decide(s, d.state, T0 + 100, None).action == "finish"
    promoted = last(run(s, lambda w, t: None)).state
    assert abort(s, promoted, T0 + 500, "cancelled").action == "finish"


def test_state_and_decision_survive_json() -> None:
    s = spec({"kind": "metric"}, versions=THREE)
    d = run(s, World({"v3": 0.9}), limit=3)[-1][1]
    assert Decision.model_validate_json(d.model_dump_json()) == d
    assert ReleaseSpec.model_validate_json(s.model_dump_json()) == s
    again = decide(s, ReleaseState.model_validate_json(d.state.model_dump_json()), d.wake_at or 0,
                   World({"v3": 0.9})(d.state.weights, d.wake_at or 0))
    assert again.action == "set_weights"


# -- invalid specs -------------------------------------------------------------------------------


@pytest.mark.parametrize("kw,error,match", [
    ({"target": "v1"}, InvalidInput, "both 'v1'"),
    ({"versions": ("v1", "v3")}, InvalidInput, "v2 not among"),
    ({"versions": ("v1", "v2", "v2")}, InvalidInput, "more than once"),
    ({"baseline": "v 1"}, InvalidInput, "label value"),
    ({"namespace": "Shop"}, InvalidInput, "DNS-1123"),
    ({"route": "Bad_Route"}, InvalidInput, "route name"),
    ({"initial_weights": {"v1": 50, "v9": 50}}, InvalidInput, "v9 not among"),
    ({"initial_weights": {"v1": 50, "v2": 40}}, WeightsError, "sum to 100"),
    ({"versions": ("v1", "v2", "v3"), "initial_weights": {"v1": 80, "v3": 20}}, InvalidInput, "v3=20"),
    ({"policy": {"kind": "health", "expression": "upstream_rq_total +"}}, LanguageError, "line 1"),
    ({"policy": {"kind": "health", "expression": "upstream_rq_toal * 1"}}, LanguageError, "unknown metric"),
    ({"policy": {"kind": "metric", "expression": 'metric "v7" "upstream_rq_total"'}}, LanguageError, "v7"),
    ({"policy": {"kind": "custom", "program": '"v1" + 1'}}, LanguageError, "number"),
    ({"policy": {"kind": "health", "window": "a minute"}}, InvalidInput, "window"),
])
def test_invalid_specs_are_refused_with_a_clear_error(kw: dict[str, Any], error: type[Exception],
                                                      match: str) -> None:
    with pytest.raises(error, match=match):
        spec(**kw)


def test_versions_default_to_baseline_and_target() -> None:
    assert spec().versions == ("v1", "v2")
    assert spec(versions=("v0", "v1", "v2")).start_weights() == {"v0": 0, "v1": 100, "v2": 0}


def test_release_spec_json_schema_documents_the_policy_union() -> None:
    schema = ReleaseSpec.model_json_schema()
    policy = schema["properties"]["policy"]
    assert policy["discriminator"]["propertyName"] == "kind"
    health = schema["$defs"]["HealthPolicy"]["properties"]
    assert "20%" in health["threshold"]["description"] and health["threshold"]["default"] == 0.8


# -- properties ----------------------------------------------------------------------------------

_value = st.one_of(st.none(), st.floats(0, 500, allow_nan=False))


@st.composite
def _row(draw: st.DrawFn) -> dict[str, float | None]:
    total = draw(_value)
    # Mostly plausible success ratios, so that releases also get promoted, sometimes any value at all.
    ratio = draw(st.one_of(st.sampled_from([1.0, 1.0, 0.99, 0.9, 0.5, 0.0]), st.none()))
    ok = draw(_value) if ratio is None or total is None else total * ratio
    return {REQUESTS_METRIC: total, OK: ok, P99: draw(_value)}


_observation = st.tuples(
    st.sampled_from([0.0, 0.0, 0.0, -3.0, 4.0]),  # mostly on time, sometimes stale or late
    st.one_of(st.none(), st.fixed_dictionaries({"v1": _row(), "v2": _row(), "v3": _row()})),
)
_policy = st.fixed_dictionaries({
    "kind": st.sampled_from(["time", "health", "metric", "custom"]),
    "step": st.integers(1, 100),
    "max_weight": st.integers(1, 100),
    "final_action": st.sampled_from(["promote", "hold"]),
    "interval": st.sampled_from([1.0, 10.0, 7.5]),
})
_extra = st.fixed_dictionaries({
    "failure_limit": st.integers(1, 6),
    "failure_mode": st.sampled_from(["consecutive", "total"]),
    "no_data": st.sampled_from(["hold", "fail"]),
    "min_requests": st.integers(0, 100),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_policy, _extra, st.lists(_observation, max_size=60), st.booleans())
def test_random_observations_keep_the_weights_sound(policy: dict[str, Any], extra: dict[str, Any],
                                                    observations: list[tuple[float, Any]],
                                                    three: bool) -> None:
    if policy["kind"] != "time":
        policy = policy | extra
    if policy["kind"] == "custom":
        policy["program"] = RATIO_PROGRAM
    versions = THREE if three else ("v1", "v2")
    if policy["kind"] == "metric" and three and min(policy["step"], policy["max_weight"]) > 50:
        policy["step"] = 50
    s = spec(policy, versions=versions)
    d = start(s, T0)
    check_invariants(s, d)
    for skew, values in observations:
        now = d.wake_at if d.wake_at is not None else T0 + 10_000
        obs = None if values is None else Observation(time=now + skew, values=values)
        before = d.state
        d = decide(s, before, now, obs)
        check_invariants(s, d)
        if before.terminal:
            assert d.action == "finish" and d.state == before
        if d.state.phase == "rolled-back":
            assert d.state.weights[s.baseline] == 100
        if three and policy["kind"] != "metric":
            assert d.state.weights["v3"] == 0  # only a metric release moves a third version
        if d.action == "hold":
            assert d.state.weights == before.weights


# -- engine fixes for every policy ----------------------------------------------------------------


def test_a_release_that_cannot_decide_rolls_back_at_the_default_deadline() -> None:
    log = run(spec(), World({}, rps=0), limit=100)
    assert actions(log)[-1] == "rollback" and log[-1][0] - T0 == 600
    assert "undecided" in last(log).reason and "progress deadline of 600 s (default)" in last(log).reason
    forever = run(spec({"kind": "health", "progress_deadline": None}), World({}, rps=0), limit=100)
    assert set(actions(forever)[1:]) == {"hold"}, "an empty deadline holds for as long as it takes"


def test_an_observation_without_a_new_scrape_is_not_counted() -> None:
    s = spec()
    first = start(s, T0)
    world = World({"v2": 0.5})
    fresh = world(first.state.weights, T0 + 10).model_copy(update={"scraped_at": T0 + 8})
    counted = decide(s, first.state, T0 + 10, fresh)
    assert counted.state.observations == 1 and counted.state.last_scrape_at == T0 + 8
    # Ten seconds later Prometheus has not scraped again: the same sample is not a new observation,
    # so the target is not failed twice on it.
    again = world(first.state.weights, T0 + 20).model_copy(update={"scraped_at": T0 + 8})
    held = decide(s, counted.state, T0 + 20, again)
    assert held.action == "hold" and "no new scrape" in held.reason
    assert held.state.observations == 1 and held.state.failures == counted.state.failures
    # A sample from before the last weight change is not one either.
    before = world(first.state.weights, T0 + 10).model_copy(update={"scraped_at": T0 - 1})
    assert decide(s, first.state, T0 + 10, before).state.observations == 0


def test_a_check_without_a_new_scrape_does_not_promote_at_max_weight() -> None:
    s = spec({"kind": "health", "max_weight": 20, "step": 10})
    world = World({"v2": 1.0})
    d = start(s, T0)
    d = decide(s, d.state, T0 + 10, world(d.state.weights, T0 + 10).model_copy(update={"scraped_at": T0 + 9}))
    assert d.state.weights["v2"] == 20 and d.state.last_change_at == T0 + 10
    # The next check's newest sample is from before the step to max weight: no promotion on it.
    stale = world(d.state.weights, T0 + 20).model_copy(update={"scraped_at": T0 + 9})
    held = decide(s, d.state, T0 + 20, stale)
    assert held.action == "hold" and held.state.phase == "progressing"
    fresh = world(d.state.weights, T0 + 30).model_copy(update={"scraped_at": T0 + 24})
    assert decide(s, held.state, T0 + 30, fresh).action == "promote"


def test_the_window_must_span_four_scrapes_of_the_scrape_interval_setting() -> None:
    with pytest.raises(InvalidInput, match="shorter than 4 scrape intervals"):
        spec({"kind": "health", "window": "30s"})
    assert spec({"kind": "health", "window": "30s", "scrape_interval": 5}).policy.window == "30s"
