"""`lamia demo`: Lamia's whole job on one machine, watched in the Prefect UI.

It starts a Prefect server with its UI (or uses the one ``PREFECT_API_URL``
names) and a sandbox (API-server emulator holding ``reviews`` 1.4.2, 1.5.0 and
1.6.0-rc.1 in namespace ``demo``, traffic simulator, Prometheus), prepares the
namespace and a gateway with everything on 1.4.2, then runs the real flows in
this process: a release of 1.5.0 (healthy, promoted), a release of 1.6.0-rc.1
against 1.5.0 (30 % errors, rolled back), and a conditional route (Chrome and
Nexus 6P users split 50/50 between 1.4.2 and 1.5.0, everyone else on 1.4.2)
checked against the simulator's own
counts. Each release's steps are read back from its table artifact while it
runs, so what is printed is what the Prefect UI shows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

import re2
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.client.schemas.objects import State
from prefect.client.schemas.sorting import ArtifactSort
from prefect.flow_engine import run_flow
from pydantic import BaseModel

from flows._history import artifact_key
from flows.manual import apply_route_flow, set_weights
from flows.params import ReleaseParameters, RouteParameters, WeightsParameters
from flows.release import canary_release, outcome_of
from lamia_core.kube import KubeAdapter
from lamia_core.models import DEFAULT_ROUTE, ROUTE_PREFIX, Gateway, Route, Weights
from lamia_core.outcome import Outcome
from lamia_core.policies import ComparePolicy
from lamia_core.text import weights_text
from lamia_sandbox.prefect_server import PrefectServer, client_settings
from lamia_sandbox.sandbox import Sandbox
from lamia_sandbox.simulator import DEFAULT_USER_AGENTS, VersionBehaviour

NAMESPACE = "demo"
APP = "reviews"
#: Version names as a real application has them (dots, a pre-release): the demo is what people try first.
STABLE, GOOD, BAD = "1.4.2", "1.5.0", "1.6.0-rc.1"
VERSIONS: dict[str, VersionBehaviour] = {
    STABLE: VersionBehaviour(),
    GOOD: VersionBehaviour(),
    BAD: VersionBehaviour(error_rate=0.3, error_code=503),
}
USER_AGENT_REGEXES = (r"^.*(Chrome).*$", r"^.*(Nexus 6P).*$")
CONDITION = " or ".join(f'header "User-Agent" regex "{r}"' for r in USER_AGENT_REGEXES)
CONDITION_ROUTE = "condition"
ROUTE_WEIGHTS = {STABLE: 50, GOOD: 50, BAD: 0}
#: (baseline, target, the outcome the demo expects).
RELEASES = ((STABLE, GOOD, "promoted"), (GOOD, BAD, "rolled-back"))




@dataclass(frozen=True)
class DemoSettings:
    """How fast the demo goes; the defaults finish well within two minutes on two cores.

    The demo uses the default policy, compare, sped up for a demo: the sandbox's Prometheus
    scrapes every second, so a check every 2 s sees new samples; steps of 25 to a max
    weight of 50, so that the good 1.5.0 is promoted after a few steps at 100 requests/s
    (each step needs the evidence of about a hundred of its requests), while 1.6.0-rc.1's 30 %
    errors are caught at the first check that sees them.
    """

    step: int = 25
    interval: float = 2.0
    max_weight: int = 50
    scrape_interval: float = 1.0
    min_requests: int = 5
    rate: float = 100.0
    traffic_seconds: float = 5.0
    #: Tolerance of the route check, in standard deviations of a binomial count.
    sigmas: float = 4.0
    seed: int | None = None

    def policy(self) -> ComparePolicy:
        return ComparePolicy(
            step=self.step,
            interval=self.interval,
            max_weight=self.max_weight,
            scrape_interval=self.scrape_interval,
            min_requests=self.min_requests,
        )


@dataclass
class DemoEnvironment:
    server: PrefectServer
    sandbox: Sandbox
    ui_url: str
    started_server: bool

    def run_url(self, flow_run_id: str) -> str:
        return f"{self.ui_url}/runs/flow-run/{flow_run_id}"


# --- the environment ----------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_prefect_console(level: int = logging.WARNING) -> Iterator[None]:
    """Only warnings from Prefect on the console; the flows' INFO logs still go to the API."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    handlers = {h for lg in loggers for h in lg.handlers if isinstance(h, PrefectConsoleHandler)}
    saved = {h: h.level for h in handlers}
    for h in handlers:
        h.setLevel(max(h.level, level))
    try:
        yield
    finally:
        for h, lvl in saved.items():
            h.setLevel(lvl)


