"""The compare judge: the target against the baseline on the same requests, by anytime-valid tests.

Pure: counts in, a verdict and the new accumulated state out; no clock, no I/O.
What it reads (:class:`CounterReading`) are Istio's raw counters as Prometheus
holds them at one instant, summed per version and per scrape target (``instance``,
``pod``): requests, 5xx answers, and the cumulative duration buckets. Between two
readings the judge takes per-target differences (a counter that went down was
reset: its new value is its whole increment, as Prometheus' own ``increase()``
assumes), so every request is counted exactly once, at the reading after the
scrape that saw it. Nothing is extrapolated or read twice.

**What is tested.** Two gates, each on one kind of *event*: errors (5xx answers)
and slow requests (slower than one bucket boundary ``b`` of the duration
histogram, chosen once per release as the smallest boundary that at most 10 % of
the baseline's past requests exceed). Per event kind, the model is Lindon and
Malek's time-inhomogeneous Poisson process with a common factor (the paper behind
Lindon, Sanden & Shirikian, KDD 2022): events of version ``v`` arrive at intensity
``r_v * n_v(t) * lambda(t)``, where ``n_v(t)`` is its request rate and ``lambda(t)`` a
rate shared by both versions that may vary freely (a shared dependency failing,
daily load). The parameter is the rate ratio ``r = r_target / r_baseline``.

**Rollback test.** Null: the target is not worse beyond tolerance, ``r <= r0``
where ``r0 = (p + tolerance) / p`` and ``p`` is the baseline's event share so far
(its history before the release included, computed before the interval it is
applied to, so ``r0`` is predictable; ``r0 = 1`` without tolerance). Conditional
on the number of events in an interval ``k``, each one came from the target with
probability ``q_k(r) = r n_T / (r n_T + n_B)``, where ``n_T``, ``n_B`` are the
interval's request counts: the shared ``lambda(t)`` cancels, and so does the
traffic split, which only enters through the known ``q_k``. This is how the
time-varying split (a step every few intervals) is handled: every interval has its
own ``q_k``. The likelihood ratio of ``phi * r0`` against ``r0`` over the intervals
is a nonnegative supermartingale under the null (monotone likelihood ratio, so
also for ``r < r0``). The alternative is a mixture over ``phi`` in :data:`GRID`
with the weights :data:`GRID_WEIGHTS`. By Ville's inequality the mixture ever exceeds ``1/a`` with
probability at most ``a`` under the null, however often it is looked at: so
checking every interval, and stopping at any time, keeps the false-rollback
probability within ``a``.

Because evidence accumulated while the target was good would hide a regression
that appears only at higher traffic (it drives the likelihood ratio down first),
a new test starts at each new highest weight of the target, up to
``ceil(max_weight / step)`` tests. The error budget ``1 - confidence`` is split
by a union bound: errors get 90 % and latency 10 % when both gates are on (slow
requests are many, so the latency tests need less); within a gate the test started
with the release gets 60 %, the one started at max weight 30 % and the others share
the rest (:func:`_share` says why). Over the whole release the probability of rolling back a target that
is not worse beyond tolerance stays within ``1 - confidence``.

**Evidence to move forward.** A step needs evidence that the target is *not
clearly worse*: a sequential probability ratio test on the target's own requests
of ``p_good = p + tolerance`` (floored at 0.1 %) against ``p_bad = max(4 p_good,
p_good + 1 point)``. It needs a likelihood ratio of 2 from the requests served
since the last step (so low traffic means slower steps, never blind ones: no
requests, no step), and the promotion from max weight needs ``1 / (1 - confidence)``
over the whole release, which a target failing at ``p_bad`` or more reaches with
probability at most ``1 - confidence`` (Wald). Without data nothing moves and
nothing passes; the engine's progress deadline ends a release that cannot decide.

The state (:class:`JudgeState`) is small and JSON-serialisable: the cursor (three
numbers per version and scrape target), the totals, and a few log-likelihood
ratios; a state restored from JSON decides exactly as the original.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field

from lamia_core._base import Frozen

#: Alternatives of the rollback test: the target's rate ratio as a multiple of the null boundary...
GRID: tuple[float, ...] = (3.0, 10.0, 50.0)
#: ...and their weights in the mixture. The gross one gets the least: a target 50 times worse shows in
#: a handful of failed requests whatever the weight, while the mixture's cost (the log of one over the
#: weight) falls on the moderate regressions that need tens of them.
GRID_WEIGHTS: tuple[float, ...] = (0.4, 0.4, 0.2)
#: Likelihood ratio (not clearly worse : clearly worse) a step needs from the requests since the last one.
STEP_EVIDENCE = 2.0
#: The step evidence never falls below 1/STEP_FLOOR: a few early errors of a good target at a low weight
#: would otherwise hold it there for many minutes. Promotion still needs the whole release's evidence.
STEP_FLOOR = 4.0
#: "Clearly worse" is this many times the tolerated rate, and at least BAD_MARGIN above it.
BAD_FACTOR = 4.0
BAD_MARGIN = 0.01
#: The tolerated rate is at least this, so that one error of a target whose baseline never fails
#: does not count as infinitely unlikely.
GOOD_FLOOR = 0.001
#: The slow-request boundary is the smallest bucket that at most this share of the baseline exceeds...
SLOW_SHARE = 0.10
#: ...chosen once the baseline has this many requests to choose from.
BOUNDARY_REQUESTS = 100
#: Share of the error budget given to the error gate when both gates are on.
ERROR_BUDGET = 0.9

Gate = Literal["errors", "latency"]


class CounterReading(Frozen):
    """Raw cumulative counters of an application at one instant, as Prometheus holds them."""

    buckets: tuple[float, ...] = ()
    """Finite upper bounds (ms) of the duration histogram, ascending."""
    series: dict[str, dict[str, tuple[float, ...]]] = Field(default_factory=dict)
    """version -> scrape target -> (requests, 5xx answers, requests at or under each bucket bound)."""
    scraped_at: float | None = None
    """Time of the newest sample read; None when Prometheus had none."""


class Tally(Frozen):
    requests: float = 0.0
    events: float = 0.0

    def add(self, requests: float, events: float) -> Tally:
        return Tally(requests=self.requests + requests, events=self.events + events)

    @property
    def rate(self) -> float | None:
        return self.events / self.requests if self.requests > 0 else None


class MixtureTest(Frozen):
    """One rollback test: log likelihood ratios per alternative of :data:`GRID`."""

    from_weight: int
    """The target's weight when it started (the first starts with the release)."""
    share: float
    """Its share of the gate's error budget."""
    log_lr: tuple[float, ...] = (0.0,) * len(GRID)

    def log_evidence(self) -> float:
        top = max(self.log_lr)
        weighted = (w * math.exp(x - top) for w, x in zip(GRID_WEIGHTS, self.log_lr, strict=True))
        return top + math.log(sum(weighted))


