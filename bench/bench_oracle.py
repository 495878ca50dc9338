"""The floor under any release judge: failed requests a bad canary serves before even an oracle rolls it back.

The oracle is Wald's sequential probability ratio test with both error rates known in
advance (the baseline's, and the bad canary's), reading every request the instant it is
served: no scrapes, no checks, no comparison with a baseline that has to be measured
too. Among tests with the same error probabilities it needs the fewest requests on
average (Wald and Wolfowitz), so no real judge does better on average; its median is
printed beside the mean. The test rolls back once the log likelihood ratio reaches
``ln(1 / alpha)``; with no lower boundary it is a power-one test, and the chance that a
good canary (at the baseline's rate) ever reaches it is at most ``alpha``, measured
here over a long horizon.

For each nominal ``alpha``: the share of good canaries rolled back, and the failed
requests served by a bad one until the rollback (median, mean). Compare with the
``failed med`` of ``bench_decisions.py``, and with its bound: a third of the Flagger
model's. It does not depend on the traffic rate or the weight: the failures served are
the canary's requests needed times its error rate.

    .venv/bin/python bench/bench_oracle.py [--runs 20000]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

BASE_ERRORS = 0.005
#: Requests a good canary is followed for: its log likelihood ratio falls by about 0.008 per request,
#: so after this many it sits about 30 below where it started and cannot come back.
HORIZON = 4000


def _gap(p: float, rng: random.Random) -> int:
    """Requests up to and including the next failed one (geometric)."""
    return 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p))


def failed_until_rollback(p_bad: float, threshold: float, rng: random.Random) -> int:
    up, down = math.log(p_bad / BASE_ERRORS), math.log((1 - p_bad) / (1 - BASE_ERRORS))
    n = k = 0
    while True:
        # The ratio only rises at a failed request: the test can only stop there.
        n += _gap(p_bad, rng)
        k += 1
        if k * up + (n - k) * down >= threshold:
            return k


def rolls_back_good(p_bad: float, threshold: float, rng: random.Random) -> bool:
    up, down = math.log(p_bad / BASE_ERRORS), math.log((1 - p_bad) / (1 - BASE_ERRORS))
    n = k = 0
    while True:
        n += _gap(BASE_ERRORS, rng)
        if n > HORIZON:
            return False
        k += 1
        if k * up + (n - k) * down >= threshold:
            return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20000, help="releases per row")
    args = parser.parse_args()
    started = time.monotonic()
    rows = []
    for p_bad in (0.02, 0.05):
        for alpha in (0.01, 0.02, 0.03, 0.05):
            rng = random.Random(f"{p_bad}/{alpha}")
            threshold = math.log(1.0 / alpha)
            failed = [failed_until_rollback(p_bad, threshold, rng) for _ in range(args.runs)]
            wrong = sum(rolls_back_good(p_bad, threshold, rng) for _ in range(args.runs)) / args.runs
            rows.append((p_bad, alpha, wrong, statistics.median(failed), statistics.mean(failed)))
    print(f"oracle SPRT, baseline at {100 * BASE_ERRORS:g} % errors, {args.runs} runs per row; "
          f"{time.monotonic() - started:.0f} s")
    head = f"{'bad canary':>10}{'alpha':>7}{'good rolled back':>18}{'failed med':>12}{'mean':>7}"
    print(head)
    print("-" * len(head))
    for p_bad, alpha, wrong, med, mean in rows:
        print(f"{100 * p_bad:>9g}%{100 * alpha:>6g}%{100 * wrong:>17.2f}%{med:>12g}{mean:>7.2f}")


if __name__ == "__main__":
    main()
