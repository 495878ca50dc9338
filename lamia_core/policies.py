"""Release policies: the settings of a canary release and how each judges an observation.

A policy is a pydantic model (a Prefect flow parameter, so it is JSON-schema
friendly: a union discriminated on ``kind``). Five kinds:

- ``compare`` (the default of a release): the target against the baseline on the
  same requests, errors and latency, by anytime-valid sequential tests
  (:mod:`lamia_core.judge`).
- ``time``: one step toward the target every interval, no metrics.
- ``health``: a step while the target is healthy by an expression (default
  ``external_upstream_rq_2xx / upstream_rq_total >= 0.8``: more than 20 %
  errors is unhealthy); each unhealthy observation backs off one step.
- ``metric``: an expression scored per version; weight moves toward the best.
- ``custom``: a program that names the version to favour, or nil to hold.

Every policy has the same common settings (step, interval, max weight, final
action, query window, minimum requests, what no data does, failure limit and
mode), so a flow can read them whatever the kind; the time policy ignores the
metric ones. Defaults follow the original Lamia where it had one (step 10,
every 10 s, unhealthy above 20 % errors).

:meth:`assess` is pure: given the current weights and the values measured per
version, it returns a :class:`Verdict` with its evidence. What the verdict does
to the weights is the engine's business (:mod:`lamia_core.engine`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from lamia_core import expressions
from lamia_core.errors import InvalidInput
from lamia_core.judge import JudgeSettings
from lamia_core.metrics import CATALOG, TOTAL, duration_seconds, metric_names
from lamia_core.text import evidence_text, number_text

#: The metric every observing policy needs: requests per version in the window (the catalog's).
REQUESTS_METRIC = TOTAL
#: The original Lamia's health check: the share of requests answered 2xx.
DEFAULT_HEALTH_EXPRESSION = f"external_upstream_rq_2xx / {TOTAL}"

#: version -> metric -> value, None when Prometheus had no data.
Values = Mapping[str, Mapping[str, float | None]]

# A Prometheus duration such as 30s, 1m, 1m30s, 2h.
#: rate() over a window needs several samples; Prometheus' own advice is four scrapes.
WINDOW_SCRAPES = 4
#: Seconds without a weight change after which a release rolls back, as in Argo Rollouts and Flagger.
DEFAULT_PROGRESS_DEADLINE = 600.0


def _metric_of(node: expressions.Expr) -> tuple[str | None, str] | None:
    """(version, metric) of a bare metric name (version None: the scored one) or a metric reference."""
    if isinstance(node, expressions.Name) and node.name in CATALOG:
        return None, node.name
    if isinstance(node, expressions.MetricRef) and node.metric in CATALOG:
        return node.version, node.metric
    return None


def value_range(program: expressions.Program) -> tuple[float, float] | None:
    """The values an expression can take when that is plain from its form (a metric; one count over
    the total count of the same version, a share from 0 to 1; one minus such a share); None otherwise."""
    if program.statements:
        return None
    node = program.result
    metric = _metric_of(node)
    if metric is not None:
        return 0.0, math.inf
    if (isinstance(node, expressions.Binary) and node.op == "-" and isinstance(node.left, expressions.Number)
            and node.left.value == 1):
        inner = value_range(expressions.Program(statements=(), result=node.right))
        return (0.0, 1.0) if inner == (0.0, 1.0) else None
    if isinstance(node, expressions.Binary) and node.op == "/":
        top, bottom = _metric_of(node.left), _metric_of(node.right)
        if (top is not None and bottom is not None and top[0] == bottom[0] and bottom[1] == REQUESTS_METRIC
                and CATALOG[top[1]].kind == "count"):
            return 0.0, 1.0
    return None


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: float | str | None) -> str:
    # The languages' word for no value is nil, in their messages too.
    return number_text(value, none="nil")


class Evidence(BaseModel):
    """One measured value and what it was compared with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str | None
    """The version measured; None for a value about the release as a whole."""
    metric: str
    """A metric name or the expression's text."""
    value: float | str | None
    """The measured value (a version name for a custom program); None = no data."""
    threshold: float | None = None
    comparison: str
    """How value was judged: ``>=``, ``<=``, ``min requests``, ``best (higher)``, ``chooses``..."""
    passed: bool | None = None
    """True/False when the value was judged; None when it could not be (nil) or was for reference."""

    def describe(self) -> str:
        return evidence_text(self, none="nil")