class GateState(Frozen):
    target: Tally = Tally()
    """The target's requests and events since the release began."""
    baseline: Tally = Tally()
    reference: Tally = Tally()
    """The baseline's requests and events including its history before the release: the reference rate."""
    tests: tuple[MixtureTest, ...] = ()
    accept_log: float = 0.0
    """log likelihood ratio (not clearly worse : clearly worse) over the whole release."""
    step_accept_log: float = 0.0
    """The same over the requests since the last weight change."""
    step_requests: float = 0.0


class JudgeState(Frozen):
    cursor: dict[str, tuple[float, float, float]] = Field(default_factory=dict)
    """"version|scrape target" -> (requests, 5xx, slow) at the last reading counted."""
    scraped_at: float | None = None
    boundary_ms: float | None = None
    top_weight: int = 0
    """The highest weight of the target seen so far (a new rollback test starts at each new one)."""
    weight: int = 0
    """The target's weight over the data counted into the step evidence."""
    errors: GateState = GateState()
    latency: GateState = GateState()


class JudgeSettings(Frozen):
    """What a compare policy asks of the judge."""

    confidence: float
    error_tolerance: float
    """Points of error share (0.5 = half a percentage point) the target may exceed the baseline by."""
    latency_tolerance: float
    """Points of slow-request share the target may exceed the baseline by."""
    errors: bool = True
    latency: bool = True
    step: int
    max_weight: int
    min_requests: int


