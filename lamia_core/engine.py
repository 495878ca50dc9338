"""The release engine: a pure state machine from (spec, state, now, observation) to a decision.

No clock and no I/O: time is a parameter, so a whole release runs in virtual
time in tests. The flow applies each :class:`Decision` (weights to the
gateway), sleeps until ``wake_at``, observes, and calls :func:`decide` again.

Semantics (the defaults are those of the policies, :mod:`lamia_core.policies`):

- :func:`start` makes the first step: the target gets one step from the
  baseline (time, health, custom); a metric release gives every candidate
  without weight one step, so that all of them can be scored.
- Weight moves between the baseline and the release's candidates only (the
  target; for a metric policy every version but the baseline). Other versions
  of the route must start at 0 and stay there. Weights are integers summing to
  100; no candidate ever exceeds ``max_weight``.
- A passing verdict moves one step toward the favoured version (taken from the
  worst-ranked versions first). Once it holds ``max_weight``, the next passing
  verdict applies the final action: ``promote`` (all traffic to it, even when
  max_weight < 100) or ``hold`` (the release ends with the weights as they are).
- A metric release is a contest: the best-scoring version (ties go to the
  target) gains, the worst gives first and may drop to 0 (out of the running);
  the version promoted (``state.winner``) may be another candidate than the
  target. The baseline scoring best is a failure.
- A failing verdict (unhealthy target, baseline best, program chose the
  baseline) counts a failure and moves one step back toward the baseline,
  never taking a candidate below one step, so that it keeps getting traffic
  to be judged on. At ``failure_limit`` failures (consecutive or total)
  the release rolls back: baseline 100.
- No data holds, or with ``no_data="fail"`` counts a failure without moving. A hold
  that would leave the weights unchanged for longer than ``progress_deadline`` (600 s
  by default; empty to wait forever) rolls back instead, so a release without traffic
  or a judge that cannot decide does not wait forever; the reason says so.
- A compare release (:mod:`lamia_core.judge`) keeps the judge's counts and test
  statistics in ``state.judge``: its verdicts step, promote, hold or roll back at once
  (a regression shown with the policy's confidence needs no failure count); its no
  data holds, never fails nor passes.
- Terminal phases (promoted, rolled-back, held: each named like its Outcome) answer ``finish`` forever;
  rollback and abort always leave the baseline at 100: a gateway is never left
  half-shifted unless the user asked for a hold.

Which observations count: one taken before ``last_change_at + interval``
(i.e. before the current weights had one interval of traffic; for the compare
judge, before the change itself, as it keeps intervals that straddle a change out
of a step's evidence on its own) or not newer than the last counted one is
ignored, and so is one whose newest sample (``scraped_at``) is not newer than
the last change or than the newest sample of the last one counted (Prometheus
had not scraped again), so a verdict is never drawn twice from the same data nor
from a moment before the change it judges. The query window
(default 1m) may still reach back before the change; that is accepted on
purpose: metrics are per version, and a version's error ratio or latency
doesn't depend on its weight, so older traffic is still evidence about the same
version and makes ratios steadier. The cost is that a recovery (or a
regression) shows fully only after one window.

When: every check is one interval after the previous one, except that a compare
release's checks are timed just after a scrape (:func:`next_check`): at a random
phase a check reads data half a scrape interval old on average, and a bad target
serves failed requests while the verdict waits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lamia_core._base import Frozen
from lamia_core.errors import InvalidInput
from lamia_core.judge import (
    STEP_EVIDENCE,
    CounterReading,
    Judgement,
    JudgeState,
    counts_text,
    describe,
    judge,
)
from lamia_core.models import (
    DEFAULT_ROUTE,
    AppName,
    NamespaceName,
    RouteName,
    VersionName,
    Weights,
    check_label_value,
    check_two_versions,
)
from lamia_core.outcome import Outcome
from lamia_core.policies import (
    ComparePolicy,
    Evidence,
    MetricPolicy,
    Policy,
    TimePolicy,
    Verdict,
)
from lamia_core.text import weights_text

__all__ = [
    "TERMINAL_PHASES",
    "Decision",
    "Evidence",
    "Observation",
    "ReleaseSpec",
    "ReleaseState",
    "abort",
    "decide",
    "held",
    "next_check",
    "promote_now",
    "start",
]

#: Where a release stands; a terminal phase is named like its Outcome (lamia_core.outcome).
Phase = Literal["progressing", "promoted", "rolled-back", "held"]
Action = Literal["set_weights", "hold", "promote", "rollback", "finish"]
TERMINAL_PHASES: frozenset[str] = frozenset(o.value for o in (Outcome.PROMOTED, Outcome.ROLLED_BACK,
                                                               Outcome.HELD))


class ReleaseSpec(Frozen):
    """What to release and how: the flow's input."""

    namespace: NamespaceName = Field(description="Namespace of the application.")
    app: AppName = Field(description="The application: value of the Deployments' 'app' label.")
    baseline: VersionName = Field(
        description="Version that serves traffic now and gets it all back on rollback."
    )
    target: VersionName = Field(description="Version being released.")
    versions: tuple[str, ...] = Field(
        (),
        description="Every version in the route (baseline and target among them); empty means just the "
        "baseline and the target. A metric policy scores all of them; other policies keep versions other "
        "than baseline and target at weight 0.",
    )
    policy: Policy = Field(description="How the release moves traffic; 'kind' selects the policy.")
    route: RouteName = Field(DEFAULT_ROUTE, description="Gateway route whose weights the release moves.")
    initial_weights: dict[str, int] | None = Field(
        None,
        description="Weights the route has when the release starts; default: all traffic on the baseline.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_versions(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and not data.get("versions") and "baseline" in data and "target" in data:
            # dict.fromkeys: baseline == target is reported as such, not as a repeated version.
            data = {**data, "versions": tuple(dict.fromkeys((data["baseline"], data["target"])))}
        return data

    @field_validator("versions")
    @classmethod
    def _versions(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            check_label_value("version", name)
        dup = sorted({n for n in v if v.count(n) > 1})
        if dup:
            raise InvalidInput(f"versions are listed more than once: {', '.join(dup)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> ReleaseSpec:
        check_two_versions(self.baseline, self.target)
        missing = [v for v in (self.baseline, self.target) if v not in self.versions]
        if missing:
            raise InvalidInput(
                f"version(s) {', '.join(missing)} not among the release's versions "
                f"({', '.join(self.versions)})"
            )
        self.policy.validate_for(self.versions)
        w = self.start_weights()
        fixed = [v for v in self.versions if v not in (self.baseline, *self.candidates) and w[v] > 0]
        if fixed:
            desc = ", ".join(f"{v}={w[v]}" for v in fixed)
            raise InvalidInput(
                f"a {self.policy.kind} release moves traffic between {self.baseline} and {self.target} only; "
                f"other versions must start at weight 0, got {desc}"
            )
        if isinstance(self.policy, MetricPolicy):
            clamped = _clamp(w, self)
            unseeded = [v for v in self.candidates if clamped[v] == 0]
            need = _floor_step(self) * len(unseeded)
            if need > clamped[self.baseline]:
                raise InvalidInput(
                    f"a metric release needs {need}% on baseline {self.baseline} to give each of "
                    f"{', '.join(unseeded)} a first step of {_floor_step(self)}%, but it has "
                    f"{clamped[self.baseline]}%: lower the step or set initial weights"
                )
        return self

    @property
    def candidates(self) -> tuple[str, ...]:
        """Versions the release may move traffic to: the target; for a metric policy, all but the baseline."""
        if isinstance(self.policy, MetricPolicy):
            return tuple(v for v in self.versions if v != self.baseline)
        return (self.target,)

    def start_weights(self) -> dict[str, int]:
        """The route's weights before the release, over all versions."""
        if self.initial_weights is None:
            return {v: 100 if v == self.baseline else 0 for v in self.versions}
        given = Weights(self.initial_weights)
        unknown = [v for v in given.versions if v not in self.versions]
        if unknown:
            raise InvalidInput(
                f"initial weights name version(s) {', '.join(unknown)} not among the release's versions "
                f"({', '.join(self.versions)})"
            )
        return {v: given[v] for v in self.versions}


class Observation(Frozen):
    """Metric values per version at one moment (each over the policy's query window), or the raw
    counters (compare policy)."""

    time: float
    values: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    """version -> metric -> value; None when Prometheus had no data."""
    scraped_at: float | None = None
    """Time of the newest sample behind the values; None when unknown (then it is not checked)."""
    counters: CounterReading | None = None
    """The raw counters now (compare policy)."""
    start_counters: CounterReading | None = None
    """The raw counters when the release started, read for the first check of a compare release."""
    unavailable: str | None = None
    """Why there is nothing to judge (Prometheus unreachable, or answering garbage): no data, said."""


class ReleaseState(Frozen):
    phase: Phase
    weights: Weights
    steps: int = 0
    """Weight changes made so far."""
    failures: int = 0
    consecutive_failures: int = 0
    observations: int = 0
    """Observations that counted toward a verdict."""
    started_at: float
    last_change_at: float
    next_check_at: float | None = None
    last_observation_at: float | None = None
    winner: str | None = None
    """The version promoted, once the release has been."""
    last_scrape_at: float | None = None
    """Time of the newest sample behind the last observation counted."""
    judge: JudgeState | None = None
    """The compare judge's counts and test statistics so far."""

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


class Decision(Frozen):
    action: Action
    weights: Weights | None = None
    """The weights to apply (set_weights, promote, rollback); None when nothing changes."""
    reason: str
    """One line: what was seen and what is done about it."""
    evidence: tuple[Evidence, ...] = ()
    state: ReleaseState
    """The state after this decision: pass it to the next :func:`decide`."""
    wake_at: float | None = None
    """When to observe and decide next; None once the release is over."""

    @field_validator("reason")
    @classmethod
    def _one_line(cls, v: str) -> str:
        # Expressions may span lines; a reason goes into one log or Slack line.
        return " ".join(v.split())


# -- weights arithmetic --------------------------------------------------------------------------


def _floor_step(spec: ReleaseSpec) -> int:
    """One step, as far as max weight allows: the least weight a judged candidate keeps."""
    return min(spec.policy.step, spec.policy.max_weight)


def _clamp(w: Mapping[str, int], spec: ReleaseSpec) -> dict[str, int]:
    """``w`` with every candidate brought down to max weight, the excess going to the baseline."""
    out = dict(w)
    for v in spec.candidates:
        excess = out[v] - spec.policy.max_weight
        if excess > 0:
            out[v] -= excess
            out[spec.baseline] += excess
    return out


def _shift(w: Mapping[str, int], toward: str, donors: Iterable[str], amount: int, cap: int,
           floors: Mapping[str, int] | None = None) -> dict[str, int]:
    """Move up to ``amount`` to ``toward`` (never past ``cap``), taking from ``donors`` in order."""
    out = dict(w)
    want = min(amount, cap - out[toward])
    for d in donors:
        if want <= 0:
            break
        if d == toward:
            continue
        give = min(want, out[d] - (floors or {}).get(d, 0))
        if give > 0:
            out[d] -= give
            out[toward] += give
            want -= give
    return out


def _weights(spec: ReleaseSpec, w: Mapping[str, int]) -> Weights:
    return Weights({v: w[v] for v in spec.versions})


def _t(t: float) -> str:
    """A time in seconds (epoch seconds in a real flow) without exponent notation."""
    return f"{t:.3f}".rstrip("0").rstrip(".")


def _desc(w: Weights) -> str:
    return weights_text(w.root)


#: How long after a scrape's timestamp its samples are taken to be queryable, as a share of the scrape
#: interval and at most :data:`SCRAPE_LAG_MAX` seconds. Prometheus stamps a sample with the scrape's
#: start and stores it once the target has answered, normally within a fraction of a second; a check
#: that comes too early reads the scrape before, one interval old, which is what a check at a random
#: phase reads at worst.
SCRAPE_LAG_SHARE = 0.25
SCRAPE_LAG_MAX = 2.0


def next_check(policy: Policy, now: float, scraped: float | None) -> float:
    """When to check next: one interval on, or, for the compare judge, just after the last scrape
    due within that interval, so that a check reads each scrape soon after it lands.

    A check at a random phase of the scrapes would read a scrape half an interval late on average, and
    the requests served meanwhile (at a bad target's error rate) are the cost of the wait; the judge
    counts every request once whenever it is read, so reading earlier loses nothing. ``scraped`` is the
    newest sample time seen, already read; scrapes recur every ``policy.scrape_interval`` from it, and
    the next check reads one after it, even if that one lands up to the lag after one interval.
    """
    due = now + policy.interval
    if not isinstance(policy, ComparePolicy) or scraped is None:
        return due
    period = policy.scrape_interval
    lag = min(SCRAPE_LAG_MAX, SCRAPE_LAG_SHARE * period)
    scrapes = max(1, math.floor((due - lag - scraped) / period))
    aligned = scraped + scrapes * period + lag
    return aligned if aligned > now else due


# -- decisions -----------------------------------------------------------------------------------


def start(spec: ReleaseSpec, now: float, *, scraped_at: float | None = None) -> Decision:
    """The first decision: the first step toward the target (every candidate, for a metric policy).

    ``scraped_at``, the newest sample Prometheus has of the application when the release starts (if
    known), times the first check of a compare release just after a scrape, as all the later ones.
    """
    w = _clamp(spec.start_weights(), spec)
    if isinstance(spec.policy, MetricPolicy):
        for v in spec.candidates:
            if w[v] == 0:
                w = _shift(w, v, (spec.baseline,), _floor_step(spec), spec.policy.max_weight)
        what = f"every version gets traffic to be scored: {', '.join(spec.candidates)}"
    else:
        w = _shift(w, spec.target, (spec.baseline,), spec.policy.step, spec.policy.max_weight)
        what = f"first step toward {spec.target}"
    weights = _weights(spec, w)
    state = ReleaseState(
        phase="progressing", weights=weights, steps=1, started_at=now, last_change_at=now,
        next_check_at=next_check(spec.policy, now, scraped_at),
    )
    return Decision(
        action="set_weights", weights=weights, state=state, wake_at=state.next_check_at,
        reason=f"{spec.policy.kind} release of {spec.app} from {spec.baseline} to {spec.target} started, "
        f"{what}: {_desc(weights)}",
    )


def abort(spec: ReleaseSpec, state: ReleaseState, now: float, reason: str) -> Decision:
    """Roll back to the baseline (cancel, crash, failure of the flow itself); finish if already over."""
    if state.terminal:
        return _finish(state, f"release already {Outcome(state.phase).words}; nothing to abort ({reason})")
    return _rollback(spec, state, now, f"aborted: {reason}; rolling back to {spec.baseline}", ())


def promote_now(spec: ReleaseSpec, state: ReleaseState, now: float, reason: str) -> Decision:
    """A person promotes the target now (``lamia release promote``): all traffic to it, the release over."""
    if state.terminal:
        return _finish(state, f"release already {Outcome(state.phase).words}; nothing to promote "
                       f"({reason})")
    weights = _weights(spec, {v: 100 if v == spec.target else 0 for v in spec.versions})
    done = state.model_copy(update={
        "phase": "promoted", "weights": weights, "winner": spec.target, "next_check_at": None,
        "last_change_at": now, "steps": state.steps + (weights != state.weights),
    })
    return Decision(action="promote", weights=weights, state=done, reason=f"{reason}: {spec.target} promoted "
                    "to 100% by hand")


def held(spec: ReleaseSpec, state: ReleaseState, now: float, decision: Decision, why: str) -> Decision:
    """``decision`` seen but not applied (the release is paused, or waits for approval): the weights,
    and what the judge has counted, stay as in ``state``; the check is recorded with its evidence,
    and the time held does not count toward the progress deadline."""
    nxt = state.model_copy(update={"next_check_at": next_check(spec.policy, now, state.last_scrape_at),
                                   "last_change_at": now})
    return Decision(action="hold", state=nxt, evidence=decision.evidence, wake_at=nxt.next_check_at,
                    reason=f"{why}; the check says: {decision.reason}")


def decide(spec: ReleaseSpec, state: ReleaseState, now: float, observation: Observation | None) -> Decision:
    """The next decision, given the state left by the previous one, the time and the latest observation."""
    if state.terminal:
        return _finish(state, f"release {Outcome(state.phase).words}; nothing left to do")
    if state.next_check_at is not None and now < state.next_check_at:
        return Decision(action="hold", state=state, wake_at=state.next_check_at,
                        reason=f"too early: next check at t={_t(state.next_check_at)}, now t={_t(now)}")
    policy = spec.policy
    if isinstance(policy, TimePolicy):
        verdict = policy.assess(baseline=spec.baseline, target=spec.target, versions=spec.versions,
                                weights=state.weights.root, values={})
        return _apply(spec, state, now, verdict)
    if observation is None or observation.unavailable:
        why = observation.unavailable if observation is not None else "no observation"
        verdict = Verdict(outcome="no_data", reason=f"no data: {why}")
        return _apply(spec, state, now, verdict)
    # The judge counts each request once and keeps an interval that straddles a change out of a step's
    # evidence itself; windowed policies need their window's traffic to be mostly under the new weights.
    settled = state.last_change_at + (0.0 if isinstance(policy, ComparePolicy) else policy.interval)
    seen = max((t for t in (observation.scraped_at, state.last_scrape_at) if t is not None), default=None)
    if observation.time < settled or (
        state.last_observation_at is not None and observation.time <= state.last_observation_at
    ):
        nxt = state.model_copy(update={"next_check_at": next_check(policy, now, seen)})
        after = "the last change" if isinstance(policy, ComparePolicy) else (
            "one interval after the last change")
        return Decision(
            action="hold", state=nxt, wake_at=nxt.next_check_at,
            reason=f"observation of t={_t(observation.time)} ignored: it must be taken after t={_t(settled)} "
            f"({after}) and be newer than the last one counted",
        )
    scraped = observation.scraped_at
    if scraped is not None and (scraped <= state.last_change_at or (
            state.last_scrape_at is not None and scraped <= state.last_scrape_at)):
        return _hold(spec, state, now, Verdict(
            outcome="no_data",
            reason=f"no new scrape: the newest sample is from t={_t(scraped)}, not after the last change "
            f"(t={_t(state.last_change_at)})" + _nor_last(state),
        ), "not a new observation, holding", scraped=seen)
    update: dict[str, Any] = {"observations": state.observations + 1,
                              "last_observation_at": observation.time, "last_scrape_at": scraped}
    if isinstance(policy, ComparePolicy):
        if observation.counters is None:
            verdict = Verdict(outcome="no_data", reason="no data: no counters in the observation")
        else:
            judgement = judge(policy.judge_settings(), state.judge, observation.counters,
                              observation.start_counters, baseline=spec.baseline, target=spec.target,
                              weights=state.weights.root, changed_at=state.last_change_at)
            verdict = _compare_verdict(spec, policy, judgement)
            update["judge"] = judgement.state
    else:
        verdict = policy.assess(baseline=spec.baseline, target=spec.target, versions=spec.versions,
                                weights=state.weights.root, values=observation.values)
    return _apply(spec, state.model_copy(update=update), now, verdict)


def _nor_last(state: ReleaseState) -> str:
    last = state.last_scrape_at
    return "" if last is None else f" nor the last sample counted (t={_t(last)})"


def _compare_verdict(spec: ReleaseSpec, policy: ComparePolicy, judgement: Judgement) -> Verdict:
    """The judge's conclusion as a verdict, with each gate's figures in words and as evidence."""
    words = [describe(r, target=spec.target, baseline=spec.baseline, confidence=policy.confidence)
             for r in judgement.reports]
    evidence: list[Evidence] = []
    for r in judgement.reports:
        what = "errors" if r.gate == "errors" else f"slower than {r.boundary_ms:g} ms"
        for version, tally in ((spec.target, r.target), (spec.baseline, r.baseline)):
            evidence.append(Evidence(version=version, metric=what, value=counts_text(tally),
                                     comparison="count"))
        evidence.append(Evidence(version=spec.target, metric=f"evidence of worse {what} than {spec.baseline}",
                                 value=r.worse_value, threshold=r.worse_boundary, comparison="<",
                                 passed=not r.regressed))
        # At max weight what counts is the whole release's evidence, against the promotion's boundary.
        promoting = judgement.state.weight >= policy.max_weight
        evidence.append(Evidence(
            version=spec.target, metric=f"evidence of not clearly worse {what}",
            value=r.accept_value if promoting else r.step_value,
            threshold=r.promote_boundary if promoting else STEP_EVIDENCE, comparison=">=",
            passed=r.promotes if promoting else r.steps))
    text = "; ".join(words) or judgement.note
    if judgement.outcome == "rollback":
        return Verdict(outcome="fail", favour=spec.baseline, rollback=True, evidence=tuple(evidence),
                       reason=f"{text}: {spec.target} is worse than {spec.baseline}")
    if judgement.outcome in ("step", "promote"):
        return Verdict(outcome="pass", favour=spec.target, evidence=tuple(evidence), reason=text)
    if judgement.outcome == "no_data":
        return Verdict(outcome="no_data", evidence=tuple(evidence), reason=f"no data: {text}")
    return Verdict(outcome="hold", evidence=tuple(evidence), reason=text)


def _apply(spec: ReleaseSpec, state: ReleaseState, now: float, verdict: Verdict) -> Decision:
    policy = spec.policy
    if verdict.rollback:
        failed = state.model_copy(update={"failures": state.failures + 1,
                                          "consecutive_failures": state.consecutive_failures + 1})
        return _rollback(spec, failed, now, f"{verdict.reason}: rolling back to {spec.baseline}",
                         verdict.evidence)
    if isinstance(policy, ComparePolicy) and verdict.outcome == "no_data":
        # No data never counts as a pass nor, for the judge, as a failure: it waits (deadline).
        return _hold(spec, state, now, verdict, "holding")
    if verdict.outcome == "pass" and verdict.favour is not None:
        passed = state.model_copy(update={"consecutive_failures": 0})
        return _advance(spec, passed, now, verdict, verdict.favour)
    if verdict.outcome == "fail" or (verdict.outcome == "no_data" and policy.no_data == "fail"):
        return _failure(spec, state, now, verdict)
    return _hold(spec, state, now, verdict, "holding")


def _advance(spec: ReleaseSpec, state: ReleaseState, now: float, verdict: Verdict, favour: str) -> Decision:
    policy = spec.policy
    w = state.weights.root
    if w.get(favour, 0) >= policy.max_weight:
        if policy.final_action == "hold":
            done = state.model_copy(update={"phase": "held", "next_check_at": None})
            return _decision("finish", None, f"{verdict.reason}; {favour} at max weight {policy.max_weight}: "
                             f"holding there as asked ({_desc(state.weights)})", verdict, done, None)
        weights = _weights(spec, {v: 100 if v == favour else 0 for v in spec.versions})
        done = state.model_copy(update={
            "phase": "promoted", "weights": weights, "winner": favour, "next_check_at": None,
            "last_change_at": now, "steps": state.steps + (weights != state.weights),
        })
        return _decision("promote", weights, f"{verdict.reason}; {favour} at max weight {policy.max_weight}: "
                         f"promoting {favour} to 100%", verdict, done, None)
    # Take from the worst-ranked first; unranked versions (time, health, custom) give from the baseline.
    donors = [*reversed(verdict.ranking), spec.baseline, *spec.versions]
    shifted = _shift(w, favour, donors, policy.step, policy.max_weight)
    weights = _weights(spec, shifted)
    nxt = state.model_copy(update={
        "weights": weights, "steps": state.steps + 1, "last_change_at": now,
        "next_check_at": next_check(policy, now, state.last_scrape_at),
    })
    return _decision("set_weights", weights, f"{verdict.reason}; step {nxt.steps} toward {favour}: "
                     f"{_desc(weights)}", verdict, nxt, nxt.next_check_at)


def _failure(spec: ReleaseSpec, state: ReleaseState, now: float, verdict: Verdict) -> Decision:
    policy = spec.policy
    failed = state.model_copy(update={
        "failures": state.failures + 1, "consecutive_failures": state.consecutive_failures + 1,
    })
    count = failed.consecutive_failures if policy.failure_mode == "consecutive" else failed.failures
    tally = f"failure {count} of {policy.failure_limit} ({policy.failure_mode})"
    if count >= policy.failure_limit:
        return _rollback(spec, failed, now, f"{verdict.reason}; {tally}: rolling back to {spec.baseline}",
                         verdict.evidence)
    if verdict.outcome != "fail":
        return _hold(spec, failed, now, verdict, f"{tally}; holding")
    w = failed.weights.root
    floor = _floor_step(spec)
    floors = {c: min(floor, w.get(c, 0)) for c in spec.candidates}
    ranked = [v for v in reversed(verdict.ranking) if v != spec.baseline]
    donors = [*ranked, *(c for c in spec.candidates if c not in ranked)]
    shifted = _shift(w, spec.baseline, donors, policy.step, 100, floors)
    weights = _weights(spec, shifted)
    if weights == failed.weights:
        return _hold(spec, failed, now, verdict, f"{tally}; already at the least weight that still gets "
                     "judged, holding")
    nxt = failed.model_copy(update={
        "weights": weights, "steps": failed.steps + 1, "last_change_at": now,
        "next_check_at": next_check(policy, now, state.last_scrape_at),
    })
    return _decision("set_weights", weights, f"{verdict.reason}; {tally}: backing off toward "
                     f"{spec.baseline}: {_desc(weights)}", verdict, nxt, nxt.next_check_at)


def _hold(spec: ReleaseSpec, state: ReleaseState, now: float, verdict: Verdict, what: str, *,
          scraped: float | None = None) -> Decision:
    """Keep the weights, or roll back past the progress deadline. ``scraped``: the newest sample seen,
    when newer than the last one counted, for the timing of the next check."""
    deadline = spec.policy.progress_deadline
    stalled = now - state.last_change_at
    if deadline is not None and stalled >= deadline:
        which = "set" if "progress_deadline" in spec.policy.model_fields_set else "default"
        reason = (f"{verdict.reason}; undecided: no weight change for {stalled:g} s, past the progress "
                  f"deadline of {deadline:g} s ({which}): rolling back to {spec.baseline}")
        return _rollback(spec, state, now, reason, verdict.evidence)
    phase = scraped if scraped is not None else state.last_scrape_at
    nxt = state.model_copy(update={"next_check_at": next_check(spec.policy, now, phase)})
    return _decision("hold", None, f"{verdict.reason}; {what}", verdict, nxt, nxt.next_check_at)


def _rollback(spec: ReleaseSpec, state: ReleaseState, now: float, reason: str,
              evidence: Sequence[Evidence]) -> Decision:
    weights = _weights(spec, {v: 100 if v == spec.baseline else 0 for v in spec.versions})
    done = state.model_copy(update={
        "phase": Outcome.ROLLED_BACK.value, "weights": weights, "next_check_at": None, "last_change_at": now,
        "steps": state.steps + (weights != state.weights),
    })
    return Decision(action="rollback", weights=weights, reason=reason, evidence=tuple(evidence), state=done)


def _finish(state: ReleaseState, reason: str) -> Decision:
    return Decision(action="finish", reason=reason, state=state)


def _decision(action: Action, weights: Weights | None, reason: str, verdict: Verdict, state: ReleaseState,
              wake_at: float | None) -> Decision:
    return Decision(action=action, weights=weights, reason=reason, evidence=verdict.evidence, state=state,
                    wake_at=wake_at)