#: What one check concluded; not :class:`lamia_core.outcome.Outcome`, how a whole release ended.
CheckResult = Literal["pass", "fail", "no_data", "hold"]


class Verdict(BaseModel):
    """What a policy concluded from one observation.

    - ``pass``: move toward ``favour`` (the target, or the best-scoring version).
    - ``fail``: the evidence favours the baseline (unhealthy target, baseline
      scored best, program chose the baseline): a failure, and a step back.
    - ``no_data``: not enough requests or a nil value: no verdict possible.
    - ``hold``: a verdict that asks for no change (a custom program's nil).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: CheckResult
    favour: str | None = None
    reason: str
    evidence: tuple[Evidence, ...] = ()
    ranking: tuple[str, ...] = ()
    """Versions from best to worst where the policy ranks them (metric); the engine takes weight
    from the worst first."""
    rollback: bool = False
    """A failure decisive on its own (the compare judge's): roll back now, whatever the failure limit."""


class _Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str

    step: int = Field(
        10,
        ge=1,
        le=100,
        description="Percentage points of traffic moved toward the target at each step (1..100). "
        "Original Lamia: 10.",
    )
    interval: float = Field(
        10.0,
        gt=0,
        le=86400,
        description="Seconds between steps, which is also how often metrics are checked. Original Lamia: 10.",
    )
    max_weight: int = Field(
        100,
        ge=1,
        le=100,
        description="Highest weight (percent) the release gives the target. Below 100, the target stops "
        "there and the final action decides what happens next.",
    )
    progress_deadline: float | None = Field(
        DEFAULT_PROGRESS_DEADLINE,
        gt=0,
        description="Seconds a release may go without changing weights (holding for lack of data or "
        "traffic, or a judge that cannot decide) before it rolls back to the baseline. Default 600, as "
        "Argo Rollouts and Flagger; empty: hold for as long as it takes.",
    )
    scrape_interval: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="Seconds between two scrapes of Istio's metrics by Prometheus (Prometheus' usual 15 s). "
        "A check that sees no newer sample than the last one counted is not a new observation. The "
        "flow reads the real interval from Prometheus when it can and uses that instead.",
    )
    final_action: Literal["promote", "hold"] = Field(
        "promote",
        description="What to do once the target has held max weight for one more interval (and, for "
        "policies that check metrics, passed a check there): 'promote' sends all traffic to it, 'hold' "
        "leaves the weights as they are and ends the release.",
    )
    # The metric settings: common to every policy so that a flow can read them whatever the kind,
    # but unused by the time policy.
    window: str = Field(
        "1m",
        description="Prometheus query window over which metrics are computed (e.g. 30s, 1m, 5m). It must "
        f"span at least {WINDOW_SCRAPES} scrape intervals so that rates have enough samples.",
    )
    min_requests: int = Field(
        20,
        ge=0,
        description="Requests a version must have received within the query window before its metrics "
        "count; below it the observation is 'not enough data'.",
    )
    no_data: Literal["hold", "fail"] = Field(
        "hold",
        description="What an observation without enough data does: 'hold' waits another interval without "
        "changing weights, 'fail' also counts it as a failure.",
    )
    failure_limit: int = Field(
        3,
        ge=1,
        description="Failures after which the release rolls back to the baseline (all traffic).",
    )
    failure_mode: Literal["consecutive", "total"] = Field(
        "consecutive",
        description="Count 'consecutive' failures (a passing check resets the count) or the 'total' "
        "number of failures in the release.",
    )

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        v = v.strip()
        if duration_seconds(v) <= 0:
            raise InvalidInput(f"query window {v!r} must be longer than zero")
        return v

    @property
    def observes(self) -> bool:
        """Whether the policy needs metric observations (all but time)."""
        return False

    @property
    def uses_window(self) -> bool:
        """Whether the policy's metrics are computed over the query window (all but time and compare)."""
        return self.observes

    @property
    def window_seconds(self) -> float:
        return duration_seconds(self.window)

    def validate_for(self, versions: Collection[str], *, scrape_interval: float | None = None) -> None:
        """Check the settings against a release's versions and Prometheus' scrape interval (the one
        given, else the setting); raises InvalidInput / LanguageError."""
        scrape_interval = self.scrape_interval if scrape_interval is None else scrape_interval
        if not self.observes or not self.uses_window:
            return
        if self.window_seconds < WINDOW_SCRAPES * scrape_interval:
            raise InvalidInput(
                f"query window {self.window} is shorter than {WINDOW_SCRAPES} scrape intervals "
                f"({WINDOW_SCRAPES} x {scrape_interval:g} s): rates over it would be missing or noisy"
            )

    def required_metrics(self, versions: Collection[str]) -> frozenset[str]:
        """Metric names to query for every version."""
        return frozenset()

    def assess(self, *, baseline: str, target: str, versions: Sequence[str],
               weights: Mapping[str, int], values: Values) -> Verdict:
        raise NotImplementedError


