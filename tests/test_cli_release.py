"""`lamia release ...` against a real Prefect server and the sandbox, and the
`prefect deployment run ... --watch` CI gate on deployments served by `lamia serve`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.cli import app
from lamia_core.lease import lease_of
from lamia_sandbox.sandbox import Sandbox
from tests.test_release_flow import routes, vs, wait_until

pytestmark = pytest.mark.integration

runner = CliRunner()
LAMIA = str(Path(sys.executable).with_name("lamia"))
PREFECT = str(Path(sys.executable).with_name("prefect"))


def start_args(sb: Sandbox, target: str, *extra: str) -> list[str]:
    return [
        "release",
        "start",
        "--namespace",
        sb.namespace,
        "--app",
        sb.app,
        "--baseline",
        "v1",
        "--target",
        target,
        "--step",
        "50",
        "--interval",
        "1.5",
        "--window",
        "10s",
        "--scrape-interval",
        "1",
        "--min-requests",
        "5",
        "--failure-limit",
        "1",
        "--prometheus",
        sb.prometheus.url,
        "--kubeconfig",
        str(sb.kubeconfig),
        "--context",
        "lamia-emulator",
        *extra,
    ]


def back_to_v1(sb: Sandbox) -> None:
    """All traffic back on v1, the way a person would do it."""
    args = ["--namespace", sb.namespace, "--app", sb.app, "--kubeconfig", str(sb.kubeconfig)]
    result = runner.invoke(app, ["weights", "set", *args, "v1=100", "v2=0", "v3=0"])
    assert result.exit_code == 0, result.output


def test_start_local_exit_code_is_the_ci_verdict_and_history_lists_both(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    promoted = runner.invoke(app, start_args(sb, "v2", "--local"))
    assert promoted.exit_code == 0, promoted.output
    assert "Completed: promoted v2" in promoted.stdout
    assert routes(sb)["default"]["v2"] == 100

    back_to_v1(sb)
    rolled = runner.invoke(app, start_args(sb, "v3", "--local"))
    assert rolled.exit_code == 1, rolled.output
    assert "Failed: rolled back to v1" in rolled.stdout

    history = runner.invoke(app, ["release", "history", "-a", sb.app, "--namespace", sb.namespace,
                                  "-o", "json"])
    assert history.exit_code == 0, history.output
    rows = json.loads(history.stdout)
    # Newest first: the releases, and between them the weights set by hand (a change without a flow).
    assert [(r["kind"], r["state"], r["outcome"]) for r in rows[:3]] == [
        ("canary-release", "Failed", "rolled-back"), ("weights set", "Completed", "applied"),
        ("canary-release", "Completed", "promoted")]
    assert rows[0]["message"].startswith("rolled back to v1") and rows[2]["message"].startswith("promoted v2")
    assert "set to v1=100,v2=0,v3=0 by hand" in rows[1]["message"]


def test_bad_policy_option_is_one_clear_line_and_exit_2(prefect_server: Any, fresh_gateway: Sandbox) -> None:
    result = runner.invoke(app, start_args(fresh_gateway, "v2", "--local", "--step", "0"))
    assert result.exit_code == 2
    assert "--step" in result.stderr and "greater than or equal to 1" in result.stderr
    assert routes(fresh_gateway)["default"]["v1"] == 100


def test_status_abort_and_approve_a_running_release(prefect_server: Any, fresh_gateway: Sandbox) -> None:
    sb = fresh_gateway
    idle = runner.invoke(
        app, ["release", "status", "-a", sb.app, "-n", sb.namespace, "--kubeconfig", str(sb.kubeconfig)]
    )
    assert idle.exit_code == 0 and "no release running" in idle.stdout
    nothing = runner.invoke(app, ["release", "abort", "-a", sb.app, "-n", sb.namespace])
    assert nothing.exit_code == 2 and "is running" in nothing.stderr

    # The releases run as `lamia` processes of their own, as a second person's would:
    # CliRunner swaps sys.stdout, so two of its invocations cannot overlap in one process.
    env = {**os.environ, **prefect_server.env(), "PREFECT_LOGGING_LEVEL": "WARNING"}

    def lamia(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([LAMIA, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    # A release that waits for approval: approve it from the CLI.
    waiting = lamia(*start_args(sb, "v2", "--local", "--approval"))
    wait_until(lambda: lease_of(vs(sb)) is not None, what="the lease")

    def paused() -> bool:
        status = runner.invoke(
            app,
            ["release", "status", "-a", sb.app, "-n", sb.namespace, "--kubeconfig", str(sb.kubeconfig),
             "-o", "json"],
        )
        return (json.loads(status.stdout).get("release") or {}).get("state") == "Paused"

    wait_until(paused, 60, "the pause for approval")
    approved = runner.invoke(app, ["release", "approve", "-a", sb.app, "-n", sb.namespace,
                                   "--comment", "ok"])
    assert approved.exit_code == 0, approved.output
    out, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, out
    assert routes(sb)["default"]["v2"] == 100

    # A slow release: abort it from the CLI; the baseline is back and the run says so.
    back_to_v1(sb)
    slow = lamia(*start_args(sb, "v2", "--local", "--step", "10", "--interval", "3"))
    wait_until(lambda: routes(sb)["default"]["v2"] > 0, what="the first step")
    aborted = runner.invoke(
        app, ["release", "abort", "-a", sb.app, "-n", sb.namespace, "--kubeconfig", str(sb.kubeconfig)]
    )
    assert aborted.exit_code == 0, aborted.output
    out, _ = slow.communicate(timeout=120)
    assert slow.returncode == 1, out
    assert "Cancelled" in out
    assert routes(sb)["default"] == {"v1": 100, "v2": 0, "v3": 0}


def test_prefect_deployment_run_watch_is_a_ci_gate(
    prefect_server: Any, fresh_gateway: Sandbox, tmp_path: Path
) -> None:
    sb = fresh_gateway
    env = {**os.environ, **prefect_server.env(), "PREFECT_LOGGING_LEVEL": "WARNING"}
    serve = subprocess.Popen(
        [LAMIA, "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "wb"),
        start_new_session=True,
    )
    try:

        def run(target: str) -> subprocess.CompletedProcess[str]:
            params = {
                "params": {
                    "namespace": sb.namespace,
                    "app": sb.app,
                    "baseline": "v1",
                    "target": target,
                    "policy": {
                        "kind": "health",
                        "step": 50,
                        "interval": 1.5,
                        "window": "10s",
                        "scrape_interval": 1.0,
                        "min_requests": 5,
                        "failure_limit": 1,
                    },
                    "prometheus": {"url": sb.prometheus.url},
                    "kubernetes": {"kubeconfig": str(sb.kubeconfig), "context": "lamia-emulator"},
                }
            }
            return subprocess.run(
                [
                    PREFECT,
                    "deployment",
                    "run",
                    "canary-release/canary-release",
                    "--params",
                    json.dumps(params),
                    "--watch",
                    "--watch-timeout",
                    "120",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )

        def deployed() -> bool:
            out = subprocess.run([PREFECT, "deployment", "ls"], env=env, capture_output=True, text=True)
            return "canary-release/canary-release" in out.stdout

        wait_until(deployed, 90, "lamia serve to register its deployments")
        promoted = run("v2")
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        assert "Completed" in promoted.stdout
        back_to_v1(sb)
        rolled = run("v3")
        assert rolled.returncode != 0, rolled.stdout + rolled.stderr
        assert "Failed" in rolled.stdout
        assert routes(sb)["default"]["v1"] == 100
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
        time.sleep(0.1)


def test_abort_recovers_a_release_whose_process_is_gone(prefect_server: Any, fresh_gateway: Sandbox) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from flows._history import app_tag
    from lamia_core.istio import virtual_service_name
    from lamia_core.kube import KubeAdapter
    from lamia_core.lease import Lease, take_lease
    from lamia_core.models import Weights

    sb = fresh_gateway

    @flow(name="canary-release")
    def killed() -> None:
        """Stands for a release whose worker was killed: Running on the server, no process."""

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(killed, tags=["lamia", app_tag(sb.namespace, sb.app)], state=Running())
    lease = Lease.new(str(run.id), run.name, "canary-release", "v2", baseline="v1", route="default")
    with KubeAdapter(sb.kube) as adapter:
        application = adapter.discover_application(sb.namespace, sb.app)
        adapter.set_weights(application, Weights({"v1": 70, "v2": 30, "v3": 0}))
        adapter.update_object(
            "VirtualService",
            sb.namespace,
            virtual_service_name(application),
            lambda obj: take_lease(obj or {}, lease, app=sb.app),
        )

    result = runner.invoke(
        app,
        [
            "release",
            "abort",
            "-a",
            sb.app,
            "-n",
            sb.namespace,
            "--timeout",
            "2",
            "--kubeconfig",
            str(sb.kubeconfig),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "put v1 back at 100%" in result.stdout
    assert routes(sb)["default"] == {"v1": 100, "v2": 0, "v3": 0}
    assert lease_of(vs(sb)) is None
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state is not None and state.is_cancelled()
