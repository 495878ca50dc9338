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

from flows.demo import CONDITION, DemoSettings, check_routes
from lamia_sandbox.prefect_server import PrefectServer

QUICK = DemoSettings(step=50, interval=1.5, traffic_seconds=3.0, seed=7)
LAMIA = Path(sys.executable).with_name("lamia")


def check_report(report: dict[str, Any], server: PrefectServer) -> None:
    assert report["prefect_ui"] == server.ui_url
    v2, v3 = report["releases"]
    assert (v2["app"], v2["target"], v2["outcome"]) == ("reviews", "v2", "promoted")
    assert v2["weights"] == {"v1": 0, "v2": 100, "v3": 0}
    assert (v3["target"], v3["baseline"], v3["outcome"]) == ("v3", "v2", "rolled-back")
    assert v3["weights"] == {"v1": 0, "v2": 100, "v3": 0}
    assert "v3: " in v3["reason"] and "worse beyond tolerance with 99 % confidence" in v3["reason"]
    assert v2["flow_run_id"] != v3["flow_run_id"]
    routes = {r["route"]: r for r in report["routes"]}
    default, cond = routes["default"], routes["condition"]
    assert default["weights"] == {"v1": 100, "v2": 0, "v3": 0}
    assert default["counts"]["v1"] > 0 and default["counts"]["v2"] == default["counts"]["v3"] == 0
    assert cond["condition"] == CONDITION
    assert cond["weights"] == {"v1": 50, "v2": 50, "v3": 0}
    assert cond["counts"]["v1"] > 0 and cond["counts"]["v2"] > 0 and cond["counts"]["v3"] == 0
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
    assert "v2 step  1" in progress and "promote" in progress
    assert "v3 step" in progress and "rollback" in progress
    assert "Summary" in progress and "ALL AS EXPECTED" in progress


def test_route_check_accepts_a_fair_split() -> None:
    counts = {"default": {"v1": 180}, "condition": {"v1": 160, "v2": 170}}
    checks = check_routes(counts, 0, {"v1": 50, "v2": 50, "v3": 0}, sigmas=4)
    assert all(ok for route in checks.values() for ok, _ in route)


@pytest.mark.parametrize(
    ("counts", "unrouted", "failing"),
    [
        # one request of everyone else on v2
        ({"default": {"v1": 179, "v2": 1}, "condition": {"v1": 160, "v2": 170}}, 0, "default"),
        # requests lost on the way
        ({"default": {"v1": 180}, "condition": {"v1": 160, "v2": 170}}, 3, "default"),
        # the matching requests split 80/20 instead of 50/50
        ({"default": {"v1": 180}, "condition": {"v1": 264, "v2": 66}}, 0, "condition"),
        # far fewer requests match than the simulator's user agents make (65 %)
        ({"default": {"v1": 400}, "condition": {"v1": 50, "v2": 50}}, 0, "condition"),
        # a version with weight 0 got traffic
        ({"default": {"v1": 180}, "condition": {"v1": 160, "v2": 165, "v3": 5}}, 0, "condition"),
        # no request matched at all
        ({"default": {"v1": 500}}, 0, "condition"),
    ],
)
def test_route_check_catches(counts: dict[str, dict[str, int]], unrouted: int, failing: str) -> None:
    checks = check_routes(counts, unrouted, {"v1": 50, "v2": 50, "v3": 0}, sigmas=4)
    assert not all(ok for ok, _ in checks[failing])
    other = "condition" if failing == "default" else "default"
    assert all(ok for ok, _ in checks[other])
