"""A release survives its worker: SIGKILL at each point of the loop and at random moments.

Each trial is a `lamia release start --local` process (the worker) releasing `canary` of an app
of its own on the emulator with the time policy, killed outright (SIGKILL: no cleanup at all)
either at a named point (LAMIA_CHAOS_KILL_AT) or after a random delay. Once the lease's heartbeat
is older than its bound, one `lamia-reconcile` run must leave: no gateway half-shifted (all on the
baseline, or all on the target once the promotion was written), no lease, no busy slot, the dead
run not shown Running, and a new release of the app accepted and promoted.

Run alone with ``pytest -m chaos``. ``bench/chaos_release.py`` runs more trials and prints figures.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from flows._chaos import ENV, POINTS
from flows._guard import limit_name
from flows._history import run_outcome
from flows.params import ReleaseParameters
from flows.reconcile import ReconcileParameters, reconcile
from flows.release import canary_release
from lamia_core.istio import ISTIO_API
from lamia_core.kube import KubeAdapter, KubeConfig
from lamia_core.lease import lease_of
from lamia_core.models import Gateway, Route, Weights
from lamia_core.outcome import Outcome
from lamia_core.policies import TimePolicy
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.seed import seed_application

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

LAMIA = str(Path(sys.executable).with_name("lamia"))
VERSIONS = ["stable", "canary"]
#: Seconds without a heartbeat after which a worker counts as dead (the default is 30 s at least;
#: the trials use the option to keep the suite short).
BOUND = 3.0
RANDOM_TRIALS = 20


@dataclass
class Trial:
    """One release killed somewhere; each in a namespace of its own, so that one trial's supervisor
    run never judges another trial's live release."""

    app: str
    point: str | None = None
    delay: float | None = None

    @property
    def namespace(self) -> str:
        return f"chaos-{self.app}"


@dataclass
class Result:
    trial: Trial
    killed: bool
    weights: dict[str, int]
    lease_left: bool
    busy_slots: int
    run_state: str | None
    next_release: Outcome | None
    recovery_s: float


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with KubeEmulator() as emulator:
        path = emulator.write_kubeconfig(tmp_path_factory.mktemp("chaos") / "kubeconfig")
        yield emulator, KubeConfig(kubeconfig=str(path), context="lamia-emulator")


def _prepare(emulator: KubeEmulator, kube: KubeConfig, ns: str, app: str) -> None:
    seed_application(emulator, ns, app, VERSIONS)
    with KubeAdapter(kube) as adapter:
        application = adapter.discover_application(ns, app)
        adapter.apply_gateway(Gateway(application=application,
                                      routes=(Route(weights=Weights.all_on("stable", VERSIONS)),)))


def _weights(emulator: KubeEmulator, ns: str, app: str) -> tuple[dict[str, int], bool]:
    vs = emulator.get_object(ISTIO_API, "VirtualService", ns, app)
    assert vs is not None
    (route,) = [r for r in vs["spec"]["http"] if r.get("name") == "lamia-default"]
    return {d["destination"]["subset"]: d["weight"] for d in route["route"]}, lease_of(vs) is not None


def run_trial(emulator: KubeEmulator, kube: KubeConfig, env: dict[str, str], trial: Trial) -> Result:
    ns = trial.namespace
    _prepare(emulator, kube, ns, trial.app)
    args = [LAMIA, "release", "start", "-n", ns, "--app", trial.app, "--baseline", "stable", "--target",
            "canary", "--policy", "time", "--step", "20", "--interval", "1", "--worker-loss-timeout",
            str(BOUND), "--prometheus", "http://127.0.0.1:9", "--kubeconfig", str(kube.kubeconfig), "--local"]
    proc_env = {**env, **({ENV: trial.point} if trial.point else {})}
    proc = subprocess.Popen(args, env=proc_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if trial.delay is not None:
        try:
            proc.wait(timeout=trial.delay)
        except subprocess.TimeoutExpired:
            proc.kill()
    returncode = proc.wait(timeout=120)
    killed = returncode == -9
    killed_at = time.monotonic()
    lease = lease_of(emulator.get_object(ISTIO_API, "VirtualService", ns, trial.app))
    holder = lease.holder if lease else None
    # The supervisor's first run after the heartbeat bound has passed.
    time.sleep(BOUND + 0.5)
    state = reconcile(ReconcileParameters(kubernetes=kube, namespace=ns), return_state=True)
    assert state.is_completed(), state.message
    recovered = time.monotonic() - killed_at
    weights, lease_left = _weights(emulator, ns, trial.app)
    with get_client(sync_client=True) as client:
        try:
            slots = client.read_global_concurrency_limit_by_name(limit_name(ns, trial.app)).active_slots
        except ObjectNotFound:
            slots = 0  # killed before the app's limit was even created
        run_state = client.read_flow_run(UUID(holder)).state.name if holder else None  # type: ignore[union-attr]
    after = canary_release(ReleaseParameters(
        namespace=ns, app=trial.app, baseline="stable", target="canary",
        policy=TimePolicy(step=50, interval=0.2), kubernetes=kube,
    ), return_state=True) if weights["stable"] == 100 else None
    return Result(trial, killed, weights, lease_left, slots, run_state,
                  run_outcome(after) if after else None, recovered)


def trials() -> list[Trial]:
    rng = random.Random(20261201)
    named = [Trial(app=f"cart-{i}", point=p) for i, p in enumerate(POINTS)]
    # From just after the process starts (imports and lease) to past the last of its 5 steps.
    moments = [Trial(app=f"shop-{i}", delay=round(rng.uniform(2.0, 10.0), 2)) for i in range(RANDOM_TRIALS)]
    return named + moments


def test_sigkill_anywhere_leaves_no_half_shifted_gateway_lease_or_slot(
    prefect_server: Any, cluster: Any
) -> None:
    emulator, kube = cluster
    env = {**os.environ, **prefect_server.env(), "PREFECT_LOGGING_LEVEL": "WARNING"}
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda t: run_trial(emulator, kube, env, t), trials()))
    for r in results:
        what = r.trial.point or f"after {r.trial.delay} s"
        if r.trial.point:
            assert r.killed, f"the process was not killed at {what}"
        assert r.weights in ({"stable": 100, "canary": 0}, {"stable": 0, "canary": 100}), (what, r.weights)
        assert not r.lease_left, (what, "lease left")
        assert r.busy_slots == 0, (what, "slot stuck")
        assert r.run_state != "Running", (what, "the dead run is still shown Running")
        if r.weights["stable"] == 100:
            assert r.next_release is Outcome.PROMOTED, (what, "the next release was not accepted")
    killed_mid_release = [r for r in results if r.killed and r.run_state == "Crashed"]
    assert killed_mid_release, "at least the named points mid-release were put right by the supervisor"