class GateReport(Frozen):
    """What one gate concluded at one check, with the figures a person reads."""

    gate: Gate
    target: Tally
    baseline: Tally
    reference_rate: float | None
    tolerance: float
    evidence: float
    """The largest rollback-test evidence (mixture likelihood ratio) over its boundary, as a fraction."""
    worse_value: float
    worse_boundary: float
    step_value: float
    accept_value: float
    promote_boundary: float
    bad_rate: float
    boundary_ms: float | None = None
    regressed: bool = False
    steps: bool = False
    promotes: bool = False


class Judgement(Frozen):
    outcome: Literal["rollback", "step", "promote", "hold", "no_data"]
    state: JudgeState
    reports: tuple[GateReport, ...] = ()
    note: str = ""


# --- the arithmetic -----------------------------------------------------------------------------


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else x * math.log(y)


def _share_log_lr(e_t: float, e_b: float, n_t: float, n_b: float, r0: float, phi: float) -> float:
    """log likelihood ratio of rate ratio ``phi * r0`` against ``r0`` for one interval's events."""
    if n_t <= 0 or n_b <= 0 or e_t + e_b <= 0:
        return 0.0
    q0 = r0 * n_t / (r0 * n_t + n_b)
    q1 = phi * r0 * n_t / (phi * r0 * n_t + n_b)
    return _xlogy(e_t, q1 / q0) + _xlogy(e_b, (1 - q1) / (1 - q0))


def reference_rate(ref: Tally) -> float:
    """The baseline's event share, shrunk toward zero events for a short history (never 0 or 1)."""
    return (ref.events + 0.5) / (ref.requests + 1.0)


def null_ratio(p: float, tolerance_points: float) -> float:
    return 1.0 + tolerance_points / 100.0 / p if tolerance_points > 0 else 1.0


def good_bad(p: float, tolerance_points: float) -> tuple[float, float]:
    good = max(p + tolerance_points / 100.0, GOOD_FLOOR)
    bad = max(BAD_FACTOR * good, good + BAD_MARGIN)
    return good, min(bad, (1.0 + good) / 2)


def _accept_log(e_t: float, n_t: float, good: float, bad: float) -> float:
    e = min(e_t, n_t)
    return _xlogy(e, good / bad) + _xlogy(n_t - e, (1 - good) / (1 - bad))


def planned_tests(step: int, max_weight: int) -> int:
    return max(1, math.ceil(min(max_weight, 100) / max(step, 1)))


def _budget(settings: JudgeSettings, gate: Gate) -> float:
    alpha = 1.0 - settings.confidence
    if settings.errors and settings.latency:
        return alpha * (ERROR_BUDGET if gate == "errors" else 1.0 - ERROR_BUDGET)
    return alpha


def _share(index: int, planned: int) -> float:
    """Budget share of the ``index``-th test (0 = the one started with the release).

    The first test gets the most, as most regressions show from the first step and every failed
    request it takes to see one is served at the first weight; the one started at max weight (the
    last) comes next, since a regression missed there is promoted. The ones between share a tenth:
    a regression that appears only at a middle weight is still there at max weight, where the last
    test, started afresh, catches it.
    """
    if planned <= 1:
        return 1.0
    if planned == 2:
        return 0.5
    if index == 0:
        return 0.6
    return 0.3 if index == planned - 1 else 0.1 / (planned - 2)