@contextlib.contextmanager
def demo_environment(settings: DemoSettings, say: Callable[[str], None]) -> Iterator[DemoEnvironment]:
    """A Prefect server and the sandbox, started side by side, and this process pointed at the server.

    With ``PREFECT_API_URL`` set, that server is used and left running.
    """
    existing = os.environ.get("PREFECT_API_URL")
    home: Path | None = None
    if existing:
        server = PrefectServer.existing(existing)
    else:
        home = Path(tempfile.mkdtemp(prefix="lamia-demo-prefect-"))
        server = PrefectServer(home, ui=True)
    sandbox = Sandbox(NAMESPACE, APP, VERSIONS, rate=settings.rate, seed=settings.seed)
    what = "the sandbox" if existing else "a Prefect server (SQLite, with its UI) and the sandbox"
    say(f"starting {what} (API-server emulator, traffic simulator, Prometheus)...")
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(2, thread_name_prefix="lamia-demo-start") as pool:
            futures: list[Future[Any]] = [pool.submit(server.start), pool.submit(sandbox.start)]
        for future in futures:
            future.result()  # the first failure, once both have finished starting or failing
        env = server.env()
        if existing and os.environ.get("PREFECT_UI_URL"):
            env["PREFECT_UI_URL"] = os.environ["PREFECT_UI_URL"]
        ui_url = env.get("PREFECT_UI_URL", server.ui_url).rstrip("/")
        say(f"ready in {time.monotonic() - started:.1f} s: Prefect {server.api_url}, "
            f"Prometheus {sandbox.prometheus.url}, kubeconfig {sandbox.kubeconfig}")
        with client_settings(env), quiet_prefect_console():
            yield DemoEnvironment(server, sandbox, ui_url, started_server=not existing)
    finally:
        sandbox.stop()
        server.stop()
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)


# --- watching a flow run ------------------------------------------------------------------------


def _format_step(label: str, row: Mapping[str, Any]) -> str:
    # Values measured only for reference ("n/a") would crowd out the target's health.
    parts = str(row.get("evidence") or "").split("; ")
    evidence = "; ".join(e for e in parts if e and e != "-" and not e.endswith("(n/a)"))
    # A rollback's reason says which failure it was; elsewhere the evidence is the health.
    detail = row.get("reason", "") if row.get("decision") == "rollback" or not evidence else evidence
    return (f"  {label} step {row.get('step', '?'):>2} {row.get('time', '')}  {row.get('weights', ''):<20} "
            f"{row.get('decision', ''):<11} {detail}")


def read_table(flow_run_id: UUID | str, key: str) -> tuple[UUID | None, list[dict[str, Any]]]:
    """The latest version of a run's table artifact ``key``: its id and rows (None, [] when none yet)."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(flow_run_id))]),
            ),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    if not artifacts:
        return None, []
    data = artifacts[0].data
    table = json.loads(data) if isinstance(data, str) else data
    rows = [r for r in table if isinstance(r, dict)] if isinstance(table, list) else []
    return artifacts[0].id, rows


class StepWatcher:
    """Prints each new row of a run's steps table artifact, read through the Prefect API."""

    def __init__(self, flow_run_id: UUID, key: str, label: str, say: Callable[[str], None],
                 poll: float = 0.5) -> None:
        self.flow_run_id, self.key, self.label, self.say, self.poll = flow_run_id, key, label, say, poll
        self.printed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lamia-demo-steps", daemon=True)

    def __enter__(self) -> StepWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self.show_new()  # the last rows, written just before the run ended

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self.show_new()
            except Exception as exc:  # the display must never stop a release
                self.say(f"  (could not read the steps table: {exc})")

    def show_new(self) -> None:
        _, rows = read_table(self.flow_run_id, self.key)
        for row in rows[self.printed:]:
            self.say(_format_step(self.label, row))
        self.printed = max(self.printed, len(rows))


