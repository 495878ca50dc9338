"""A person at the controls, for real: `lamia release start` refusing before it triggers anything,
`watch` following a release, approval at a weight below 100, pause / resume / promote by hand, and
who did what in the history. The sandbox (emulator, simulator, Prometheus) and the session's
Prefect server; the commands run as `lamia` processes, as a second person's would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client

from flows._history import run_outcome
from flows.params import ReleaseParameters
from flows.release import canary_release
from lamia_core.outcome import Outcome
from lamia_core.policies import HealthPolicy
from lamia_sandbox.sandbox import Sandbox
from tests.test_release_flow import Background, artifacts, routes, table_rows, vs, wait_until

pytestmark = pytest.mark.integration

LAMIA = str(Path(sys.executable).with_name("lamia"))


def env(server: Any) -> dict[str, str]:
    return {**os.environ, **server.env(), "PREFECT_LOGGING_LEVEL": "WARNING"}


def lamia(server: Any, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LAMIA, *args], env=env(server), capture_output=True, text=True, timeout=timeout)


def app_args(sb: Sandbox) -> list[str]:
    return ["-n", sb.namespace, "-a", sb.app]


def policy(**overrides: Any) -> HealthPolicy:
    settings = {"step": 25, "interval": 1.5, "window": "10s", "min_requests": 5, "failure_limit": 1,
                "scrape_interval": 1.0, **overrides}
    return HealthPolicy(**settings)


def release(sb: Sandbox, target: str = "v2", **overrides: Any) -> Background:
    params = ReleaseParameters(namespace=sb.namespace, app=sb.app, baseline="v1", target=target,
                               policy=overrides.pop("policy", policy()), kubernetes=sb.kube,
                               prometheus=sb.prometheus, **overrides)
    return Background(lambda: canary_release(params, return_state=True))


def flow_runs() -> int:
    with get_client(sync_client=True) as client:
        return len(client.read_flow_runs(limit=200))


def rows_of(state: Any) -> list[dict[str, Any]]:
    return table_rows(artifacts(UUID(state.state_details.flow_run_id.hex))["table"])


def test_release_start_refuses_before_it_triggers_anything(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    base = ["release", "start", "--prometheus", sb.prometheus.url, "--kubeconfig", str(sb.kubeconfig),
            "--scrape-interval", "1"]
    cases = [
        ([*app_args(sb), "--baseline", "v1", "--target", "v9"], "unknown version 'v9'"),
        (["-n", "nowhere", "-a", sb.app, "--baseline", "v1", "--target", "v2"],
         "namespace 'nowhere' does not exist"),
        ([*app_args(sb), "--baseline", "v2", "--target", "v2"], "baseline and target are both 'v2'"),
        ([*app_args(sb), "--baseline", "v3", "--target", "v2"],
         "baseline 'v3' gets no traffic on route 'default'"),
        ([*app_args(sb), "--baseline", "v1", "--target", "v2", "--deployment", "canary-release/nowhere"],
         "no deployment 'canary-release/nowhere' on the Prefect server"),
    ]
    before = flow_runs()
    for args, message in cases:
        result = lamia(prefect_server, *base, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("lamia: error: "), result.stderr
        assert message in result.stderr, result.stderr
    assert flow_runs() == before, "nothing was triggered"

    running = release(sb, policy=policy(step=10, interval=3.0))
    wait_until(lambda: routes(sb)["default"]["v2"] > 0, what="the first step")
    second = lamia(prefect_server, *base, *app_args(sb), "--baseline", "v1", "--target", "v3")
    assert second.returncode == 2 and "is already running" in second.stderr, second.stderr
    assert "lamia release abort" in second.stderr
    stopped = lamia(prefect_server, "release", "abort", *app_args(sb), "--kubeconfig", str(sb.kubeconfig),
                    "--by", "carol@ops", "--reason", "wrong build")
    assert stopped.returncode == 0, stopped.stderr
    state = running.join()
    assert state.is_cancelled()
    history = json.loads(lamia(prefect_server, "release", "history", *app_args(sb), "-o", "json").stdout)
    assert "aborted by carol@ops (wrong build)" in (history[0]["message"] or ""), "an abort says who and why"


def test_watch_prints_each_step_and_exits_with_the_outcome(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    for target, code, outcome in (("v2", 0, Outcome.PROMOTED), ("v3", 1, Outcome.ROLLED_BACK)):
        run = release(sb, target)
        wait_until(lambda: "lamia.io/release" in vs(sb)["metadata"].get("annotations", {}), what="the lease")
        watched = lamia(prefect_server, "release", "watch", *app_args(sb), "--timeout", "120")
        state = run.join()
        assert run_outcome(state) is outcome, state.message
        assert watched.returncode == code, (watched.stdout, watched.stderr)
        lines = watched.stdout.splitlines()
        steps = [line for line in lines if line.startswith("step ")]
        assert steps and all("v1=" in line and (f"{target}=") in line for line in steps)
        assert any("next check" in line for line in steps), "each step says when the next check is"
        assert any(">= 0.8" in line for line in steps), "the values judged, against the threshold"
        assert f": {outcome.value} - " in lines[-1]
        assert lines[-1].endswith(f"(exit {code})")
        fresh_gateway_reset(sb)


def fresh_gateway_reset(sb: Sandbox) -> None:
    with subprocess.Popen([LAMIA, "weights", "set", *app_args(sb), "--kubeconfig", str(sb.kubeconfig),
                           "v1=100", "v2=0", "v3=0"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as proc:
        assert proc.wait(timeout=60) == 0


def test_approval_at_a_weight_below_100_waits_there_with_the_checks_going_on(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    run = release(sb, approval=True, approval_at=50, policy=policy(step=25))

    def waiting() -> bool:
        status = json.loads(lamia(prefect_server, "release", "status", *app_args(sb), "--kubeconfig",
                                  str(sb.kubeconfig), "-o", "json").stdout)
        return (status.get("release") or {}).get("state") == "Paused"

    wait_until(waiting, 90, "the wait for approval")
    assert routes(sb)["default"]["v2"] == 50, "it waits at the approval weight, short of the target"
    time.sleep(4.5)  # three checks' worth of waiting
    assert routes(sb)["default"]["v2"] == 50, "nothing moves while it waits"
    approved = lamia(prefect_server, "release", "approve", *app_args(sb), "--by", "alice@laptop",
                     "--comment", "dashboards look fine")
    assert approved.returncode == 0, approved.stderr
    state = run.join()
    assert run_outcome(state) is Outcome.PROMOTED, state.message
    rows = rows_of(state)
    waits = [r for r in rows if "waiting for approval" in r["reason"]]
    assert waits and all(r["weights"].endswith("v2=50, v3=0") for r in waits), "the checks went on"
    assert any(r["decision"] == "approved" and "by alice@laptop (dashboards look fine)" in r["reason"]
               for r in rows)


def test_pause_holds_resume_goes_on_and_promote_ends_it_by_hand(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    run = release(sb, policy=policy(step=10, interval=1.5))
    wait_until(lambda: routes(sb)["default"]["v2"] >= 10, what="the first step")
    paused = lamia(prefect_server, "release", "pause", *app_args(sb), "--by", "bob@ops", "--reason", "a look")
    assert paused.returncode == 0, paused.stderr
    time.sleep(2)
    held = routes(sb)["default"]["v2"]
    time.sleep(4.5)
    assert routes(sb)["default"]["v2"] == held, "a paused release moves no weight"
    assert lamia(prefect_server, "release", "resume", *app_args(sb), "--by", "bob@ops").returncode == 0
    wait_until(lambda: routes(sb)["default"]["v2"] > held, 30, "the release to move again")
    assert lamia(prefect_server, "release", "promote", *app_args(sb), "--by", "bob@ops",
                 "--reason", "good enough").returncode == 0
    state = run.join()
    assert run_outcome(state) is Outcome.PROMOTED, state.message
    assert "promoted by hand by bob@ops (good enough)" in (state.message or "")
    assert routes(sb)["default"]["v2"] == 100
    rows = rows_of(state)
    kinds = [r["decision"] for r in rows]
    assert "paused" in kinds and "resumed" in kinds and "promoted-by-hand" in kinds
    while_paused = rows[kinds.index("paused") + 1:kinds.index("resumed")]
    assert while_paused and all(r["decision"] == "hold" and "paused by bob@ops" in r["reason"]
                                for r in while_paused), [(r["decision"], r["reason"]) for r in while_paused]


def test_a_triggered_run_does_not_get_this_machines_kubeconfig_path(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    """$KUBECONFIG names a file of the laptop: the run, on a worker, uses its own default; a path given
    with --kubeconfig is the user's choice and goes with the run."""
    sb = fresh_gateway
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("canary-release")
        client.create_deployment(flow_id=flow_id, name="no-worker")
    deployment = "canary-release/no-worker"
    base = ["release", "start", *app_args(sb), "--baseline", "v1", "--target", "v2",
            "--prometheus", sb.prometheus.url, "--scrape-interval", "1", "--deployment", deployment]

    def triggered(*args: str, kubeconfig_env: str | None) -> dict[str, Any]:
        environment = {**env(prefect_server), "KUBECONFIG": kubeconfig_env or ""}
        if kubeconfig_env is None:
            environment.pop("KUBECONFIG")
        result = subprocess.run([LAMIA, *base, *args], env=environment, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stderr
        run_id = UUID(result.stdout.split("(")[1].split(")")[0])
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
            client.delete_flow_run(run_id)  # never picked up: no worker serves this deployment
        return dict(run.parameters["params"]["kubernetes"])

    from_env = triggered(kubeconfig_env=str(sb.kubeconfig))
    assert from_env["kubeconfig"] is None, "the laptop's $KUBECONFIG path stays on the laptop"
    given = triggered("--kubeconfig", str(sb.kubeconfig), kubeconfig_env=None)
    assert given["kubeconfig"] == str(sb.kubeconfig), "an explicit --kubeconfig is passed on"
