"""Releases whose worker is killed, and releases through outages: what is left, and how fast it is put right.

Starts a Prefect server (SQLite; or uses PREFECT_API_URL) and the API-server emulator, then:

- ``kills``: releases (time policy, step 20, interval 2 s) run as `lamia release start --local`
  processes, each killed with SIGKILL at one of the loop's named points or at a random moment,
  while `lamia-reconcile` runs every ``--period`` seconds in the background, as its deployment
  does (every 30 s in prefect.yaml). Each release's heartbeat bound is ``--bound`` seconds (the
  default is 3 intervals, at least 30 s; a shorter one keeps the benchmark short: recovery time
  scales with bound + period). Per trial: the gateway's end state, lease, slot, the dead run's
  state, a next release, and the time from the kill to everything put right.
- ``outages``: the first step's delay with Slack answering at once, hanging 30 s, or answering
  429 with Retry-After 5; and a release through the Prefect server stopped 5 s and 60 s.

    .venv/bin/python bench/chaos_release.py kills [--random 20] [--bound 3] [--period 5]
    .venv/bin/python bench/chaos_release.py outages
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

LAMIA = str(Path(sys.executable).with_name("lamia"))
VERSIONS = ["stable", "canary"]


def _gateway(emulator: Any, ns: str, app: str) -> tuple[dict[str, int], bool]:
    from lamia_core.istio import ISTIO_API
    from lamia_core.lease import lease_of

    vs = emulator.get_object(ISTIO_API, "VirtualService", ns, app)
    (route,) = [r for r in vs["spec"]["http"] if r.get("name") == "lamia-default"]
    return {d["destination"]["subset"]: d["weight"] for d in route["route"]}, lease_of(vs) is not None


def _prepare(emulator: Any, kube: Any, ns: str, app: str) -> None:
    from lamia_core.kube import KubeAdapter
    from lamia_core.models import Gateway, Route, Weights
    from lamia_sandbox.seed import seed_application

    seed_application(emulator, ns, app, VERSIONS)
    with KubeAdapter(kube) as adapter:
        application = adapter.discover_application(ns, app)
        adapter.apply_gateway(Gateway(application=application,
                                      routes=(Route(weights=Weights.all_on("stable", VERSIONS)),)))


def _slots(ns: str, app: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from flows._guard import limit_name

    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(limit_name(ns, app)).active_slots
        except ObjectNotFound:
            return 0


class Supervisor(threading.Thread):
    """lamia-reconcile every ``period`` seconds, as its deployment runs."""

    def __init__(self, kube: Any, period: float) -> None:
        super().__init__(daemon=True)
        self.kube, self.period, self.stop = kube, period, threading.Event()
        self.runs = 0

    def run(self) -> None:
        from flows.reconcile import ReconcileParameters, reconcile

        while not self.stop.wait(self.period):
            reconcile(ReconcileParameters(kubernetes=self.kube), return_state=True)
            self.runs += 1


def kills(args: argparse.Namespace) -> None:
    from prefect.client.orchestration import get_client

    from flows._chaos import ENV, POINTS
    from lamia_core.kube import KubeConfig
    from lamia_sandbox.kube_emulator import KubeEmulator

    rng = random.Random(args.seed)
    trials: list[tuple[str, str | None, float | None]] = [(f"p{i}", p, None) for i, p in enumerate(POINTS)]
    trials += [(f"r{i}", None, round(rng.uniform(2.0, 14.0), 2)) for i in range(args.random)]
    with KubeEmulator() as emulator, _prefect() as env:
        path = emulator.write_kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
        kube = KubeConfig(kubeconfig=str(path), context="lamia-emulator")
        supervisor = Supervisor(kube, args.period)
        supervisor.start()
        rows = []
        for name, point, delay in trials:
            ns, app = f"bench-{name}", "cart"
            _prepare(emulator, kube, ns, app)
            cmd = [LAMIA, "release", "start", "-n", ns, "--app", app, "--baseline", "stable", "--target",
                   "canary", "--policy", "time", "--step", "20", "--interval", "2", "--worker-loss-timeout",
                   str(args.bound), "--prometheus", "http://127.0.0.1:9", "--kubeconfig", str(path),
                   "--local"]
            proc = subprocess.Popen(cmd, env={**env, **({ENV: point} if point else {})},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if delay is not None:
                try:
                    proc.wait(timeout=delay)
                except subprocess.TimeoutExpired:
                    proc.kill()
            killed = proc.wait(timeout=120) == -9
            at = time.monotonic()
            holder = None
            from lamia_core.istio import ISTIO_API
            from lamia_core.lease import lease_of
            lease = lease_of(emulator.get_object(ISTIO_API, "VirtualService", ns, app))
            holder = lease.holder if lease else None
            deadline = at + args.bound + 3 * args.period + 30
            while time.monotonic() < deadline:
                weights, leased = _gateway(emulator, ns, app)
                if not leased and _slots(ns, app) == 0 and weights in (
                        {"stable": 100, "canary": 0}, {"stable": 0, "canary": 100}):
                    break
                time.sleep(0.2)
            recovery = time.monotonic() - at
            weights, leased = _gateway(emulator, ns, app)
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(UUID(holder)).state.name if holder else "-"  # type: ignore[union-attr]
            half = weights not in ({"stable": 100, "canary": 0}, {"stable": 0, "canary": 100})
            rows.append({"trial": point or f"after {delay:.2f} s", "killed": killed, "weights": weights,
                         "half_shifted": half, "lease_left": leased, "slot_stuck": _slots(ns, app) > 0,
                         "run": state, "recovery_s": recovery if (lease or killed) else 0.0,
                         "next": _next_release(kube, ns, app) if weights["stable"] == 100 else "(promoted)"})
            print(f"  {rows[-1]['trial']:>16}: killed={killed} {weights} lease={leased} run={state} "
                  f"recovered in {recovery:.1f} s, next release {rows[-1]['next']}", file=sys.stderr)
        supervisor.stop.set()
    # A run that ended (promoted: Completed) before the kill needed no supervisor.
    needed = [r["recovery_s"] for r in rows if r["killed"] and r["run"] not in ("-", "Completed")]
    print(f"\n{len(rows)} trials ({len(POINTS)} named points, {args.random} random moments); heartbeat bound "
          f"{args.bound:g} s, reconcile every {args.period:g} s")
    print(f"half-shifted gateways: {sum(r['half_shifted'] for r in rows)}; leases left: "
          f"{sum(r['lease_left'] for r in rows)}; slots stuck: {sum(r['slot_stuck'] for r in rows)}; "
          f"next release refused: {sum(1 for r in rows if r['next'] not in ('promoted', '(promoted)'))}")
    if needed:
        print(f"time from the kill to all put right, where a supervisor had to act ({len(needed)}): median "
              f"{statistics.median(needed):.1f} s, max {max(needed):.1f} s (bound + period = "
              f"{args.bound + args.period:g} s)")


def _next_release(kube: Any, ns: str, app: str) -> str:
    from flows._history import run_outcome
    from flows.params import ReleaseParameters
    from flows.release import canary_release
    from lamia_core.policies import TimePolicy

    state = canary_release(ReleaseParameters(namespace=ns, app=app, baseline="stable", target="canary",
                                             policy=TimePolicy(step=50, interval=0.2), kubernetes=kube),
                           return_state=True)
    return str(run_outcome(state))


class _prefect:
    """A Prefect server for the benchmark (or the one PREFECT_API_URL names), and this process on it."""

    def __enter__(self) -> dict[str, str]:
        from lamia_sandbox._lifecycle import free_port
        from lamia_sandbox.prefect_server import PrefectServer, client_settings

        existing = os.environ.get("PREFECT_API_URL")
        self.server = PrefectServer.existing(existing) if existing else PrefectServer(
            Path(tempfile.mkdtemp(prefix="lamia-bench-prefect-")), port=free_port(), ui=False)
        self.server.start()
        self._settings = client_settings(self.server.env())
        self._settings.__enter__()
        return {**os.environ, **self.server.env(), "PREFECT_LOGGING_LEVEL": "WARNING"}

    def __exit__(self, *exc: object) -> None:
        self._settings.__exit__(None, None, None)
        self.server.stop()


def outages(args: argparse.Namespace) -> None:
    from flows._history import run_outcome
    from flows.params import ReleaseParameters, SlackSettings
    from flows.release import canary_release
    from lamia_core.kube import KubeConfig
    from lamia_core.outcome import Outcome
    from lamia_core.policies import TimePolicy
    from lamia_sandbox.fake_slack import DEFAULT_TOKEN, FakeSlack
    from lamia_sandbox.kube_emulator import KubeEmulator

    os.environ["SLACK_BOT_TOKEN"] = DEFAULT_TOKEN
    with KubeEmulator() as emulator, _prefect() as _:
        path = emulator.write_kubeconfig(Path(tempfile.mkdtemp()) / "kubeconfig")
        kube = KubeConfig(kubeconfig=str(path), context="lamia-emulator")

        def first_step(name: str, slack: FakeSlack | None) -> float:
            ns, app = f"slack-{name}", "cart"
            _prepare(emulator, kube, ns, app)
            seen: list[float] = []

            def watch() -> None:
                while _gateway(emulator, ns, app)[0]["canary"] == 0:
                    time.sleep(0.005)
                seen.append(time.monotonic())

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            params = ReleaseParameters(
                namespace=ns, app=app, baseline="stable", target="canary",
                policy=TimePolicy(step=50, interval=1), kubernetes=kube,
                slack=SlackSettings(channel="#releases", base_url=slack.api_url) if slack else None)
            started = time.monotonic()
            state = canary_release(params, return_state=True)
            watcher.join(10)
            assert run_outcome(state) is Outcome.PROMOTED, state.message
            return seen[0] - started

        results = {"no Slack": [first_step(f"none-{i}", None) for i in range(args.repeat)]}
        for what, setup in (("Slack answering", lambda s: None),
                            ("Slack hanging 30 s", lambda s: setattr(s, "delay", 30.0)),
                            ("Slack 429, Retry-After 5", lambda s: s.rate_limit(1, retry_after=5))):
            times = []
            for i in range(args.repeat):
                with FakeSlack() as slack:
                    setup(slack)
                    times.append(first_step(f"{len(results)}-{i}", slack))
            results[what] = times
        base = statistics.median(results["no Slack"])
        print(f"\nfirst step after the release started (median of {args.repeat}); delay against no Slack")
        for what, times in results.items():
            median = statistics.median(times)
            print(f"  {what:>26}: {median:.3f} s  (delay {median - base:+.3f} s, "
                  f"max {max(times) - base:+.3f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    k = sub.add_parser("kills")
    k.add_argument("--random", type=int, default=20)
    k.add_argument("--bound", type=float, default=3.0)
    k.add_argument("--period", type=float, default=5.0)
    k.add_argument("--seed", type=int, default=7)
    o = sub.add_parser("outages")
    o.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    {"kills": kills, "outages": outages}[args.what](args)


if __name__ == "__main__":
    main()
