"""The `canary-release` flow: the engine decides, tasks act, the loop waits and observes.

Whatever happens after the first change to the gateway, the run ends with the
gateway in a state the user asked for: promoted (target at 100%), rolled back
(baseline at 100%) or, with a policy whose final action is ``hold``, held where
the policy stopped. An exception or a cancellation on the way puts the
baseline back at 100% and says so in the logs, in Slack and in an event.

Another writer (a ``kubectl apply`` of the user's own file, a GitOps
controller, a person) may change the release's route meanwhile. Before each
verdict and each write the release compares the route with what it last
wrote; on a difference it stops without writing again, keeps the other
writer's weights, gives its lease back and ends ``Interrupted``, so that no
verdict is drawn from traffic Lamia did not split.

A run whose process is killed outright cannot put anything back; its lease on
the VirtualService keeps other writers out and records the baseline, which
``lamia release abort`` puts back.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.exceptions import TerminationSignal
from prefect.flow_runs import pause_flow_run
from prefect.states import Cancelled, Completed, Failed
from pydantic import BaseModel

from flows import _chaos as chaos
from flows._control import Approval, Controls
from flows._guard import Guard, exclusive_release, run_info
from flows._history import ReleaseHistory, app_tag, flow_run_url, tag_run
from flows._notify import ReleaseThread
from flows.clusters import use_cluster
from flows.params import ReleaseParameters
from lamia_core import slack as slack_text
from lamia_core.conditions import compile_condition
from lamia_core.engine import (
    Decision,
    Observation,
    ReleaseSpec,
    ReleaseState,
    abort,
    decide,
    held,
    promote_now,
    start,
)
from lamia_core.errors import ForeignChange, InvalidInput, LamiaError, ReleaseLocked, TemporaryError
from lamia_core.kube import KubeConfig
from lamia_core.lease import Lease, abort_hint, parse_time, worker_loss_bound
from lamia_core.metrics import no_series
from lamia_core.models import DEFAULT_ROUTE, Application, Gateway, Route, Weights, check_two_versions
from lamia_core.outcome import Outcome
from lamia_core.policies import ComparePolicy
from lamia_core.recovery import RunInfo, assess
from tasks.kubernetes import (
    adopt_gateway,
    apply_weights,
    check_route,
    discover_application,
    read_gateway,
    read_lease,
    renew_lease,
)
from tasks.prometheus import latest_scrape, measure_scrape_interval, observe_metrics, read_counters

#: Name of the route a conditional release shifts.
CANARY_ROUTE = "canary"
#: How often the wait between steps checks whether someone cancelled the run.
CANCEL_POLL_SECONDS = 1.0


class ReleaseOutcome(BaseModel):
    app: str
    namespace: str
    baseline: str
    target: str
    outcome: Outcome
    weights: dict[str, int]
    reason: str
    steps: int
    flow_run_id: str


class Cancellation(Exception):
    """The run was asked to stop (``lamia release abort`` or the Prefect UI)."""


class ReleaseEnded(Exception):
    """The data of a release's Failed state (rolled back, interrupted): Prefect resolves a failed
    state's data into an exception, so the outcome travels as one; :func:`outcome_of` reads it."""

    def __init__(self, outcome: dict[str, Any]) -> None:
        super().__init__(outcome.get("reason", ""))
        self.outcome = outcome