def run_in_process(flow: Flow[Any, Any], params: BaseModel, env: DemoEnvironment, say: Callable[[str], None],
                   label: str, watch: tuple[str, str] | None = None) -> tuple[State, str]:
    """Run ``flow`` here, as a flow run created first so that its address is known from the start.

    ``watch`` = (artifact key, label): print the rows of that table artifact as they come.
    """
    with get_client(sync_client=True) as client:
        # Named now as the flow would name it, so that the line printed here says what it does.
        name = getattr(params, "run_name", None)
        flow_run = client.create_flow_run(flow, name=name, parameters={"params": params}, tags=["lamia-demo"])
    run_id = str(flow_run.id)
    say(f"{label}: flow run {flow_run.name} {env.run_url(run_id)}")
    watcher = StepWatcher(flow_run.id, watch[0], watch[1], say) if watch else contextlib.nullcontext()
    with watcher:
        state = run_flow(flow, flow_run=flow_run, parameters={"params": params}, return_type="state")
    assert isinstance(state, State)
    return state, run_id


# --- the scenario -------------------------------------------------------------------------------


STEPS_KEY = artifact_key("lamia", NAMESPACE, APP, "steps")


def _gateway_weights(env: DemoEnvironment) -> dict[str, dict[str, int]]:
    with KubeAdapter(env.sandbox.kube) as kube:
        gateway = kube.read_gateway(kube.discover_application(NAMESPACE, APP))
    assert gateway is not None, "the demo's gateway disappeared"
    versions = sorted(VERSIONS)
    return {r.name: {v: r.weights[v] for v in versions} for r in gateway.routes}


def prepare_cluster(env: DemoEnvironment, say: Callable[[str], None]) -> None:
    """What a user does first: `lamia cluster init`, then a gateway with all traffic on 1.4.2."""
    with KubeAdapter(env.sandbox.kube) as kube:
        kube.init_namespace(NAMESPACE)
        app = kube.discover_application(NAMESPACE, APP)
        weights = Weights({v: 100 if v == STABLE else 0 for v in app.version_names})
        kube.apply_gateway(Gateway(application=app, routes=(Route(weights=weights),)))
    say(f"namespace {NAMESPACE} initialised; gateway of {APP} ({', '.join(app.version_names)}) "
        f"created with {weights}")


def run_release(env: DemoEnvironment, settings: DemoSettings, baseline: str, target: str, expected: str,
                say: Callable[[str], None]) -> dict[str, Any]:
    params = ReleaseParameters(
        namespace=NAMESPACE, app=APP, baseline=baseline, target=target, policy=settings.policy(),
        kubernetes=env.sandbox.kube, prometheus=env.sandbox.prometheus,
    )
    label = f"release of {target} against {baseline}"
    state, run_id = run_in_process(canary_release, params, env, say, label, watch=(STEPS_KEY, target))
    data = outcome_of(state)
    outcome = str(data.get("outcome") or Outcome.from_state_name(state.name) or Outcome.FAILED)
    weights = _gateway_weights(env)[DEFAULT_ROUTE]
    reason = str(data.get("reason") or state.message or "")
    if outcome == "cancelled":
        # Ctrl-C during a release (or Cancel in the UI) ends there; the flow put the baseline back.
        say(f"  -> {target}: cancelled, gateway {weights_text(weights)}")
        raise KeyboardInterrupt
    baseline_expected = target if expected == "promoted" else baseline
    ok = outcome == expected and weights.get(baseline_expected) == 100
    say(f"  -> {target}: {outcome} ({'as expected' if ok else f'EXPECTED {expected}'}), "
        f"gateway {weights_text(weights)}")
    return {"app": APP, "baseline": baseline, "target": target, "outcome": outcome, "expected": expected,
            "ok": ok, "weights": weights, "steps": data.get("steps"), "reason": reason, "flow_run_id": run_id,
            "url": env.run_url(run_id)}


def matching_share(user_agents: Any = DEFAULT_USER_AGENTS) -> float:
    """The share of the simulator's requests whose User-Agent matches the demo's condition."""
    total = sum(w for _, w in user_agents)
    hits = sum(w for ua, w in user_agents if any(re2.fullmatch(r, ua) for r in USER_AGENT_REGEXES))
    return float(hits / total)


Check = tuple[bool, str]


def verdict(check: Check) -> str:
    ok, text = check
    return f"{text}: {'ok' if ok else 'NOT OK'}"


def binomial_check(what: str, hits: int, n: int, p: float, sigmas: float) -> Check:
    """Is ``hits`` out of ``n`` within ``sigmas`` standard deviations of a binomial(n, p)?"""
    expected = n * p
    tolerance = sigmas * math.sqrt(n * p * (1 - p))
    ok = n > 0 and abs(hits - expected) <= tolerance
    return ok, f"{what}: {hits} of {n} (expected {expected:.1f} ± {tolerance:.1f}, {sigmas:g} sigma)"


