"""Decision quality of release judges: many simulated releases per scenario, through the pure engine.

Each release runs in virtual time. Requests arrive as a Poisson process (10 or 100
per second), split by the weights in force, each version failing a share of its
requests (5xx) and answering in a log-normal time (median 20 ms) binned into duration
buckets. Before the release the baseline served an hour alone, so its counters carry
a history. Prometheus scrapes the counters every 15 s (at a random phase); a judge
reads what Prometheus would give it at the moment it checks:

- ``compare`` (the new default, ``ComparePolicy()`` as shipped): the raw counters of
  the newest scrape and their sample time (and, for the first check, those at the
  release's start), as ``lamia_core.prometheus.read_counters`` reads them;
- ``health`` at the seed's defaults (``HealthPolicy()``: 2xx share >= 0.8 over 1m, step
  10 every 10 s, three consecutive failures): ``increase()`` over the window computed as
  Prometheus does (extrapolated to the window's edges), and the newest sample time;
- ``flagger``: a model of Flagger's documented analysis (interval 1m, success rate >= 99 %
  over 1m by ``increase()``, 5 failed checks over the release, stepWeight 10, maxWeight
  50, no data is a failed check).

Scenarios: good (0.5 % errors like the baseline), bad 2 %, 5 %, 30 %, good that turns
bad (5 %) once it reaches 50 %, 3 % error bursts of 60 s hitting both versions every
15 minutes (random phase), the same bursts on the baseline only. A release not over
after an hour is undecided. It prints one table:

    .venv/bin/python bench/bench_decisions.py [--releases 1000] [--workers 2]

42,000 releases (1,000 per row) take about 35 ms each, so 12 minutes on two cores
(26 minutes while the test suite ran beside it); ``--releases 200`` gives a quick look.

Columns: share promoted / rolled back / undecided; wrong = rolled back (good scenarios)
or promoted (bad ones); failed requests served by the canary until the decision
(median, p90); time to decision in seconds (median, p90).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from lamia_core.engine import Observation, ReleaseSpec, decide, start
from lamia_core.judge import CounterReading
from lamia_core.policies import ComparePolicy, HealthPolicy

SCRAPE = 15.0
HORIZON = 3600.0
HISTORY = 3600.0
BASE_ERRORS = 0.005
#: Istio bucket bounds around the simulated latencies, and each bound's share of requests at or under.
BUCKETS = (10.0, 25.0, 50.0, 100.0)
#: Log-normal, median 20 ms, sigma 0.5: the share of requests at or under each bound.
UNDER = tuple(0.5 * (1 + math.erf(math.log(b / 20.0) / (0.5 * math.sqrt(2)))) for b in BUCKETS)
GROUP = "10.0.0.7:15020|reviews-7d9f"


def poisson(lam: float, rng: random.Random) -> int:
    if lam <= 0:
        return 0
    if lam < 30:
        limit, k, p = math.exp(-lam), 0, rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    # Large means: the normal approximation is ample for counts of requests.
    return max(0, round(rng.gauss(lam, math.sqrt(lam))))


@dataclass(frozen=True)
class Scenario:
    name: str
    good: bool
    target_errors: float = BASE_ERRORS
    turns_bad_at: int | None = None
    bursts: str | None = None  # "both" or "baseline"


SCENARIOS = (
    Scenario("good", True),
    Scenario("bad 2%", False, 0.02),
    Scenario("bad 5%", False, 0.05),
    Scenario("bad 30%", False, 0.30),
    Scenario("turns bad at 50%", False, turns_bad_at=50),
    Scenario("bursts, both", True, bursts="both"),
    Scenario("bursts, baseline", True, bursts="baseline"),
)


@dataclass
class World:
    """Two versions' counters in virtual time, and Prometheus' scrapes of them."""

    scenario: Scenario
    rps: float
    rng: random.Random
    t: float = 0.0
    bad: bool = False
    #: version -> [requests, errors, under each bucket...]
    counters: dict[str, list[float]] = field(default_factory=dict)
    scrapes: list[tuple[float, dict[str, tuple[float, ...]]]] = field(default_factory=list)
    next_scrape: float = 0.0
    failed_by_target: int = 0
    burst_phase: float = 0.0

    def __post_init__(self) -> None:
        self.next_scrape = self.rng.random() * SCRAPE
        self.burst_phase = self.rng.random() * 900.0
        n = poisson(self.rps * HISTORY, self.rng)
        e = poisson(n * BASE_ERRORS, self.rng)
        self.counters = {"v1": [float(n), float(e), *(float(round(n * u)) for u in UNDER)]}

    def error_rate(self, version: str) -> float:
        s = self.scenario
        base = s.target_errors if version == "v2" else BASE_ERRORS
        if version == "v2" and self.bad:
            base = 0.05
        in_burst = (self.t - self.burst_phase) % 900.0 < 60.0
        if s.bursts and (s.bursts == "both" or version == "v1") and in_burst:
            return max(base, 0.03)
        return base

    def run_until(self, until: float, weights: dict[str, int]) -> None:
        if self.scenario.turns_bad_at is not None and weights.get("v2", 0) >= self.scenario.turns_bad_at:
            self.bad = True
        while self.t < until:
            for version, w in weights.items():
                if w <= 0:
                    continue
                lam = self.rps * w / 100
                p = self.error_rate(version)
                errors = poisson(lam * p, self.rng)
                ok = poisson(lam * (1 - p), self.rng)
                c = self.counters.setdefault(version, [0.0] * (2 + len(BUCKETS)))
                n = ok + errors
                c[0] += n
                c[1] += errors
                # Bucket counts: one draw per bound of the requests above it.
                for i, u in enumerate(UNDER):
                    c[2 + i] += n - min(n, poisson(n * (1 - u), self.rng)) if n else 0
                if version == "v2":
                    self.failed_by_target += errors
            self.t += 1.0
            if self.t >= self.next_scrape:
                self.scrapes.append((self.next_scrape, {v: tuple(c) for v, c in self.counters.items()}))
                self.next_scrape += SCRAPE

    # -- what Prometheus answers -------------------------------------------------------------------

    def latest(self, at: float) -> tuple[float, dict[str, tuple[float, ...]]] | None:
        for ts, values in reversed(self.scrapes):
            if ts <= at:
                return ts, values
        return None

    def counters_at(self, at: float) -> CounterReading:
        found = self.latest(at)
        if found is None:
            return CounterReading(buckets=BUCKETS)
        ts, values = found
        series = {v: {GROUP: c} for v, c in values.items()}
        return CounterReading(buckets=BUCKETS, series=series, scraped_at=ts)

    def increase(self, version: str, index: int, at: float, window: float) -> float | None:
        samples = [(ts, vals[version][index]) for ts, vals in self.scrapes
                   if at - window < ts <= at and version in vals]
        return extrapolated_increase(samples, at - window, at)


def extrapolated_increase(samples: Sequence[tuple[float, float]], start: float, end: float) -> float | None:
    """Prometheus' ``increase()``: the change over the samples, extrapolated toward the window's edges."""
    if len(samples) < 2:
        return None
    first_t, first_v = samples[0]
    last_t = samples[-1][0]
    inc, prev = 0.0, first_v
    for _, v in samples[1:]:
        inc += v - prev if v >= prev else v
        prev = v
    sampled = last_t - first_t
    average = sampled / (len(samples) - 1)
    to_start, to_end = first_t - start, end - last_t
    if inc > 0 and first_v >= 0:
        to_start = min(to_start, sampled * (first_v / inc))
    threshold = average * 1.1
    duration = sampled + (to_start if to_start < threshold else average / 2)
    duration += to_end if to_end < threshold else average / 2
    return inc * duration / sampled


@dataclass(frozen=True)
class Result:
    outcome: str  # promoted, rolled back, undecided
    failed: int
    seconds: float


COMPARE: dict[str, object] = {}


def run_engine(policy_name: str, world: World) -> Result:
    policy = ComparePolicy(**COMPARE) if policy_name == "compare" else HealthPolicy()
    spec = ReleaseSpec(namespace="shop", app="reviews", baseline="v1", target="v2", policy=policy)
    t0 = HISTORY
    world.run_until(t0, {"v1": 100})
    found = world.latest(t0) if policy_name == "compare" else None
    d = start(spec, t0, scraped_at=found[0] if found else None)
    while d.wake_at is not None and d.wake_at - t0 <= HORIZON:
        world.run_until(d.wake_at, d.state.weights.as_dict())
        now = d.wake_at
        if policy_name == "compare":
            start_counters = None
            if d.state.judge is None or not d.state.judge.cursor:
                start_counters = world.counters_at(d.state.started_at)
            counters = world.counters_at(now)
            obs = Observation(time=now, counters=counters, start_counters=start_counters,
                              scraped_at=counters.scraped_at)
        else:
            values: dict[str, dict[str, float | None]] = {}
            for v in ("v1", "v2"):
                total = world.increase(v, 0, now, 60.0)
                errors = world.increase(v, 1, now, 60.0)
                has = total is not None and total > 0
                ok = (total - (errors or 0.0)) if has and total is not None else None
                values[v] = {"upstream_rq_total": total if has else None, "external_upstream_rq_2xx": ok}
            found = world.latest(now)
            obs = Observation(time=now, values=values, scraped_at=found[0] if found else None)
        d = decide(spec, d.state, now, obs)
    phase = d.state.phase
    outcome = {"promoted": "promoted", "rolled-back": "rolled back"}.get(phase, "undecided")
    end = d.state.last_change_at if phase in ("promoted", "rolled-back") else t0 + HORIZON
    return Result(outcome, world.failed_by_target, end - t0)


def run_flagger(world: World) -> Result:
    t0 = HISTORY
    world.run_until(t0, {"v1": 100})
    weight, failed_checks, now = 10, 0, t0
    while now - t0 < HORIZON:
        now += 60.0
        world.run_until(now, {"v1": 100 - weight, "v2": weight})
        total = world.increase("v2", 0, now, 60.0)
        errors = world.increase("v2", 1, now, 60.0)
        passed = bool(total) and 1 - (errors or 0.0) / (total or 1.0) >= 0.99
        if not passed:
            failed_checks += 1
            if failed_checks >= 5:
                return Result("rolled back", world.failed_by_target, now - t0)
        elif weight >= 50:
            return Result("promoted", world.failed_by_target, now - t0)
        else:
            weight += 10
    return Result("undecided", world.failed_by_target, HORIZON)


JUDGES: dict[str, Callable[[World], Result]] = {
    "compare": lambda w: run_engine("compare", w),
    "health": lambda w: run_engine("health", w),
    "flagger": run_flagger,
}


def batch(args: tuple[int, float, str, int, int, dict[str, object]]) -> list[Result]:
    scenario_index, rps, judge, first_seed, count, compare = args
    COMPARE.update(compare)
    scenario = SCENARIOS[scenario_index]
    out = []
    for seed in range(first_seed, first_seed + count):
        rng = random.Random(f"{scenario.name}/{rps}/{seed}")  # same traffic for every judge
        out.append(JUDGES[judge](World(scenario, rps, rng)))
    return out


def _q(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", type=int, default=1000, help="releases per row")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rates", default="10,100", help="requests per second, comma-separated")
    parser.add_argument("--scenarios", default="", help="names to run (comma-separated), default all")
    parser.add_argument("--judges", default=",".join(JUDGES))
    parser.add_argument("--compare", default="{}", help='settings of the compare policy, JSON: {"step": 20}')
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    chosen = [i for i, s in enumerate(SCENARIOS) if not args.scenarios or s.name in args.scenarios.split(",")]
    judges = args.judges.split(",")
    chunk = 50
    compare = json.loads(args.compare)
    jobs = [(i, rps, j, first, min(chunk, args.releases - first), compare)
            for i in chosen for rps in rates for j in judges for first in range(0, args.releases, chunk)]
    started = time.monotonic()
    results: dict[tuple[int, float, str], list[Result]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for job, res in zip(jobs, pool.map(batch, jobs), strict=True):
            results.setdefault((job[0], job[1], job[2]), []).extend(res)
    print(f"{args.releases} releases per row, scrape every {SCRAPE:g} s, baseline at {100 * BASE_ERRORS:g} % "
          f"errors; {time.monotonic() - started:.0f} s with {args.workers} workers"
          + (f"; compare settings {compare}" if compare else ""))
    head = (f"{'scenario':<18}{'rps':>5} {'judge':<9}{'promoted':>9}{'rolled':>8}{'undec.':>7}{'wrong':>7}"
            f"{'failed med':>11}{'p90':>6}{'time med':>9}{'p90':>6}")
    print(head)
    print("-" * len(head))
    for i in chosen:
        s = SCENARIOS[i]
        for rps in rates:
            for j in judges:
                res = results[(i, rps, j)]
                n = len(res)
                share = {o: sum(r.outcome == o for r in res) / n
                         for o in ("promoted", "rolled back", "undecided")}
                wrong = share["rolled back"] if s.good else share["promoted"]
                failed = [r.failed for r in res]
                secs = [r.seconds for r in res]
                print(f"{s.name:<18}{rps:>5g} {j:<9}{100 * share['promoted']:>8.1f}%"
                      f"{100 * share['rolled back']:>7.1f}%{100 * share['undecided']:>6.1f}%"
                      f"{100 * wrong:>6.1f}%"
                      f"{statistics.median(failed):>11g}{_q(failed, 0.9):>6g}"
                      f"{statistics.median(secs):>9.0f}{_q(secs, 0.9):>6.0f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