def choose_boundary(buckets: Sequence[float], baseline: Sequence[tuple[float, ...]]) -> float | None:
    """The smallest bucket bound that at most :data:`SLOW_SHARE` of the baseline's requests exceed."""
    total = sum(s[0] for s in baseline)
    if total < BOUNDARY_REQUESTS or not buckets:
        return None
    for i, bound in enumerate(buckets):
        under = sum(s[2 + i] for s in baseline if len(s) > 2 + i)
        if total - under <= SLOW_SHARE * total:
            return bound
    return buckets[-1]


def _raw(reading: CounterReading, values: tuple[float, ...],
         boundary: float | None) -> tuple[float, float, float]:
    requests, errors = values[0], values[1]
    slow = 0.0
    if boundary is not None and boundary in reading.buckets:
        i = reading.buckets.index(boundary)
        if len(values) > 2 + i:
            slow = max(requests - values[2 + i], 0.0)
    return requests, errors, slow


def _delta(now: float, last: float | None) -> float:
    if last is None:
        return now
    # A counter that went down was reset (a restarted proxy): all of its new value is new.
    return now - last if now >= last else now


def _cursor(reading: CounterReading, versions: Sequence[str],
            boundary: float | None) -> dict[str, tuple[float, float, float]]:
    out: dict[str, tuple[float, float, float]] = {}
    for v in versions:
        for group, values in reading.series.get(v, {}).items():
            out[f"{v}|{group}"] = _raw(reading, values, boundary)
    return out


# --- one check ----------------------------------------------------------------------------------


def judge(settings: JudgeSettings, state: JudgeState | None, reading: CounterReading,
          start: CounterReading | None, *, baseline: str, target: str,
          weights: Mapping[str, int], changed_at: float) -> Judgement:
    """Count what ``reading`` adds since the last reading counted (or since ``start``, the counters
    when the release began, for the first one) and judge the target on everything counted so far.

    ``changed_at`` is when the weights last changed: an interval that began before it mixes two
    splits, so it counts for the rollback tests and the release's totals, not as evidence for a step.
    """
    state = state or JudgeState()
    whole = state.scraped_at is not None and state.scraped_at >= changed_at
    boundary = state.boundary_ms
    if boundary is None and settings.latency:
        history = start if start is not None and not state.cursor else reading
        boundary = choose_boundary(history.buckets, list(history.series.get(baseline, {}).values()))
    versions = (baseline, target)
    if not state.cursor:
        if start is None:
            # No reading from the release's start: this one only sets the cursor.
            st = state.model_copy(update={"cursor": _cursor(reading, versions, boundary),
                                          "scraped_at": reading.scraped_at, "boundary_ms": boundary})
            return Judgement(outcome="no_data", state=st,
                             note="first reading of the counters: counting starts from it")
        previous = _cursor(start, versions, boundary)
        past = sum_groups(start, baseline, boundary)
        errors_ref = Tally(requests=past[0], events=past[1])
        slow_ref = Tally(requests=past[0], events=past[2])
        state = state.model_copy(update={
            "errors": state.errors.model_copy(update={"reference": errors_ref}),
            "latency": state.latency.model_copy(update={"reference": slow_ref}),
        })
    else:
        previous = dict(state.cursor)
        if state.boundary_ms is None and boundary is not None:
            # The slow counts of the cursor were taken without a boundary: this interval only sets them.
            previous = {k: (v[0], v[1], _cursor_slow(reading, k, boundary, v)) for k, v in previous.items()}
    current = _cursor(reading, versions, boundary)
    delta: dict[str, list[float]] = {v: [0.0, 0.0, 0.0] for v in versions}
    for key, now in current.items():
        version = key.split("|", 1)[0]
        last = previous.get(key)
        for i in range(3):
            delta[version][i] += _delta(now[i], None if last is None else last[i])
    cursor = {**previous, **current}
    weight = weights.get(target, 0)
    new_top = weight > state.top_weight
    planned = planned_tests(settings.step, settings.max_weight)
    reports: list[GateReport] = []
    gates: dict[Gate, GateState] = {"errors": state.errors, "latency": state.latency}
    order: tuple[tuple[Gate, int], ...] = (("errors", 1), ("latency", 2))
    for gate, index in order:
        enabled = settings.errors if gate == "errors" else settings.latency and boundary is not None
        if not enabled:
            continue
        tolerance = settings.error_tolerance if gate == "errors" else settings.latency_tolerance
        g, report = _update_gate(
            settings, gate, gates[gate], tolerance,
            n_t=delta[target][0], n_b=delta[baseline][0], e_t=delta[target][index],
            e_b=delta[baseline][index], new_test=new_top and len(gates[gate].tests) < planned,
            test_share=_share(len(gates[gate].tests), planned), weight=weight,
            reset_step=weight != state.weight, at_max=weight >= settings.max_weight, step_counts=whole,
            boundary=boundary if gate == "latency" else None,
        )
        gates[gate] = g
        reports.append(report)
    new_state = JudgeState(
        cursor=cursor, scraped_at=reading.scraped_at, boundary_ms=boundary,
        top_weight=max(state.top_weight, weight), weight=weight,
        errors=gates["errors"], latency=gates["latency"],
    )
    if any(r.regressed for r in reports):
        return Judgement(outcome="rollback", state=new_state, reports=tuple(reports))
    if not reports or new_state.errors.target.requests + new_state.latency.target.requests == 0:
        return Judgement(outcome="no_data", state=new_state, reports=tuple(reports),
                         note=f"no requests of {target} counted yet")
    if all(r.promotes for r in reports) and weight >= settings.max_weight:
        return Judgement(outcome="promote", state=new_state, reports=tuple(reports))
    if all(r.steps for r in reports) and weight < settings.max_weight:
        return Judgement(outcome="step", state=new_state, reports=tuple(reports))
    return Judgement(outcome="hold", state=new_state, reports=tuple(reports))