class TimePolicy(_Policy):
    """Step toward the target every interval, whatever the metrics say (the metric settings are unused)."""

    kind: Literal["time"] = "time"

    def assess(self, *, baseline: str, target: str, versions: Sequence[str],
               weights: Mapping[str, int], values: Values) -> Verdict:
        return Verdict(outcome="pass", favour=target, reason=f"{self.interval:g} s elapsed")


class _ObservingPolicy(_Policy):
    #: What the expression must evaluate to.
    _gives: ClassVar[Literal["number", "version"]] = "number"
    # The parsed program and what it reads per list of versions, keyed by the source they came from:
    # model_copy(update=...) changes fields without running model_post_init again.
    _parsed: tuple[str, expressions.Program] | None = PrivateAttr(default=None)
    _reads: dict[tuple[str, tuple[str, ...]], frozenset[tuple[str | None, str]]] = PrivateAttr(
        default_factory=dict)

    @property
    def observes(self) -> bool:
        return True

    @property
    def source(self) -> str:
        """The expression or program text."""
        raise NotImplementedError

    def model_post_init(self, context: Any, /) -> None:
        # Parse once: assess() runs at every decision. Metric names are checked
        # now; version names only once a release names its versions.
        expressions.analyse(self._program, metrics=metric_names(), versions=None)

    @property
    def _program(self) -> expressions.Program:
        if self._parsed is None or self._parsed[0] != self.source:
            self._parsed = (self.source, expressions.parse_expression(self.source))
        return self._parsed[1]

    def _pairs(self, versions: Sequence[str]) -> frozenset[tuple[str | None, str]]:
        key = (self.source, tuple(versions))
        pairs = self._reads.get(key)
        if pairs is None:
            pairs = expressions.analyse(self._program, metrics=metric_names(), versions=key[1]).pairs
            self._reads[key] = pairs
        return pairs

    def validate_for(self, versions: Collection[str], *, scrape_interval: float | None = None) -> None:
        super().validate_for(versions, scrape_interval=scrape_interval)
        names = tuple(versions)
        self._pairs(names)
        if names:
            self._check_result(names)

    def _check_result(self, versions: tuple[str, ...]) -> None:
        """Evaluate once on made-up data (every metric 1 for every version) to catch a result of the
        wrong type early; a program whose every path gives the wrong type is the usual mistake."""
        probe = {v: dict.fromkeys(metric_names(), 1.0) for v in versions}
        result = expressions.evaluate(self._program, probe, version=versions[-1], versions=versions)
        if result is None:
            return
        if self._gives == "number" and not _is_number(result):
            raise InvalidInput(
                f"the {self.kind} expression {self.source!r} must give a number, but gives the version "
                f"{result!r} when every metric is 1"
            )
        if self._gives == "version" and not isinstance(result, str):
            raise InvalidInput(
                f"the {self.kind} program must give a version (or nil), but gives the number "
                f"{_fmt(result)} when every metric is 1"
            )

    def required_metrics(self, versions: Collection[str]) -> frozenset[str]:
        names = {metric for _, metric in self._pairs(tuple(versions))}
        names.add(REQUESTS_METRIC)
        return frozenset(names)

    def _requests(self, versions: Sequence[str], values: Values) -> tuple[list[Evidence], list[str]]:
        """Evidence of the request counts, and the versions below min_requests."""
        evidence: list[Evidence] = []
        short: list[str] = []
        for v in versions:
            n = values.get(v, {}).get(REQUESTS_METRIC)
            ok = n is not None and n >= self.min_requests
            if not ok:
                short.append(v)
            evidence.append(Evidence(version=v, metric=REQUESTS_METRIC, value=n, threshold=self.min_requests,
                                     comparison="min requests", passed=ok))
        return evidence, short

    def _not_enough(self, short: list[str], evidence: list[Evidence]) -> Verdict:
        return Verdict(
            outcome="no_data",
            reason=f"not enough data: fewer than {self.min_requests} requests in {self.window} "
            f"for {', '.join(short)}",
            evidence=tuple(evidence),
        )

    def _number(self, versions: Sequence[str], values: Values, version: str) -> float | None:
        result = expressions.evaluate(self._program, values, version=version, versions=versions)
        # A version name where a number is due cannot be compared: treat it as no value.
        return float(result) if _is_number(result) else None


