"""`lamia demo`, shortened (two steps a release, 3 s of route traffic), run for real against the
session's Prefect server, once, as the `lamia` command with --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flows.demo import BAD, CONDITION, GOOD, STABLE, DemoSettings, check_routes
from lamia_sandbox.prefect_server import PrefectServer

QUICK = DemoSettings(step=50, interval=1.5, traffic_seconds=3.0, seed=7)
LAMIA = Path(sys.executable).with_name("lamia")


def check_report(report: dict[str, Any], server: PrefectServer) -> None:
    assert report["prefect_ui"] == server.ui_url
    good, bad = report["releases"]
    assert (good["app"], good["target"], good["outcome"]) == ("reviews", GOOD, "promoted")
    assert good["weights"] == {STABLE: 0, GOOD: 100, BAD: 0}
    assert (bad["target"], bad["baseline"], bad["outcome"]) == (BAD, GOOD, "rolled-back")
    assert bad["weights"] == {STABLE: 0, GOOD: 100, BAD: 0}
    assert f"{BAD}: " in bad["reason"] and "worse beyond tolerance with 99 % confidence" in bad["reason"]
    assert good["flow_run_id"] != bad["flow_run_id"]
    routes = {r["route"]: r for r in report["routes"]}
    default, cond = routes["default"], routes["condition"]
    assert default["weights"] == {STABLE: 100, GOOD: 0, BAD: 0}
    assert default["counts"][STABLE] > 0 and default["counts"][GOOD] == default["counts"][BAD] == 0
    assert cond["condition"] == CONDITION
    assert cond["weights"] == {STABLE: 50, GOOD: 50, BAD: 0}
    assert cond["counts"][STABLE] > 0 and cond["counts"][GOOD] > 0 and cond["counts"][BAD] == 0
    assert default["ok"] and cond["ok"] and report["ok"]


@pytest.mark.integration
def test_lamia_demo_json_reports_the_three_outcomes(prefect_server: PrefectServer) -> None:
    """The demo runs once, as the command a user types; everything is checked on that run."""
    env = {**os.environ, "PREFECT_API_URL": prefect_server.api_url}
    env.pop("PREFECT_UI_URL", None)
    args = ["--step", str(QUICK.step), "--interval", str(QUICK.interval),
            "--traffic-seconds", str(QUICK.traffic_seconds), "--seed", str(QUICK.seed)]
    proc = subprocess.run([str(LAMIA), "demo", "--json", *args],
                          capture_output=True, text=True, env=env, timeout=150, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)  # fails on anything before or after the document
    check_report(report, prefect_server)
    progress = proc.stderr
    # The rows printed while the releases ran are those of their steps tables.
    assert f"{GOOD} step  1" in progress and "promote" in progress
    assert f"{BAD} step" in progress and "rollback" in progress
    assert "Summary" in progress and "ALL AS EXPECTED" in progress


def test_route_check_accepts_a_fair_split() -> None:
    counts = {"default": {STABLE: 180}, "condition": {STABLE: 160, GOOD: 170}}
    checks = check_routes(counts, 0, {STABLE: 50, GOOD: 50, BAD: 0}, sigmas=4)
    assert all(ok for route in checks.values() for ok, _ in route)


@pytest.mark.parametrize(
    ("counts", "unrouted", "failing"),
    [
        # one request of everyone else on the good version
        ({"default": {STABLE: 179, GOOD: 1}, "condition": {STABLE: 160, GOOD: 170}}, 0, "default"),
        # requests lost on the way
        ({"default": {STABLE: 180}, "condition": {STABLE: 160, GOOD: 170}}, 3, "default"),
        # the matching requests split 80/20 instead of 50/50
        ({"default": {STABLE: 180}, "condition": {STABLE: 264, GOOD: 66}}, 0, "condition"),
        # far fewer requests match than the simulator's user agents make (65 %)
        ({"default": {STABLE: 400}, "condition": {STABLE: 50, GOOD: 50}}, 0, "condition"),
        # a version with weight 0 got traffic
        ({"default": {STABLE: 180}, "condition": {STABLE: 160, GOOD: 165, BAD: 5}}, 0, "condition"),
        # no request matched at all
        ({"default": {STABLE: 500}}, 0, "condition"),
    ],
)
def test_route_check_catches(counts: dict[str, dict[str, int]], unrouted: int, failing: str) -> None:
    checks = check_routes(counts, unrouted, {STABLE: 50, GOOD: 50, BAD: 0}, sigmas=4)
    assert not all(ok for ok, _ in checks[failing])
    other = "condition" if failing == "default" else "default"
    assert all(ok for ok, _ in checks[other])