def _cursor_slow(reading: CounterReading, key: str, boundary: float,
                 last: tuple[float, float, float]) -> float:
    version, group = key.split("|", 1)
    values = reading.series.get(version, {}).get(group)
    if values is None:
        return last[2]
    return _raw(reading, values, boundary)[2]


def sum_groups(reading: CounterReading, version: str, boundary: float | None) -> tuple[float, float, float]:
    """A version's (requests, 5xx, slow) summed over its scrape targets."""
    total = [0.0, 0.0, 0.0]
    for values in reading.series.get(version, {}).values():
        for i, x in enumerate(_raw(reading, values, boundary)):
            total[i] += x
    return total[0], total[1], total[2]


def _update_gate(settings: JudgeSettings, gate: Gate, g: GateState, tolerance: float, *, n_t: float,
                 n_b: float, e_t: float, e_b: float, new_test: bool, test_share: float, weight: int,
                 reset_step: bool, at_max: bool, step_counts: bool,
                 boundary: float | None) -> tuple[GateState, GateReport]:
    p = reference_rate(g.reference)
    r0 = null_ratio(p, tolerance)
    tests = list(g.tests)
    if new_test:
        tests.append(MixtureTest(from_weight=weight, share=test_share))
    tests = [
        t.model_copy(update={"log_lr": tuple(
            x + _share_log_lr(e_t, e_b, n_t, n_b, r0, phi) for x, phi in zip(t.log_lr, GRID, strict=True))})
        for t in tests
    ]
    good, bad = good_bad(p, tolerance)
    inc = _accept_log(e_t, n_t, good, bad)
    step_log = 0.0 if reset_step else g.step_accept_log
    step_requests = 0.0 if reset_step else g.step_requests
    if step_counts:
        step_log = max(step_log + inc, -math.log(STEP_FLOOR))
        step_requests += n_t
    new = GateState(
        target=g.target.add(n_t, e_t), baseline=g.baseline.add(n_b, e_b),
        reference=g.reference.add(n_b, e_b), tests=tuple(tests),
        accept_log=g.accept_log + inc, step_accept_log=step_log, step_requests=step_requests,
    )
    budget = _budget(settings, gate)
    # The test closest to its boundary is the one reported.
    margins = [(t.log_evidence() - math.log(1.0 / (budget * t.share)), t) for t in tests]
    margin, closest = max(margins, key=lambda m: m[0]) if margins else (-math.inf, None)
    worse_boundary = 1.0 / (budget * closest.share) if closest is not None else 1.0 / budget
    worse_value = math.exp(min(closest.log_evidence(), 700.0)) if closest is not None else 1.0
    regressed = margin >= 0
    promote_boundary = 1.0 / (1.0 - settings.confidence)
    steps = step_log >= math.log(STEP_EVIDENCE) and step_requests >= settings.min_requests
    report = GateReport(
        gate=gate, target=new.target, baseline=new.baseline, reference_rate=p, tolerance=tolerance,
        evidence=worse_value / worse_boundary, worse_value=worse_value, worse_boundary=worse_boundary,
        step_value=math.exp(min(step_log, 700.0)), accept_value=math.exp(min(new.accept_log, 700.0)),
        promote_boundary=promote_boundary, bad_rate=bad, boundary_ms=boundary,
        regressed=regressed, steps=steps,
        promotes=steps and new.accept_log >= math.log(promote_boundary) and at_max,
    )
    return new, report