class _Scored(_ObservingPolicy):
    direction: Literal["higher", "lower"] = Field(
        "higher",
        description="Whether a 'higher' value of the expression is better (success ratios) or a 'lower' "
        "one (latency, error ratios).",
    )

    def _better(self, a: float, b: float) -> bool:
        return a >= b if self.direction == "higher" else a <= b


class HealthPolicy(_Scored):
    """Step toward the target while its health expression passes the threshold.

    The original Lamia's check, kept as it was: the target alone, over the query window, against a
    fixed threshold. What it lets through: with the default threshold 0.8, any target failing fewer
    than about 20 % of its requests is promoted (a target failing 2 % or 5 % of them passes every
    check); flapping errors pass in consecutive mode, since one passing check resets the count; a
    shared outage that fails the baseline as much as the target rolls back a good target, since
    the baseline's values are shown but not used; and with windows longer than the interval each
    request is judged in several checks. ``compare`` judges the target against the baseline instead.
    """

    kind: Literal["health"] = "health"
    expression: str = Field(
        DEFAULT_HEALTH_EXPRESSION,
        description="Expression evaluated on the target's metrics. The default is the share of requests "
        "answered 2xx, as in the original Lamia.",
    )
    threshold: float = Field(
        0.8,
        description="The target is healthy when the expression is >= threshold (direction 'higher') or "
        "<= threshold (direction 'lower'). Default 0.8: more than 20% errors is unhealthy, as in the "
        "original Lamia.",
    )

    @property
    def source(self) -> str:
        return self.expression

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        reach = value_range(self._program)
        if reach is not None and not reach[0] <= self.threshold <= reach[1]:
            lo, hi = reach
            what = ("a share of requests, a number from 0 to 1 (e.g. 0.8 for 80 %)" if (lo, hi) == (0.0, 1.0)
                    else f"a number from {_fmt(lo)} to {_fmt(hi)}")
            raise InvalidInput(f"threshold {_fmt(self.threshold)} is outside what {self.expression!r} can "
                               f"reach: it is {what}")

    def assess(self, *, baseline: str, target: str, versions: Sequence[str],
               weights: Mapping[str, int], values: Values) -> Verdict:
        evidence, short = self._requests((target,), values)
        if short:
            return self._not_enough(short, evidence)
        value = self._number(versions, values, target)
        comparison = ">=" if self.direction == "higher" else "<="
        healthy = None if value is None else self._better(value, self.threshold)
        evidence.append(Evidence(version=target, metric=self.expression, value=value,
                                 threshold=self.threshold, comparison=comparison, passed=healthy))
        if weights.get(baseline, 0) > 0:
            # For the reader of a notification: how the baseline fares on the same check.
            ref = self._number(versions, values, baseline)
            evidence.append(Evidence(version=baseline, metric=self.expression, value=ref,
                                     comparison="reference"))
        measured = (f"{self.expression} = {_fmt(value)} over {self.window} "
                    f"(healthy when {comparison} {_fmt(self.threshold)})")
        if healthy is None:
            return Verdict(outcome="no_data", reason=f"no data: {target} {measured}",
                           evidence=tuple(evidence))
        if healthy:
            return Verdict(outcome="pass", favour=target, reason=f"{target} healthy: {measured}",
                           evidence=tuple(evidence))
        return Verdict(outcome="fail", favour=baseline, reason=f"{target} unhealthy: {measured}",
                       evidence=tuple(evidence))