def check_routes(counts: Mapping[str, Mapping[str, int]], unrouted: int, weights: Mapping[str, int],
                 sigmas: float, min_requests: int = 30) -> dict[str, list[Check]]:
    """Judge one window of per-route counts: every request of the default route on the stable version; the
    conditional route getting the share of requests its condition matches, split by its weights."""
    default, cond = counts.get(DEFAULT_ROUTE, {}), counts.get(CONDITION_ROUTE, {})
    n_default, n_cond = sum(default.values()), sum(cond.values())
    elsewhere = {v: n for v, n in default.items() if v != STABLE and n}
    on_stable = f"everyone else: {default.get(STABLE, 0)} of {n_default} requests on {STABLE}"
    if elsewhere:
        on_stable += f", {weights_text(elsewhere)} elsewhere"
    on_default = [
        (n_default > 0 and not elsewhere, on_stable),
        (unrouted == 0, f"requests without a route: {unrouted}"),
    ]
    on_condition = [
        (n_cond >= min_requests, f"matching requests: {n_cond} (at least {min_requests} needed)"),
        binomial_check("share of requests matching", n_cond, n_default + n_cond, matching_share(), sigmas),
    ]
    for version, weight in sorted(weights.items()):
        hits = cond.get(version, 0)
        if weight in (0, 100):
            on_condition.append((hits == (n_cond if weight else 0),
                                 f"matching on {version} (weight {weight}): {hits} of {n_cond}"))
        else:
            on_condition.append(binomial_check(f"matching on {version}", hits, n_cond, weight / 100, sigmas))
    return {DEFAULT_ROUTE: on_default, CONDITION_ROUTE: on_condition}