def outcome_of(state: State) -> dict[str, Any]:
    """A finished release's outcome (ReleaseOutcome as JSON), whatever its state; {} when it has none."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, ReleaseEnded):
        return result.outcome
    return result if isinstance(result, dict) else {}


@dataclass
class RouteWriter:
    """The release's writes of its route, each checked against what it wrote last.

    ``last`` starts as the route's weights when the release took its lease; a
    write or a check that finds anything else raises ForeignChange.
    """

    kube: KubeConfig
    application: Application
    route: str
    holder: str
    last: Weights
    guard: Guard | None = None

    def write(self, weights: Weights, state: ReleaseState | None = None) -> None:
        """Write ``weights`` (and the engine's ``state`` into the lease, in the same write)."""
        self.check_alive()
        apply_weights(self.kube, self.application, weights, self.route, holder=self.holder, expect=self.last,
                      lease_update=_lease_fields(state))
        self.last = weights

    def record(self, state: ReleaseState, *, plain: bool = False) -> None:
        """Persist the engine's state after a decision that changed no weight."""
        self.check_alive()
        (renew_lease.fn if plain else renew_lease)(self.kube, self.application, self.holder,
                                                   _lease_fields(state) or {})

    def check(self, *, plain: bool = False) -> None:
        """``plain``: a call, not a task run (a paused run may not start tasks)."""
        self.check_alive()
        (check_route.fn if plain else check_route)(self.kube, self.application, self.route, self.last,
                                                   self.holder)

    def check_alive(self) -> None:
        if self.guard is not None:
            self.guard.check_alive()


def _lease_fields(state: ReleaseState | None) -> dict[str, Any] | None:
    """What a resumed run needs of the engine, in the lease."""
    return None if state is None else {"state": state.model_dump(mode="json"), "step": state.steps}


def _cancel_requested(flow_run_id: str) -> str | None:
    """Why the run was asked to stop (the Cancelling state's message: who and why), or None."""
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
    except Exception as exc:
        # The Prefect server away for a moment must not end the release: nobody can cancel it
        # through a server that is not there, and the release's state lives on the cluster.
        get_run_logger().warning("could not check whether the run was cancelled: %s", exc)
        return None
    if run.state and (run.state.is_cancelling() or run.state.is_cancelled()):
        return run.state.message or "the run was cancelled"
    return None


def _wait_until(deadline: float, flow_run_id: str, controls: Controls | None = None,
                history: ReleaseHistory | None = None, thread: ReleaseThread | None = None,
                weights: dict[str, int] | None = None) -> None:
    """Sleep until ``deadline`` (wall clock), noticing a cancellation or a person's control within a
    second; a promotion by hand ends the wait at once.

    Runs started by a worker or runner are also stopped by a signal; runs started
    in-process only see the Cancelling state, which is why the loop polls it.
    """
    chaos.point("mid-sleep")
    while True:
        left = deadline - time.time()
        if left <= 0:
            return
        time.sleep(min(left, CANCEL_POLL_SECONDS))
        why = _cancel_requested(flow_run_id)
        if why is not None:
            raise Cancellation(why)
        for control in controls.poll() if controls is not None else []:
            if control.action in ("pause", "resume") and history is not None:
                kind = "paused" if control.action == "pause" else "resumed"
                text = (f"{kind} {control.credit()}"
                        + ("; checks go on and are recorded, but move no weight" if kind == "paused" else ""))
                history.note(kind, weights or {}, text, {"by": control.by, "why": control.why})
                if thread is not None:
                    thread.post(f":{'double_vertical_bar' if kind == 'paused' else 'arrow_forward'}: {text}")
        if controls is not None and controls.promote is not None:
            return


def preflight(params: ReleaseParameters, application: Application, gateway: Gateway, lease: Lease | None,
              *, now: float, run: RunInfo | None = None) -> ReleaseSpec:
    """Everything that can be wrong with a release, found before anything starts: by `lamia release
    start` in the calling process, and again by the flow for runs started from the UI.

    Two different versions that exist; the baseline carrying traffic on the route (it is the version
    serving it); the policy valid for the app's versions; no other release holding the app.
    """
    check_two_versions(params.baseline, params.target)
    if lease is not None:
        recovery = assess(lease, now, run or RunInfo(found=False))
        if recovery.action in ("none", "rollback", "resume"):
            why = "" if recovery.action == "none" else (
                f" ({recovery.reason}: lamia-reconcile puts it right within its period, or run `lamia "
                "reconcile`)")
            raise ReleaseLocked(
                f"a release of application {params.app!r} in namespace {params.namespace!r} is already "
                f"running: {lease.describe()}{why}; wait for it, or end it with "
                f"{abort_hint(params.app, params.namespace)}")
    match = compile_condition(params.condition) if params.condition else None
    route = CANARY_ROUTE if match else gateway.default_route.name
    if match is not None:
        everyone_on_baseline = Weights.all_on(params.baseline, application.version_names)
        gateway = gateway.with_route(Route(name=CANARY_ROUTE, condition=params.condition, match=tuple(match),
                                           weights=everyone_on_baseline))
    for v in (params.baseline, params.target):
        application.version(v)  # InvalidInput naming the known versions
    weights = gateway.route(route).weights
    if weights[params.baseline] == 0:
        serving = ", ".join(v for v, w in weights.items() if w) or "none"
        raise InvalidInput(
            f"baseline {params.baseline!r} gets no traffic on route {route!r} ({weights}): the baseline is "
            f"the version serving the route now ({serving})")
    return release_spec(params, application, gateway, route)


def release_spec(
    params: ReleaseParameters, application: Application, gateway: Gateway, route: str
) -> ReleaseSpec:
    for v in (params.baseline, params.target):
        application.version(v)  # InvalidInput naming the known versions
    current = gateway.route(route).weights.as_dict()
    versions = tuple(sorted(set(application.version_names)))
    return ReleaseSpec(
        namespace=params.namespace,
        app=params.app,
        baseline=params.baseline,
        target=params.target,
        versions=versions,
        policy=params.policy,
        route=route,
        initial_weights=current,
    )


def _canary_route(params: ReleaseParameters, application: Application,
                  match: list[dict[str, Any]] | None) -> Route | None:
    """A conditional release's own route, starting with everything on the baseline."""
    if match is None:
        return None
    baseline_only = Weights.all_on(params.baseline, application.version_names)
    return Route(name=CANARY_ROUTE, condition=params.condition, match=tuple(match), weights=baseline_only)


def _observe(params: ReleaseParameters, spec: ReleaseSpec, state: ReleaseState, *,
             plain: bool = False) -> Observation | None:
    """What Prometheus says now. ``plain``: calls, not task runs (a paused run may not start tasks)."""
    if not spec.policy.observes:
        return None  # the time policy judges nothing: no reason to ask Prometheus
    logger = get_run_logger()
    counters = read_counters.fn if plain else read_counters
    metrics = observe_metrics.fn if plain else observe_metrics
    scrape = latest_scrape.fn if plain else latest_scrape
    try:
        if isinstance(spec.policy, ComparePolicy):
            # The first check also reads the counters as they were when the release started.
            first = state.judge is None or not state.judge.cursor
            since = counters(params.prometheus, spec.namespace, spec.app, spec.versions,
                             state.started_at) if first else None
            now = counters(params.prometheus, spec.namespace, spec.app, spec.versions)
            if not now.series:
                return Observation(time=time.time(),
                                   unavailable=no_series(spec.namespace, spec.app, params.prometheus.url))
            return Observation(time=time.time(), counters=now, start_counters=since,
                               scraped_at=now.scraped_at)
        names = spec.policy.required_metrics(spec.versions)
        values = metrics(params.prometheus, spec.namespace, spec.app, names, spec.policy.window,
                         spec.versions)
        scraped = scrape(params.prometheus, spec.namespace, spec.app)
        if scraped is None and all(v is None for per in values.values() for v in per.values()):
            # Nothing at all, not even Istio's counters: say what was looked for, not just "no data".
            return Observation(time=time.time(),
                               unavailable=no_series(spec.namespace, spec.app, params.prometheus.url))
    except TemporaryError as exc:
        # Prometheus being away (or answering garbage) is "no data", which the policy's no-data
        # setting turns into a hold or a failure, and the progress deadline ends; it is not a
        # reason to crash the release.
        logger.warning("no observation this step: %s", exc)
        return Observation(time=time.time(), unavailable=str(exc))
    return Observation(time=time.time(), values=values, scraped_at=scraped)


def _with_scrape_interval(params: ReleaseParameters) -> ReleaseParameters:
    """The parameters with the policy's scrape interval as Prometheus reports it, when it can tell."""
    if not params.policy.observes:
        return params
    try:
        measured = measure_scrape_interval(params.prometheus, params.namespace, params.app)
    except TemporaryError as exc:
        get_run_logger().warning("could not read the scrape interval from Prometheus: %s", exc)
        return params
    if measured is None or measured == params.policy.scrape_interval:
        return params
    get_run_logger().info("Prometheus scrapes %s every %g s (the policy said %g s): using %g s",
                          params.app, measured, params.policy.scrape_interval, measured)
    return params.with_scrape_interval(measured)


def _apply(writer: RouteWriter, decision: Decision) -> None:
    if decision.weights is not None and decision.action in ("set_weights", "promote", "rollback"):
        writer.write(decision.weights, decision.state)
        chaos.point("final-write" if decision.action in ("promote", "rollback") else "step-written")
    else:
        writer.record(decision.state)


def _resumed(spec: ReleaseSpec, lease: Lease, history: ReleaseHistory, now: float) -> Decision:
    """Where a run taking over a dead worker's release starts: the state it recorded, checked next
    at once (or when it was due), with the gap in the step table."""
    state = ReleaseState.model_validate(lease.state)
    gap = now - (parse_time(lease.heartbeat) or now)
    reason = (f"resumed at step {state.steps} ({state.weights}) after the worker was lost: "
              f"{gap:.0f} s without a check (resume {lease.resumes})")
    # Not "resumed", which is a paused release let go on by a person.
    history.note("taken-over", state.weights.as_dict(), reason, {"step": state.steps, "gap_s": round(gap, 1)})
    due = state.next_check_at if state.next_check_at is not None else now
    return Decision(action="hold", state=state, reason=reason, wake_at=max(now, due))


def _forward(spec: ReleaseSpec, state: ReleaseState, decision: Decision) -> int | None:
    """The target's weight after ``decision`` when it moves weight toward it (a step, a promotion)."""
    if decision.weights is None or decision.action not in ("set_weights", "promote"):
        return None
    after = decision.weights[spec.target]
    return after if after > state.weights[spec.target] or decision.action == "promote" else None


def _scrape_phase(params: ReleaseParameters, spec: ReleaseSpec) -> float | None:
    """The newest sample of the application, so the first check of a compare release comes just after
    a scrape. Only a hint: without it the first check is one interval on, so it is asked once, with no
    retries to delay the start."""
    if not isinstance(spec.policy, ComparePolicy):
        return None
    try:
        return latest_scrape.fn(params.prometheus, spec.namespace, spec.app)
    except LamiaError as exc:
        get_run_logger().info("newest sample time unknown (%s): first check one interval on", exc)
        return None


def _drive(
    params: ReleaseParameters,
    writer: RouteWriter,
    spec: ReleaseSpec,
    history: ReleaseHistory,
    thread: ReleaseThread,
    resume: Lease | None = None,
) -> tuple[Outcome, ReleaseState, str]:
    logger = get_run_logger()
    woke = time.monotonic()
    now = time.time()
    approved = not params.approval
    approval_at = params.approval_weight()
    controls = Controls(history.flow_run_id)
    decision = start(spec, now, scraped_at=_scrape_phase(params, spec)) if resume is None else _resumed(
        spec, resume, history, now)
    before = decision.state
    while True:
        now = time.time()
        if controls.promote is not None:
            by = controls.promote
            decision = promote_now(spec, before, now, f"promoted by hand {by.credit()}")
            history.note("promoted-by-hand", decision.state.weights.as_dict(), decision.reason,
                         {"by": by.by, "why": by.why})
        elif controls.paused is not None and resume is None and decision.action != "finish":
            by = controls.paused
            why = f"paused {by.credit()}"
            decision = held(spec, before, now, decision, why)
        elif not approved and (after := _forward(spec, before, decision)) is not None and after > approval_at:
            decision, approved = _await_approval(params, spec, writer, history, thread, before, decision)
        weights = decision.state.weights.as_dict()
        if resume is not None:
            resume = None  # the resumed state is on the cluster already: wait for its next check
        else:
            _apply(writer, decision)
            history.step(decision, weights, acted_in=time.monotonic() - woke)
        logger.info("%s: %s -> %s", decision.action, decision.reason, weights)
        if decision.action == "set_weights":
            thread.post(slack_text.format_step(thread.info, weights, step=decision.state.steps), step=True)
        if decision.action == "promote":
            return Outcome.PROMOTED, decision.state, decision.reason
        if decision.action == "rollback":
            return Outcome.ROLLED_BACK, decision.state, decision.reason
        if decision.action == "finish":
            return Outcome.HELD, decision.state, decision.reason
        wake = decision.wake_at if decision.wake_at is not None else time.time() + spec.policy.interval
        _wait_until(wake, history.flow_run_id, controls, history, thread, weights)
        woke = time.monotonic()
        before = decision.state
        if controls.promote is not None:
            continue
        observation = _observe(params, spec, before)
        chaos.point("observation")
        # Traffic split by someone else is no evidence about the target: look before judging.
        writer.check()
        decision = decide(spec, before, time.time(), observation)


class _Checker(threading.Thread):
    """The checks of a release waiting for approval, in a thread while the run is paused: each is
    recorded, none moves weight, and one that rolls back ends the wait (it resumes the run)."""

    def __init__(self, params: ReleaseParameters, spec: ReleaseSpec, writer: RouteWriter,
                 history: ReleaseHistory, state: ReleaseState) -> None:
        super().__init__(name="lamia-approval-checks", daemon=True)
        self.params, self.spec, self.writer, self.history, self.state = params, spec, writer, history, state
        self.ended: Decision | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self._context = contextvars.copy_context()

    def run(self) -> None:
        self._context.run(self._checks)

    def _checks(self) -> None:
        from prefect.flow_runs import resume_flow_run

        while not self.stop.wait(max(0.0, (self.state.next_check_at or time.time()) - time.time())):
            try:
                # Plain calls, not tasks: a paused run may not start tasks.
                observation = _observe(self.params, self.spec, self.state, plain=True)
                self.writer.check(plain=True)
                decision = decide(self.spec, self.state, time.time(), observation)
            except BaseException as exc:
                self.error = exc
                decision = None
            if decision is not None and decision.action == "rollback":
                self.ended = decision
            if self.error is not None or self.ended is not None:
                why = str(self.error or (self.ended.reason if self.ended else ""))
                with contextlib.suppress(Exception):
                    resume_flow_run(UUID(self.history.flow_run_id),
                                    run_input={"decision": "roll back", "by": "lamia",
                                               "comment": f"a check failed while waiting: {why}"})
                return
            assert decision is not None
            hold = held(self.spec, self.state, time.time(), decision, "waiting for approval")
            with contextlib.suppress(Exception):
                self.writer.record(hold.state, plain=True)
                self.history.step(hold, hold.state.weights.as_dict())
            self.state = hold.state


def _await_approval(params: ReleaseParameters, spec: ReleaseSpec, writer: RouteWriter,
                    history: ReleaseHistory, thread: ReleaseThread, before: ReleaseState,
                    pending: Decision) -> tuple[Decision, bool]:
    """Wait for a person's answer before ``pending`` (the move past the approval weight), the checks
    going on meanwhile; the decision to apply, and whether the release is approved from now on."""
    logger = get_run_logger()
    weights = before.weights.as_dict()
    hint = f"`lamia release approve -a {params.app} -n {params.namespace}` (or Resume in the Prefect UI)"
    text = (f"{params.target} holds {before.weights[params.target]}% and waits for approval to go on "
            f"({pending.reason}): {hint}")
    history.note("waiting-for-approval", weights, text, {"timeout_s": params.approval_timeout_seconds})
    thread.post(f":raised_hand: {params.app}: {text}")
    thread.flush(timeout=5)  # a task submitted before the pause must start before it
    logger.info("waiting up to %ss for approval: %s", params.approval_timeout_seconds, text)
    checker = _Checker(params, spec, writer, history, held(spec, before, time.time(), pending,
                                                           "waiting for approval").state)
    checker.start()
    try:
        answer: Approval | None = pause_flow_run(
            wait_for_input=Approval, timeout=params.approval_timeout_seconds, poll_interval=2)
        problem = None
    except Exception as exc:  # timed out, or resumed without input
        answer, problem = None, f"no approval within {params.approval_timeout_seconds} s ({exc})"
    finally:
        checker.stop.set()
        checker.join(timeout=30)
    if checker.error is not None:
        raise checker.error
    now = time.time()
    if checker.ended is not None:
        return checker.ended, False
    if answer is None or answer.decision != "go on":
        why = problem or "no answer"
        if answer is not None:
            why = (f"approval refused by {answer.by or 'someone in the Prefect UI'}"
                   + (f" ({answer.comment})" if answer.comment else ""))
        return abort(spec, checker.state, now, why), False
    by = answer.by or "someone in the Prefect UI"
    reason = f"approved by {by}" + (f" ({answer.comment})" if answer.comment else "")
    history.note("approved", weights, reason, {"by": by, "comment": answer.comment})
    thread.post(f":white_check_mark: {params.app}: {reason}; going on")
    return pending, True


def _restore_baseline(writer: RouteWriter, baseline: str) -> Weights:
    weights = Weights.all_on(baseline, writer.application.version_names)
    writer.write(weights)
    return weights


def _resume_from(params: ReleaseParameters, application: Application, run_id: str) -> Lease | None:
    """The lease lamia-reconcile handed to this run to resume a dead worker's release, if any."""
    lease = read_lease(params.kubernetes, application)
    if lease is None or lease.holder != run_id or not lease.state:
        return None
    if (lease.baseline, lease.target) != (params.baseline, params.target):
        raise InvalidInput(
            f"this run was handed the lease of a release of {lease.target} against {lease.baseline}, "
            f"but its parameters release {params.target} against {params.baseline}")
    return lease


@flow(name="canary-release", flow_run_name="{params.run_name}", log_prints=True, persist_result=False)
def canary_release(params: ReleaseParameters) -> State:
    """Shift traffic to `target` step by step while it stays healthy; roll back when it does not."""
    logger = get_run_logger()
    params = use_cluster(params)
    ctx = FlowRunContext.get()
    assert ctx is not None and ctx.flow_run is not None
    run_id, run_name = str(ctx.flow_run.id), ctx.flow_run.name
    # Tagged first: a run refused for its input or a held lease is in the app's history too.
    tag_run(run_id, "lamia", app_tag(params.namespace, params.app), "lamia/kind:canary-release")

    # Everything that can be wrong with the input is found before the first write.
    match = compile_condition(params.condition) if params.condition else None
    application = discover_application(params.kubernetes, params.namespace, params.app, params.service)
    params = _with_scrape_interval(params)
    held = read_lease(params.kubernetes, application)
    other = None if held is None or held.holder == run_id else held
    preflight(params, application, read_gateway(params.kubernetes, application), other, now=time.time(),
              run=run_info(other.holder) if other else None)
    slack = params.slack.resolve() if params.slack else None
    history = ReleaseHistory(params.namespace, params.app, "canary-release", params.baseline, params.target)
    route = CANARY_ROUTE if match else DEFAULT_ROUTE
    resume = _resume_from(params, application, run_id)
    if resume is not None:
        lease = resume.renewed(time.time(), name=run_name)
    else:
        deployment = ctx.flow_run.deployment_id
        lease = Lease.new(
            run_id, run_name, "canary-release", params.target, baseline=params.baseline, route=route,
            app=params.app, service=application.service,
            timeout=params.worker_loss_timeout or worker_loss_bound(params.policy.interval),
            on_worker_loss=params.on_worker_loss, deployment=str(deployment) if deployment else None,
        )
    # A conditional release's route and its condition text go when it ends, whoever removed the route.
    forget = (CANARY_ROUTE,) if match else ()
    with exclusive_release(
        params.kubernetes, application, lease, forget_routes=forget
    ) as guard:
        chaos.point("lease-taken")
        # The gateway exists (the lease lives on its VirtualService). Writing it first, in one
        # read-modify-write, gives an adopted catch-all Lamia's name (so that from then on a route of
        # another name means another writer) and adds a conditional release's route.
        canary = _canary_route(params, application, match)
        gateway = adopt_gateway(params.kubernetes, application, run_id, canary)
        chaos.point("gateway-written")
        route = CANARY_ROUTE if match else gateway.default_route.name
        spec = release_spec(params, application, gateway, route)
        writer = RouteWriter(params.kubernetes, application, route, run_id, gateway.route(route).weights,
                             guard)
        history.started(spec.initial_weights or {}, {"policy": params.policy.kind, "route": route})
        thread = ReleaseThread(
            slack,
            slack_text.ReleaseInfo(
                params.namespace, params.app, params.baseline, params.target, run_url=flow_run_url(run_id)
            ),
        )
        thread.post(slack_text.format_started(thread.info, policy=params.policy.kind))
        try:
            outcome, state, reason = _drive(params, writer, spec, history, thread, resume)
            final = state.weights.as_dict()
        except ForeignChange as exc:
            outcome, reason, final = _interrupted(exc, history, writer)
        except BaseException as exc:
            cancelled = isinstance(exc, Cancellation | TerminationSignal | KeyboardInterrupt)
            what = Outcome.CANCELLED if cancelled else Outcome.FAILED
            reason = f"release {what}: {exc}" if str(exc) else f"release {what}: {type(exc).__name__}"
            try:
                weights = _restore_baseline(writer, params.baseline).as_dict()
                reason += f"; baseline {params.baseline} is back at 100%"
            except ForeignChange as foreign:
                reason += f"; the baseline was not restored: {foreign}"
                weights = foreign.found or {}
            except Exception as restore_exc:
                logger.error("could not restore the baseline: %s", restore_exc)
                reason += (f"; restoring the baseline failed ({restore_exc}): the lease stays, and "
                           "lamia-reconcile puts the baseline back")
                weights = {}
                guard.keep_lease = True
                with contextlib.suppress(Exception):  # due at once: the reconciler need not wait
                    renew_lease(params.kubernetes, application, run_id, {"timeout": 0.0})
            logger.error(reason)
            history.finished(what, weights, reason)
            thread.post(slack_text.format_failed(thread.info, reason, weights=weights or None), outcome=True)
            thread.close()
            if cancelled:
                return Cancelled(message=reason)
            raise

    chaos.point("lease-dropped")
    history.finished(outcome, final, reason)
    result = ReleaseOutcome(
        app=params.app,
        namespace=params.namespace,
        baseline=params.baseline,
        target=params.target,
        outcome=outcome,
        weights=final,
        reason=reason,
        steps=len(history.rows),
        flow_run_id=run_id,
    ).model_dump(mode="json")
    final_state: State
    if outcome is Outcome.PROMOTED:
        text = slack_text.format_promoted(thread.info, reason=reason)
        final_state = Completed(message=f"promoted {params.target}: {reason}", name=outcome.state_name,
                                data=result)
    elif outcome is Outcome.HELD:
        text = slack_text.format_held(thread.info, reason, weights=final)
        final_state = Completed(message=f"held: {reason}", name=outcome.state_name, data=result)
    elif outcome is Outcome.INTERRUPTED:
        text = slack_text.format_interrupted(thread.info, reason, weights=final or None)
        final_state = Failed(message=reason, name=outcome.state_name, data=ReleaseEnded(result))
    else:
        text = slack_text.format_rolled_back(thread.info, reason, history.last_evidence)
        final_state = Failed(
            message=f"rolled back to {params.baseline}: {reason}", name=outcome.state_name,
            data=ReleaseEnded(result),
        )
    thread.post(text, outcome=True)
    thread.close()
    return final_state


def _interrupted(
    exc: ForeignChange, history: ReleaseHistory, writer: RouteWriter
) -> tuple[Outcome, str, dict[str, int]]:
    """Another writer changed the route: record it, write nothing more, leave their weights."""
    found = exc.found or {}
    reason = (f"interrupted: {exc}; Lamia stopped without writing again and left the route as the other "
              "writer set it")
    get_run_logger().warning(reason)
    history.note("interrupted", found, reason, {
        "expected": exc.expected, "found": exc.found, "writer": exc.writer, "route": exc.route,
    })
    return Outcome.INTERRUPTED, reason, found


__all__ = ["Approval", "ReleaseEnded", "ReleaseOutcome", "canary_release", "outcome_of"]
