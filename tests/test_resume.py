"""`on_worker_loss: resume`: a release whose worker dies goes on in a new run, from its last step.

`lamia serve` runs the canary-release deployment (each flow run in a process of its own, as a
worker would); the test kills one run's process outright in the middle of the release, and one
`lamia-reconcile` run starts a new run of the deployment and hands it the lease with the engine's
state. The new run must go on from the step recorded (no step twice, none lost), say so in its
step table, and promote.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from flows._history import run_outcome
from flows.reconcile import ReconcileParameters, reconcile
from lamia_core.istio import ISTIO_API
from lamia_core.kube import KubeAdapter, KubeConfig
from lamia_core.lease import lease_of
from lamia_core.models import Gateway, Route, Weights
from lamia_core.outcome import Outcome
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.seed import seed_application
from tests.test_release_flow import artifacts, table_rows, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

LAMIA = str(Path(sys.executable).with_name("lamia"))
NS, APP = "shop", "cart"


def flow_run_processes(flow_run_id: str) -> list[int]:
    """Processes running that flow run (the runner passes its id in the environment)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in environ:
            found.append(int(proc.name))
    return found


def route(emu: KubeEmulator) -> dict[str, int]:
    vs = emu.get_object(ISTIO_API, "VirtualService", NS, APP)
    assert vs is not None
    (r,) = [r for r in vs["spec"]["http"] if r.get("name") == "lamia-default"]
    return {d["destination"]["subset"]: d["weight"] for d in r["route"]}


def test_a_killed_worker_is_resumed_from_its_last_step(
    prefect_server: Any, kube_emulator: KubeEmulator, kubeconfig: Path
) -> None:
    seed_application(kube_emulator, NS, APP, ["stable", "canary"])
    kube = KubeConfig(kubeconfig=str(kubeconfig), context="lamia-emulator")
    with KubeAdapter(kube) as adapter:
        app = adapter.discover_application(NS, APP)
        adapter.apply_gateway(Gateway(application=app, routes=(Route(weights=Weights.all_on("stable",
                                                                                            ["canary"])),)))
    env = {**os.environ, **prefect_server.env(), "PREFECT_LOGGING_LEVEL": "WARNING"}
    serve = subprocess.Popen([LAMIA, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        params = {"namespace": NS, "app": APP, "baseline": "stable", "target": "canary",
                  "policy": {"kind": "time", "step": 20, "interval": 2},
                  "kubernetes": json.loads(kube.model_dump_json()),
                  "on_worker_loss": "resume", "worker_loss_timeout": 3}

        def deployed() -> bool:
            with get_client(sync_client=True) as client:
                try:
                    client.read_deployment_by_name("canary-release/canary-release")
                except Exception:
                    return False
            return True

        # Generous bounds: `lamia serve` polls for runs and starts each in a new process, which takes
        # long on a loaded machine; what is checked is what happens, not how fast.
        wait_until(deployed, 180, "lamia serve's deployments")
        first = run_deployment("canary-release/canary-release", parameters={"params": params}, timeout=0)
        wait_until(lambda: route(kube_emulator)["canary"] >= 40, 240, "two steps of the first run")
        pids = flow_run_processes(str(first.id))  # type: ignore[union-attr]
        assert pids, "the flow run's process"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        at_kill = route(kube_emulator)
        lease = lease_of(kube_emulator.get_object(ISTIO_API, "VirtualService", NS, APP))
        assert lease is not None and lease.state is not None
        recorded_step = lease.step

        def resumed() -> bool:
            state = reconcile(ReconcileParameters(kubernetes=kube, namespace=NS), return_state=True)
            assert state.is_completed(), state.message
            now = lease_of(kube_emulator.get_object(ISTIO_API, "VirtualService", NS, APP))
            return now is not None and now.holder != lease.holder

        wait_until(resumed, 120, "the supervisor to resume the release")
        successor = lease_of(kube_emulator.get_object(ISTIO_API, "VirtualService", NS, APP))
        assert successor is not None and successor.resumes == 1 and successor.state == lease.state
        assert route(kube_emulator) == at_kill, "nothing moved while the release had no worker"

        def over() -> bool:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(UUID(successor.holder)).state
            return bool(state and state.is_final())

        wait_until(over, 240, "the resumed run to end")
        with get_client(sync_client=True) as client:
            dead = client.read_flow_run(first.id).state  # type: ignore[union-attr]
            done = client.read_flow_run(UUID(successor.holder)).state
        assert dead is not None and dead.type.value == "CRASHED"
        assert "resumed by flow run" in (dead.message or "")
        assert done is not None and run_outcome(done) is Outcome.PROMOTED, done.message if done else None
        assert route(kube_emulator) == {"stable": 0, "canary": 100}

        rows = table_rows(artifacts(UUID(successor.holder))["table"])
        assert rows[0]["decision"] == "taken-over" and f"at step {recorded_step}" in rows[0]["reason"]
        def canary(row: dict[str, Any]) -> int:
            return int(row["weights"].split("canary=")[1].split(",")[0])

        assert canary(rows[0]) == at_kill["canary"]
        steps = [canary(r) for r in rows if r["decision"] == "set_weights"]
        assert steps == list(range(at_kill["canary"] + 20, 101, 20)), "no step twice, none lost"
        assert rows[-1]["decision"] == "promote"
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
        time.sleep(0.5)