def _by_route(counts: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for route, per_version in counts["by_route"].items():
        name = route.removeprefix(ROUTE_PREFIX)
        out[name] = {v: int(n) for v, n in per_version.items()}
    return out


def measure_traffic(env: DemoEnvironment, seconds: float) -> tuple[dict[str, dict[str, int]], int]:
    """Requests per route and version during ``seconds``, from the simulator's exact counts."""
    sim = env.sandbox.simulator
    assert sim is not None
    sim.refresh_gateway()
    # A request already routed by the previous VirtualService may still be counted: let those pass.
    time.sleep(max(1.0, 2 * sim.refresh_interval))
    before = sim.counts()
    time.sleep(seconds)
    after = sim.counts()
    b, a = _by_route(before), _by_route(after)
    diff = {r: {v: n - b.get(r, {}).get(v, 0) for v, n in per.items()} for r, per in a.items()}
    unrouted = int(after["unrouted"] - before["unrouted"])
    return {r: per for r, per in diff.items() if any(per.values())}, unrouted


def run_routes(
    env: DemoEnvironment, settings: DemoSettings, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Everyone back on the stable version, then the conditional route, then a window of traffic
    judged per route."""
    versions = sorted(VERSIONS)
    base = {"namespace": NAMESPACE, "app": APP, "kubernetes": env.sandbox.kube}
    everyone_stable = {v: 100 if v == STABLE else 0 for v in versions}
    st1, default_run = run_in_process(set_weights, WeightsParameters(**base, weights=everyone_stable), env,
                                      say, f"set-weights default {STABLE}=100")
    st2, route_run = run_in_process(
        apply_route_flow, RouteParameters(**base, condition=CONDITION, weights=ROUTE_WEIGHTS,
                                          route=CONDITION_ROUTE),
        env, say, f"apply-route {weights_text(ROUTE_WEIGHTS)} for {CONDITION}")
    gateway = _gateway_weights(env)
    say("  gateway: " + "; ".join(f"{r} {weights_text(w)}" for r, w in gateway.items()))
    say(f"counting {settings.traffic_seconds:g} s of simulated traffic per route and version...")
    counts, unrouted = measure_traffic(env, settings.traffic_seconds)
    checks = check_routes(counts, unrouted, gateway.get(CONDITION_ROUTE, {}), settings.sigmas)
    entries = []
    for route, state, run_id in ((DEFAULT_ROUTE, st1, default_run), (CONDITION_ROUTE, st2, route_run)):
        applied = state.is_completed()
        ok = applied and all(good for good, _ in checks[route])
        for check in checks[route]:
            say(f"  {route}: {verdict(check)}")
        if not applied:
            say(f"  {route}: the flow run ended {state.name}: {state.message}")
        entries.append({
            "route": route,
            "condition": CONDITION if route == CONDITION_ROUTE else None,
            "weights": gateway.get(route, {}),
            "counts": {v: counts.get(route, {}).get(v, 0) for v in versions},
            "checks": [verdict(c) for c in checks[route]],
            "ok": ok,
            "flow_run_id": run_id,
            "url": env.run_url(run_id),
        })
    return entries


def run_scenario(env: DemoEnvironment, settings: DemoSettings, say: Callable[[str], None]) -> dict[str, Any]:
    """The demo's story on a started environment; returns the report (``ok`` says whether all went as
    expected)."""
    started = time.monotonic()
    prepare_cluster(env, say)
    releases = [run_release(env, settings, b, t, expected, say) for b, t, expected in RELEASES]
    routes = run_routes(env, settings, say)
    return {
        "prefect_ui": env.ui_url,
        "releases": releases,
        "routes": routes,
        "ok": all(r["ok"] for r in releases) and all(r["ok"] for r in routes),
        "scenario_seconds": round(time.monotonic() - started, 1),
    }


def summary(report: Mapping[str, Any]) -> str:
    lines = ["", f"Summary ({report.get('total_seconds', report['scenario_seconds'])} s):"]
    for r in report["releases"]:
        mark = "ok" if r["ok"] else f"UNEXPECTED (wanted {r['expected']})"
        lines.append(f"  release {r['target']} against {r['baseline']}: {r['outcome']:<11} "
                     f"{weights_text(r['weights']):<20} {mark}")
        lines.append(f"      {r['reason']}")
    for r in report["routes"]:
        what = f"route {r['route']}" + (f" ({r['condition']})" if r["condition"] else "")
        lines.append(f"  {what}: weights {weights_text(r['weights'])}, requests {weights_text(r['counts'])}: "
                     + ("ok" if r["ok"] else "NOT OK"))
    lines.append("")
    lines.append(f"Prefect UI: {report['prefect_ui']}  (flow runs, their artifacts "
                 f"lamia-{NAMESPACE}-{APP}-steps/-summary/-progress, and events lamia.release.*)")
    lines.append("ALL AS EXPECTED" if report["ok"] else "SOMETHING WENT OTHERWISE THAN EXPECTED")
    return "\n".join(lines)


def run_demo(settings: DemoSettings | None = None, *, as_json: bool = False, keep: bool = False,
             out: TextIO | None = None, err: TextIO | None = None) -> tuple[dict[str, Any], int]:
    """The whole demo; returns the report and the exit code (0 when everything went as expected).

    With ``as_json`` the report is the only thing written to ``out`` (progress goes to ``err``);
    with ``keep`` the servers stay up after the report until Ctrl-C.
    """
    settings = settings or DemoSettings()
    out = out or sys.stdout
    err = err or sys.stderr
    show = err if as_json else out

    def say(text: str) -> None:
        print(text, file=show, flush=True)

    started = time.monotonic()
    # Whatever a library prints must not end up in the JSON document.
    with (contextlib.redirect_stdout(err) if as_json else contextlib.nullcontext(),
          _interrupt_on_signals(),
          demo_environment(settings, say) as env):
        report = run_scenario(env, settings, say)
        report["total_seconds"] = round(time.monotonic() - started, 1)
        say(summary(report))
        if as_json:
            print(json.dumps(report, indent=2), file=out, flush=True)
        if keep:
            _keep_running(env, say)
        elif env.started_server:
            say("The Prefect server stops with the demo; `make demo KEEP=1` (lamia demo --keep) keeps it up.")
    return report, 0 if report["ok"] else 1


def _keep_running(env: DemoEnvironment, say: Callable[[str], None]) -> None:
    say(f"\nKeeping the Prefect UI at {env.ui_url} and the sandbox running "
        f"(kubeconfig {env.sandbox.kubeconfig}); press Ctrl-C to stop.")
    with contextlib.suppress(KeyboardInterrupt):
        while not env.started_server or env.server.running:
            time.sleep(1)
    say("stopping")


@contextlib.contextmanager
def _interrupt_on_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM both end the wait, so that the servers are stopped either way (a process
    started in the background by a shell even ignores SIGINT unless told otherwise)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    saved = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


__all__ = [
    "STEPS_KEY",
    "DemoEnvironment",
    "DemoSettings",
    "check_routes",
    "demo_environment",
    "read_table",
    "run_demo",
    "run_scenario",
]
