"""prefect.yaml deploys as written: `prefect deploy --all` against a real Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def test_prefect_deploy_all_creates_the_deployments(prefect_server: Any) -> None:
    from prefect.client.orchestration import get_client

    env = {**os.environ, **prefect_server.env(), "PREFECT_CLI_PROMPT": "false"}
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    pool = {d["work_pool"]["name"] for d in declared["deployments"]}
    assert pool == {"lamia-local"}
    created = subprocess.run(
        [PREFECT, "work-pool", "create", "lamia-local", "--type", "process", "--overwrite"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = subprocess.run(
        [PREFECT, "--no-prompt", "deploy", "--all"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    with get_client(sync_client=True) as client:
        found = {}
        for d in declared["deployments"]:
            flow_name = {
                "flows/release.py:canary_release": "canary-release",
                "flows/manual.py:set_weights": "set-weights",
                "flows/manual.py:apply_route_flow": "apply-route",
                "flows/expose.py:expose": "expose",
                "flows/reconcile.py:reconcile": "lamia-reconcile",
            }[d["entrypoint"]]
            found[d["name"]] = client.read_deployment_by_name(f"{flow_name}/{d['name']}")
    assert set(found) == {"canary-release", "nightly-canary", "set-weights", "apply-route", "expose",
                          "lamia-reconcile"}
    supervisor = found["lamia-reconcile"]
    assert supervisor.schedules and supervisor.schedules[0].active, "the supervisor runs on its own"
    assert supervisor.schedules[0].schedule.interval.total_seconds() == 30
    with get_client(sync_client=True) as client:
        automations = client.read_automations_by_name("lamia-reconcile__automation_1")
    assert automations and "prefect.flow-run.Crashed" in automations[0].trigger.expect
    release = found["canary-release"]
    assert "params" in release.parameter_openapi_schema["properties"], "the UI renders the parameters"
    definitions = release.parameter_openapi_schema.get("definitions", {})
    policy = definitions["ReleaseParameters"]["properties"]["policy"]
    assert [kind["title"] for kind in policy["anyOf"]] == ["compare", "time", "health", "metric", "custom"], (
        "the deployed form offers every policy kind as a choice")
    exposing = found["expose"].parameter_openapi_schema
    assert "ExposeParameters" in exposing.get("definitions", {}), "the UI renders the expose form"
    nightly = found["nightly-canary"]
    assert nightly.schedules and not nightly.schedules[0].active, "the scheduled example is inactive"
    assert nightly.parameters["params"]["target"] == "v2"