class MetricPolicy(_Scored):
    """Score every version with an expression; each step moves weight toward the best."""

    kind: Literal["metric"] = "metric"
    expression: str = Field(
        DEFAULT_HEALTH_EXPRESSION,
        description="Expression scored for each version of the release (a metric name alone refers to the "
        "version being scored). Each step moves weight toward the best score; a version without data "
        "(nil) cannot win.",
    )
    tolerance: float = Field(
        0.0,
        ge=0,
        description="Scores within this distance of the best count as tied; ties go to the target, then "
        "the other candidates in release order, the baseline last, so noise alone does not roll back.",
    )

    @property
    def source(self) -> str:
        return self.expression

    def assess(self, *, baseline: str, target: str, versions: Sequence[str],
               weights: Mapping[str, int], values: Values) -> Verdict:
        # Only versions with traffic can be measured; a version at 0 has dropped out.
        live = [v for v in versions if weights.get(v, 0) > 0]
        evidence, short = self._requests(live, values)
        if short:
            return self._not_enough(short, evidence)
        scores = {v: self._number(versions, values, v) for v in live}
        scored = {v: s for v, s in scores.items() if s is not None}
        # Preference among equals: the target, other candidates, the baseline last.
        order = [target, *(v for v in live if v not in (target, baseline)), baseline]
        best: str | None = None
        if scored:
            top = max(scored.values()) if self.direction == "higher" else min(scored.values())
            best = next(v for v in order if v in scored and abs(scored[v] - top) <= self.tolerance)
        comparison = f"best ({self.direction})"
        for v in live:
            s = scores[v]
            evidence.append(Evidence(version=v, metric=self.expression, value=s, comparison=comparison,
                                     passed=None if s is None else v == best))
        if best is None:
            return Verdict(outcome="no_data", reason=f"no data: {self.expression} is nil for every version",
                           evidence=tuple(evidence))
        sign = -1.0 if self.direction == "higher" else 1.0

        def rank(v: str) -> tuple[bool, float, int]:
            s = scores[v]
            # Best first, then by score, nil last, then by preference.
            return (v != best, float("inf") if s is None else sign * s, order.index(v))

        ranking = tuple(sorted(live, key=rank))
        listing = ", ".join(f"{v}={_fmt(scores[v])}" for v in ranking)
        if best == baseline:
            return Verdict(outcome="fail", favour=baseline, ranking=ranking, evidence=tuple(evidence),
                           reason=f"baseline {baseline} scores best by {self.expression}: {listing}")
        return Verdict(outcome="pass", favour=best, ranking=ranking, evidence=tuple(evidence),
                       reason=f"{best} scores best by {self.expression}: {listing}")


class CustomPolicy(_ObservingPolicy):
    """A program that names the version to favour at each step, or nil to change nothing."""

    kind: Literal["custom"] = "custom"
    _gives: ClassVar[Literal["number", "version"]] = "version"
    program: str = Field(
        description="Program that returns the version to move traffic toward (the target to advance, "
        "the baseline to back off, which counts as a failure) or nil to hold. A metric name without a "
        "version refers to the target. Example: "
        'ok1 = metric "v1" "external_upstream_rq_2xx" / metric "v1" "upstream_rq_total"; '
        'ok2 = metric "v2" "external_upstream_rq_2xx" / metric "v2" "upstream_rq_total"; '
        'if ok2 >= ok1 { best = "v2"; } else { best = "v1"; } best',
    )

    @property
    def source(self) -> str:
        return self.program

    def _read_versions(self, baseline: str, target: str, versions: Sequence[str],
                       weights: Mapping[str, int]) -> list[str]:
        read = {target if v is None else v for v, _ in self._pairs(tuple(versions))}
        # A version without traffic can't be measured; the program sees its values as nil.
        return [v for v in versions if v in read and weights.get(v, 0) > 0]

    def assess(self, *, baseline: str, target: str, versions: Sequence[str],
               weights: Mapping[str, int], values: Values) -> Verdict:
        evidence, short = self._requests(self._read_versions(baseline, target, versions, weights), values)
        if short:
            return self._not_enough(short, evidence)
        result = expressions.evaluate(self._program, values, version=target, versions=versions)
        chosen = result if isinstance(result, str) else None
        evidence.append(Evidence(version=None, metric=self.program, value=result, comparison="chooses",
                                 passed=None if chosen not in (target, baseline) else chosen == target))
        if result is None:
            if all(weights.get(v, 0) == 0 for v in versions if v != target):
                # The target has all the traffic: a program comparing it with the baseline has nothing
                # left to compare with, and holding would wait forever.
                return Verdict(outcome="pass", favour=target, evidence=tuple(evidence),
                               reason=f"program returned nil with {target} taking all the traffic "
                               "(nothing left to compare with)")
            return Verdict(outcome="hold", reason="program returned nil: no change", evidence=tuple(evidence))
        if chosen == target:
            return Verdict(outcome="pass", favour=target, reason=f"program chose the target {target}",
                           evidence=tuple(evidence))
        if chosen == baseline:
            return Verdict(outcome="fail", favour=baseline, reason=f"program chose the baseline {baseline}",
                           evidence=tuple(evidence))
        what = f"version {chosen}, which is neither baseline nor target" if chosen else f"the number {result}"
        return Verdict(outcome="hold", reason=f"program returned {what}: no change", evidence=tuple(evidence))


