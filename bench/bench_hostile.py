"""Hostile input to the languages' commands: how each call ends, and how long the slowest takes.

For each class of input (a lone surrogate or a control character put into a valid text,
megabytes, nesting far past the limits, random Unicode) and each command that reads a
condition or an expression, ``--calls`` seeded inputs are run through the real typer app
(in-process, like the tests): the figures are the exit codes, the calls that raised anything
but a clean exit (there must be none), and the median and slowest time per call.

    .venv/bin/python bench/bench_hostile.py [--calls 300] [--seed 11]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import typer.main
import typer.testing

from flows.cli import app

CONDITION = 'header "User-Agent" regex "^.*(Chrome).*$" or header "User-Agent" regex "^.*(Nexus 6P).*$"'
EXPRESSION = 'if metric "v10" "upstream_rq_total" > 0 { best = "v10"; } else { best = "v9"; } best'
CONTROLS = [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"] + [chr(c) for c in range(0x7F, 0xA0)]


def _splice(rng: random.Random, text: str, bad: str) -> str:
    at = rng.randrange(len(text) + 1)
    return text[:at] + bad + text[at:]


def classes(valid: str, opener: str) -> dict[str, Callable[[random.Random], str]]:
    return {
        "lone surrogate": lambda rng: _splice(rng, valid, chr(rng.randrange(0xD800, 0xE000))),
        "control character": lambda rng: _splice(rng, valid, rng.choice(CONTROLS)),
        "megabytes": lambda rng: (valid + " ") * (rng.randrange(1_000_000, 3_000_000) // len(valid)),
        # Within the length limit, so that the parser sees it: far deeper than the depth limits.
        "deep nesting": lambda rng: opener * rng.randrange(100, 9_000 // len(opener)) + valid,
        "random unicode": lambda rng: "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(60))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per class and command")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lamia-bench-") as tmp:
        metrics = Path(tmp) / "metrics.json"
        metrics.write_text('{"v9": {"upstream_rq_total": 100}, "v10": {"upstream_rq_total": 100}}')
        run(args.calls, args.seed, metrics)


def run(calls: int, seed: int, metrics: Path) -> None:
    commands: dict[str, tuple[Callable[[str], list[str]], str, str]] = {
        "check condition": (lambda t: ["check", "condition", "--", t], CONDITION, "("),
        "render gateway --condition": (
            lambda t: ["render", "gateway", "-n", "shop", "--app", "reviews", "--weights", "v9=90,v10=10",
                       "--condition", t, "--condition-weights", "v10=100"], CONDITION, "not "),
        "check expression": (lambda t: ["check", "expression", "--", t], EXPRESSION, "("),
        "eval expression": (lambda t: ["eval", "expression", "--metrics", str(metrics), "--version", "v10",
                                       "--", t], EXPRESSION, "-"),
    }
    runner = typer.testing.CliRunner()
    rng = random.Random(seed)
    total = crashed = 0
    print(f"{'command':28} {'input':18} {'calls':>5} {'exit 0':>6} {'exit 2':>6} {'other':>5} "
          f"{'crash':>5} {'median ms':>9} {'max ms':>7}")
    # typer builds the click command again on every invoke (60 ms); build it once.
    with mock.patch.object(typer.testing, "_get_command", lambda a, c=typer.main.get_command(app): c):
        for command, (argv, valid, opener) in commands.items():
            for name, make in classes(valid, opener).items():
                codes: Counter[int] = Counter()
                times, crashes = [], 0
                for _ in range(calls):
                    text = make(rng)
                    started = time.perf_counter()
                    result = runner.invoke(app, argv(text))
                    times.append(time.perf_counter() - started)
                    codes[result.exit_code] += 1
                    if result.exception is not None and not isinstance(result.exception, SystemExit):
                        crashes += 1
                total += calls
                crashed += crashes
                other = calls - codes[0] - codes[2]
                median, slowest = statistics.median(times) * 1000, max(times) * 1000
                print(f"{command:28} {name:18} {calls:5} {codes[0]:6} {codes[2]:6} {other:5} "
                      f"{crashes:5} {median:9.1f} {slowest:7.1f}")
    print(f"{total} calls, {crashed} uncaught exceptions")


if __name__ == "__main__":
    main()
