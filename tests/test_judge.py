"""The compare judge: its arithmetic, and whole releases through the engine on simulated counters.

Deterministic: traffic comes from seeded generators and every count is exact; the
anytime-valid false-rollback rate itself is measured by bench/bench_decisions.py.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest

from lamia_core.engine import Decision, Observation, ReleaseSpec, ReleaseState, decide, start
from lamia_core.errors import InvalidInput
from lamia_core.judge import (
    GRID,
    CounterReading,
    JudgeSettings,
    choose_boundary,
    judge,
    planned_tests,
)
from lamia_core.policies import ComparePolicy

T0 = 1_764_230_000.0
BUCKETS = (10.0, 25.0, 50.0, 100.0)
POD = "10.4.0.12:15020|reviews-canary-7d9f"


def reading(series: dict[str, tuple[float, ...]], at: float, pod: str = POD) -> CounterReading:
    return CounterReading(buckets=BUCKETS, series={v: {pod: c} for v, c in series.items()}, scraped_at=at)


@dataclass
class Traffic:
    """Counters of stable and canary at ``rps`` requests per second, split by weight; seeded."""

    errors: dict[str, float]
    rps: float = 50.0
    slow: dict[str, float] = field(default_factory=dict)
    seed: int = 1
    counters: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # An hour of the baseline's history before the release: 30 % of requests within 10 ms,
        # 90 % within 25 ms, 97 % within 50 ms.
        n = 3600 * self.rps
        self.counters = {"stable": [n, round(n * self.errors["stable"]), round(n * 0.3), round(n * 0.9),
                                    round(n * 0.97), n]}

    def run(self, seconds: float, weights: dict[str, int]) -> None:
        for _ in range(int(seconds)):
            for v, w in weights.items():
                if w == 0:
                    continue
                c = self.counters.setdefault(v, [0.0] * 6)
                for _ in range(round(self.rps * w / 100)):
                    c[0] += 1
                    c[1] += self.rng.random() < self.errors[v]
                    slow = self.rng.random() < self.slow.get(v, 0.03)  # over 50 ms
                    u = self.rng.random()
                    c[2] += not slow and u < 0.3
                    c[3] += not slow and u < 0.93
                    c[4] += not slow
                    c[5] += 1

    def read(self, at: float) -> CounterReading:
        return reading({v: tuple(c) for v, c in self.counters.items()}, at)


def spec(**policy: object) -> ReleaseSpec:
    settings = {"kind": "compare", **policy}
    return ReleaseSpec.model_validate({"namespace": "shop", "app": "reviews", "baseline": "stable",
                                       "target": "canary", "policy": settings})


def release(s: ReleaseSpec, traffic: Traffic, limit: int = 200) -> list[Decision]:
    """A whole release: each check reads the counters as of one second before it (the last scrape)."""
    d = start(s, T0)
    begin = traffic.read(T0 - 1)
    log = [d]
    now = T0
    while d.wake_at is not None and len(log) < limit:
        traffic.run(d.wake_at - now, d.state.weights.as_dict())
        now = d.wake_at
        first = d.state.judge is None or not d.state.judge.cursor
        counters = traffic.read(now - 1)
        d = decide(s, d.state, now, Observation(time=now, counters=counters, scraped_at=now - 1,
                                                 start_counters=begin if first else None))
        log.append(d)
    return log


# -- the arithmetic -------------------------------------------------------------------------------


def settings(**kw: object) -> JudgeSettings:
    base: dict[str, object] = {"confidence": 0.99, "error_tolerance": 0.0, "latency_tolerance": 5.0,
                               "step": 10, "max_weight": 50, "min_requests": 20, "latency": False}
    return JudgeSettings.model_validate(base | kw)


def test_each_request_is_counted_once_and_a_reset_counter_counts_from_zero() -> None:
    start_ = reading({"stable": (1000, 5, 0, 0, 950, 1000)}, T0)
    first = judge(settings(), None, reading({"stable": (1900, 10, 0, 0, 1800, 1900),
                                             "canary": (100, 0, 0, 0, 95, 100)}, T0 + 15),
                  start_, baseline="stable", target="canary", weights={"stable": 90, "canary": 10},
                  changed_at=T0)
    g = first.state.errors
    assert (g.baseline.requests, g.baseline.events, g.target.requests, g.target.events) == (900, 5, 100, 0)
    assert g.reference.requests == 1900 and g.reference.events == 10, "history counts for the reference"
    # The canary's proxy restarted: its counter went from 100 down to 40, all 40 of them new.
    second = judge(settings(), first.state, reading({"stable": (2800, 14, 0, 0, 2650, 2800),
                                                     "canary": (40, 1, 0, 0, 38, 40)}, T0 + 30),
                   None, baseline="stable", target="canary", weights={"stable": 90, "canary": 10},
                   changed_at=T0)
    g = second.state.errors
    assert (g.baseline.requests, g.target.requests, g.target.events) == (1800, 140, 1)
    # The same reading again adds nothing.
    again = judge(settings(), second.state, reading({"stable": (2800, 14, 0, 0, 2650, 2800),
                                                     "canary": (40, 1, 0, 0, 38, 40)}, T0 + 30),
                  None, baseline="stable", target="canary", weights={"stable": 90, "canary": 10},
                  changed_at=T0)
    assert again.state.errors.target == second.state.errors.target


def test_without_a_start_reading_the_first_one_only_sets_the_cursor() -> None:
    j = judge(settings(), None, reading({"stable": (1000, 5), "canary": (50, 40)}, T0), None,
              baseline="stable", target="canary", weights={"stable": 90, "canary": 10}, changed_at=T0)
    assert j.outcome == "no_data" and j.state.errors.target.requests == 0
    assert j.state.cursor == {f"stable|{POD}": (1000, 5, 0), f"canary|{POD}": (50, 40, 0)}


def test_the_slow_boundary_is_the_smallest_bucket_at_most_a_tenth_of_the_baseline_exceeds() -> None:
    # 1000 requests: 300 at or under 10 ms, 850 under 25, 960 under 50.
    assert choose_boundary(BUCKETS, [(1000, 0, 300, 850, 960, 1000)]) == 50.0
    assert choose_boundary(BUCKETS, [(1000, 0, 950, 990, 1000, 1000)]) == 10.0
    assert choose_boundary(BUCKETS, [(50, 0, 10, 20, 40, 50)]) is None, "too few requests to choose"


def test_the_error_budget_is_split_over_the_planned_tests() -> None:
    from lamia_core.judge import _share

    assert planned_tests(10, 50) == 5 and planned_tests(25, 50) == 2 and planned_tests(50, 50) == 1
    assert planned_tests(30, 100) == 4
    for planned in range(1, 12):
        assert sum(_share(i, planned) for i in range(planned)) == pytest.approx(1.0)
    assert _share(0, 5) == 0.6 and _share(4, 5) == 0.3 and _share(2, 5) == pytest.approx(0.1 / 3)


# -- whole releases -------------------------------------------------------------------------------


def test_a_gross_failure_rolls_back_at_the_first_check_with_its_data() -> None:
    log = release(spec(), Traffic({"stable": 0.005, "canary": 0.30}))
    assert [d.action for d in log] == ["set_weights", "rollback"]
    reason = log[-1].reason
    assert reason.startswith("canary: ") and "errors in" in reason
    assert "worse beyond tolerance with 99 % confidence" in reason and "rolling back to stable" in reason
    assert log[-1].state.weights.as_dict() == {"canary": 0, "stable": 100}


def test_a_good_target_steps_on_evidence_and_is_promoted_from_max_weight() -> None:
    log = release(spec(), Traffic({"stable": 0.005, "canary": 0.005}))
    actions = [d.action for d in log]
    assert actions[-1] == "promote", [d.reason for d in log[-3:]]
    weights = [d.state.weights["canary"] for d in log]
    assert max(weights[:-1]) == 50 and weights[-1] == 100
    # Every step came from a check that had evidence from the requests since the last step.
    for d in log[1:]:
        if d.action == "set_weights":
            assert "no sign of being worse" in d.reason
    assert "not worse than" in log[-1].reason and "with 99 % confidence" in log[-1].reason


def test_low_traffic_means_slower_steps_not_blind_ones() -> None:
    fast = release(spec(), Traffic({"stable": 0.005, "canary": 0.005}, rps=100))
    slow = release(spec(), Traffic({"stable": 0.005, "canary": 0.005}, rps=10))
    assert fast[-1].action == slow[-1].action == "promote"
    assert len(slow) > len(fast)
    # At 10 rps the first step (1 request/s on the canary) holds until enough requests have come.
    assert slow[1].action == "hold" and "not yet enough evidence" in slow[1].reason


def test_no_data_never_promotes_and_rolls_back_at_the_deadline() -> None:
    s = spec()
    d = start(s, T0)
    log = [d]
    empty = CounterReading(buckets=BUCKETS)
    while d.wake_at is not None:
        now = d.wake_at
        d = decide(s, d.state, now, Observation(time=now, counters=empty, start_counters=empty))
        log.append(d)
    assert all(x.action == "hold" for x in log[1:-1]) and log[-1].action == "rollback"
    assert log[-1].state.weights["stable"] == 100 and log[-1].state.failures == 0
    assert "progress deadline of 600 s (default)" in log[-1].reason
    assert log[-1].state.last_change_at - T0 == pytest.approx(600, abs=s.policy.interval)


def test_a_target_that_turns_bad_at_max_weight_is_not_promoted() -> None:
    s = spec()
    traffic = Traffic({"stable": 0.005, "canary": 0.005}, rps=100)
    d = start(s, T0)
    begin, now, turned = traffic.read(T0 - 1), T0, False
    while d.wake_at is not None:
        if d.state.weights["canary"] >= 50 and not turned:
            traffic.errors["canary"], turned = 0.05, True
        traffic.run(d.wake_at - now, d.state.weights.as_dict())
        now = d.wake_at
        first = d.state.judge is None or not d.state.judge.cursor
        c = traffic.read(now - 1)
        d = decide(s, d.state, now, Observation(time=now, counters=c, scraped_at=now - 1,
                                                 start_counters=begin if first else None))
    assert turned and d.action == "rollback", d.reason


def test_a_slower_target_is_rolled_back_by_the_latency_gate_unless_it_is_off() -> None:
    slow = Traffic({"stable": 0.005, "canary": 0.005}, slow={"stable": 0.03, "canary": 0.4})
    log = release(spec(), slow)
    assert log[-1].action == "rollback" and "requests slower than 25 ms" in log[-1].reason
    assert "worse beyond tolerance + 5 points" in log[-1].reason
    off = release(spec(latency=False), Traffic({"stable": 0.005, "canary": 0.005},
                                                slow={"stable": 0.03, "canary": 0.4}))
    assert off[-1].action == "promote"


def test_tolerance_lets_a_slightly_worse_target_through() -> None:
    worse = {"stable": 0.005, "canary": 0.012}
    strict = release(spec(), Traffic(worse, rps=200, seed=3))
    tolerant = release(spec(tolerance=2.0), Traffic(worse, rps=200, seed=3))
    assert strict[-1].action == "rollback"
    assert tolerant[-1].action == "promote"


def test_a_shared_outage_does_not_roll_back_a_good_target() -> None:
    s = spec()
    traffic = Traffic({"stable": 0.005, "canary": 0.005}, rps=100)
    d = start(s, T0)
    begin, now = traffic.read(T0 - 1), T0
    while d.wake_at is not None:
        outage = 30 <= now - T0 < 90
        traffic.errors = {"stable": 0.2 if outage else 0.005, "canary": 0.2 if outage else 0.005}
        traffic.run(d.wake_at - now, d.state.weights.as_dict())
        now = d.wake_at
        first = d.state.judge is None or not d.state.judge.cursor
        c = traffic.read(now - 1)
        d = decide(s, d.state, now, Observation(time=now, counters=c, scraped_at=now - 1,
                                                 start_counters=begin if first else None))
    assert d.action == "promote", d.reason


def test_a_state_restored_from_json_decides_the_same() -> None:
    s = spec()
    traffic = Traffic({"stable": 0.005, "canary": 0.02}, rps=100)
    log = release(s, traffic, limit=4)
    state = log[-1].state
    assert state.judge is not None and len(state.model_dump_json()) < 4000, "small enough for an annotation"
    restored = ReleaseState.model_validate_json(state.model_dump_json())
    assert restored == state
    now = log[-1].wake_at or 0.0
    traffic.run(15, state.weights.as_dict())
    obs = Observation(time=now, counters=traffic.read(now - 1), scraped_at=now - 1)
    assert decide(s, restored, now, obs) == decide(s, state, now, obs)


def test_a_check_without_a_new_scrape_is_not_a_new_observation() -> None:
    s = spec()
    traffic = Traffic({"stable": 0.005, "canary": 0.005})
    log = release(s, traffic, limit=3)
    d = log[-1]
    now = d.wake_at or 0.0
    stale = Observation(time=now, counters=traffic.read(now - 20), scraped_at=d.state.last_scrape_at)
    held = decide(s, d.state, now, stale)
    assert held.action == "hold" and "no new scrape" in held.reason
    assert held.state.observations == d.state.observations and held.state.judge == d.state.judge


def test_compare_checks_are_timed_just_after_a_scrape() -> None:
    from lamia_core.engine import next_check

    s = spec()  # checks every 15 s, Prometheus scrapes every 15 s: a check reads a scrape 2 s old
    assert next_check(s.policy, T0 + 3, T0) == T0 + 17
    assert next_check(s.policy, T0 + 1, T0) == T0 + 17, "the scrape after the one just read, not that one"
    assert next_check(s.policy, T0 + 3, None) == T0 + 18, "phase unknown: one interval on"
    slow = spec(interval=60).policy
    assert next_check(slow, T0 + 3, T0) == T0 + 62, "the last scrape due within the interval"
    assert next_check(spec(interval=1, scrape_interval=1).policy, T0 + 0.5, T0) == T0 + 1.25
    health = ReleaseSpec.model_validate({"namespace": "shop", "app": "reviews", "baseline": "stable",
                                         "target": "canary", "policy": {"kind": "health"}}).policy
    assert next_check(health, T0 + 3, T0) == T0 + 3 + health.interval, "windowed policies keep their pace"

    traffic = Traffic({"stable": 0.005, "canary": 0.005})
    first = start(s, T0, scraped_at=T0 - 9)
    assert first.wake_at == T0 + 8
    traffic.run(8, first.state.weights.as_dict())
    # The scrape of T0 + 6 came after the change: it counts although less than an interval has passed.
    seen = decide(s, first.state, T0 + 8, Observation(
        time=T0 + 8, counters=traffic.read(T0 + 6), scraped_at=T0 + 6, start_counters=traffic.read(T0 - 9)))
    assert seen.state.observations == 1 and seen.wake_at == T0 + 23
    # Prometheus late: the check after sees no new scrape, and the next one waits for the one due next.
    late = decide(s, seen.state, T0 + 23, Observation(time=T0 + 23, counters=traffic.read(T0 + 6),
                                                       scraped_at=T0 + 6))
    assert "no new scrape" in late.reason and late.wake_at == T0 + 38
    # Phase unknown at the start: the first check's stale scrape still times the next one.
    blind = start(s, T0)
    assert blind.wake_at == T0 + 15
    stale = decide(s, blind.state, T0 + 15, Observation(time=T0 + 15, counters=traffic.read(T0 - 7),
                                                         scraped_at=T0 - 7))
    assert "no new scrape" in stale.reason and stale.wake_at == T0 + 25


def test_mixture_evidence_is_the_weighted_mean_of_the_grid() -> None:
    from lamia_core.judge import GRID_WEIGHTS, MixtureTest

    assert len(GRID) == len(GRID_WEIGHTS) == 3 and sum(GRID_WEIGHTS) == pytest.approx(1.0)
    t = MixtureTest(from_weight=10, share=0.5, log_lr=(0.0, math.log(3), math.log(800)))
    assert math.exp(t.log_evidence()) == pytest.approx(0.4 * 1 + 0.4 * 3 + 0.2 * 800)
    # A mixture, not a maximum: one alternative's evidence counts at its weight.
    only = MixtureTest(from_weight=10, share=0.5, log_lr=(math.log(1000), -50.0, -50.0))
    assert math.exp(only.log_evidence()) == pytest.approx(400, rel=1e-6)


@pytest.mark.parametrize("policy,match", [
    ({"errors": False, "latency": False}, "at least one gate"),
    ({"interval": 5}, "shorter than the scrape interval"),
    ({"confidence": 1.0}, "confidence"),
])
def test_bad_compare_settings_are_refused(policy: dict[str, object], match: str) -> None:
    with pytest.raises((InvalidInput, ValueError), match=match):
        spec(**policy)


def test_compare_settings_have_documented_defaults() -> None:
    p = ComparePolicy()
    assert (p.step, p.interval, p.max_weight, p.confidence, p.tolerance) == (10, 15.0, 50, 0.99, 0.0)
    assert p.errors and p.latency and p.progress_deadline == 600.0
    for name, f in ComparePolicy.model_fields.items():
        assert name == "kind" or f.description, name