class ComparePolicy(_Policy):
    """Compare the target with the baseline on the same requests, by anytime-valid sequential tests.

    Errors (5xx answers) and slow requests of the target against the baseline's at the same
    instants, each request counted once (:mod:`lamia_core.judge` says how): the release rolls back
    as soon as the target is worse beyond tolerance with the given confidence, steps forward when
    the requests since the last step give evidence that it is not clearly worse, and is promoted
    from max weight with that evidence at the given confidence over the whole release. The query
    window, failure limit and mode and no-data settings are not used: the tests weigh all the
    evidence themselves, and no data holds (until the progress deadline).
    """

    kind: Literal["compare"] = "compare"
    interval: float = Field(
        15.0,
        gt=0,
        le=86400,
        description="Seconds between checks; each check that sees a new scrape counts, and each is timed "
        "just after the last scrape due within the interval, so it reads the newest requests. Checking "
        "often does not raise the false-rollback risk (the tests are anytime-valid), so the default is "
        "one scrape interval.",
    )
    max_weight: int = Field(
        50,
        ge=1,
        le=100,
        description="Highest weight (percent) the target gets before the final action; from there, with "
        "enough evidence, it is promoted. Default 50, as Flagger's usual maxWeight.",
    )
    confidence: float = Field(
        0.99,
        gt=0.5,
        lt=1.0,
        description="Confidence of a rollback (the chance of rolling back a target that is not worse beyond "
        "tolerance stays below 1 - confidence, however long the release) and of a promotion (a target "
        "clearly worse is promoted with at most that chance).",
    )
    tolerance: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Percentage points of errors the target may have above the baseline before it counts as "
        "worse (0.5: 1.0 % is fine against a baseline at 0.5 %). Default 0: any regression the test can "
        "tell.",
    )
    errors: bool = Field(True, description="Judge the target's 5xx answers against the baseline's.")
    latency: bool = Field(
        True,
        description="Judge the target's request durations against the baseline's: its share of requests "
        "slower than the bucket bound that at most 10 % of the baseline's requests exceed.",
    )
    latency_tolerance: float = Field(
        5.0,
        ge=0,
        le=100,
        description="Percentage points of slow requests (over that bound) the target may have above the "
        "baseline before it counts as slower. Default 5.",
    )

    @property
    def observes(self) -> bool:
        return True

    @property
    def uses_window(self) -> bool:
        return False

    def validate_for(self, versions: Collection[str], *, scrape_interval: float | None = None) -> None:
        super().validate_for(versions, scrape_interval=scrape_interval)
        if not (self.errors or self.latency):
            raise InvalidInput("a compare policy needs at least one gate: errors, latency or both")
        scrape = self.scrape_interval if scrape_interval is None else scrape_interval
        if self.interval < scrape:
            raise InvalidInput(
                f"interval {self.interval:g} s is shorter than the scrape interval {scrape:g} s: most checks "
                "would see no new sample; check at most once per scrape"
            )

    def judge_settings(self) -> JudgeSettings:
        return JudgeSettings(
            confidence=self.confidence, error_tolerance=self.tolerance,
            latency_tolerance=self.latency_tolerance, errors=self.errors, latency=self.latency,
            step=self.step, max_weight=self.max_weight, min_requests=self.min_requests,
        )

    def assess(self, *, baseline: str, target: str, versions: Sequence[str],
               weights: Mapping[str, int], values: Values) -> Verdict:
        raise NotImplementedError("the compare policy judges counters through lamia_core.judge")


Policy = Annotated[TimePolicy | HealthPolicy | MetricPolicy | CustomPolicy | ComparePolicy,
                   Field(discriminator="kind")]
"""Any policy; the ``kind`` field says which."""

ObservingPolicy = HealthPolicy | MetricPolicy | CustomPolicy | ComparePolicy


def policy_kinds() -> dict[str, tuple[str, ...]]:
    """Each policy kind and the settings it takes (``kind`` aside), for messages and forms."""
    kinds: dict[str, tuple[str, ...]] = {}
    for model in (ComparePolicy, HealthPolicy, MetricPolicy, CustomPolicy, TimePolicy):
        kind = model.model_fields["kind"].default
        kinds[kind] = tuple(name for name in model.model_fields if name != "kind")
    return kinds