# --- words --------------------------------------------------------------------------------------


def _count(x: float) -> str:
    return f"{round(x):,}"


def _pct(x: float | None) -> str:
    if x is None:
        return "no requests"
    v = 100 * x
    return f"{v:.2g} %" if v < 10 else f"{v:.0f} %"


def _ratio(x: float) -> str:
    if x >= 1000:
        return f"{x:.3g}".replace("e+0", "e").replace("e+", "e")
    return f"{x:.3g}"


def counts_text(tally: Tally) -> str:
    """``14 of 1,020 requests (1.4 %)``."""
    return f"{_count(tally.events)} of {_count(tally.requests)} requests ({_pct(tally.rate)})"


def describe(report: GateReport, *, target: str, baseline: str, confidence: float) -> str:
    """One gate's figures in plain words, e.g. "v2: 14 errors in 1,020 requests (1.4 %) vs v1: 0.5 %"."""
    t, b = report.target, report.baseline
    if report.gate == "errors":
        what = "error" if round(t.events) == 1 else "errors"
    else:
        what = f"request{'' if round(t.events) == 1 else 's'} slower than {report.boundary_ms:g} ms"
    head = (f"{target}: {_count(t.events)} {what} in {_count(t.requests)} requests ({_pct(t.rate)}) vs "
            f"{baseline}: {_pct(b.rate if b.requests else report.reference_rate)}")
    tol = f" + {report.tolerance:g} points" if report.tolerance else ""
    conf = f"{100 * confidence:g} %"
    if report.regressed:
        return (f"{head} — worse beyond tolerance{tol} with {conf} confidence "
                f"(evidence {_ratio(report.worse_value)} ≥ {_ratio(report.worse_boundary)})")
    if report.promotes:
        return (f"{head} — not worse than {_pct(report.bad_rate)} with {conf} confidence "
                f"(evidence {_ratio(report.accept_value)} ≥ {_ratio(report.promote_boundary)})")
    if report.steps:
        return (f"{head} — no sign of being worse, and enough requests since the last step "
                f"(evidence {_ratio(report.step_value)} ≥ {STEP_EVIDENCE:g})")
    return (f"{head} — not yet enough evidence either way (worse: {_ratio(report.worse_value)} of "
            f"{_ratio(report.worse_boundary)}; not worse: {_ratio(report.step_value)} of {STEP_EVIDENCE:g})")


__all__ = [
    "GRID",
    "GRID_WEIGHTS",
    "CounterReading",
    "GateReport",
    "GateState",
    "JudgeSettings",
    "JudgeState",
    "Judgement",
    "choose_boundary",
    "counts_text",
    "describe",
    "judge",
    "sum_groups",
]
