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
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Cancelled, Completed, Failed
from pydantic import BaseModel, Field

from flows import _chaos as chaos
from flows._guard import Guard, exclusive_release, run_info
from flows._history import ReleaseHistory, flow_run_url
from flows._notify import ReleaseThread
from flows.clusters import use_cluster
from flows.params import ReleaseParameters
from lamia_core import slack as slack_text
from lamia_core.conditions import compile_condition
from lamia_core.engine import Decision, Observation, ReleaseSpec, ReleaseState, abort, decide, start
from lamia_core.errors import ForeignChange, InvalidInput, ReleaseLocked, TemporaryError
from lamia_core.kube import KubeConfig
from lamia_core.lease import Lease, abort_hint, parse_time, worker_loss_bound
from lamia_core.models import DEFAULT_ROUTE, Application, Gateway, Route, Weights
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


class Approval(RunInput):
    """What a person answers when a release waits for approval before promotion."""

    approve: bool = Field(description="Promote the target to 100%? No rolls back to the baseline.")
    comment: str = Field("", description="Why, for the history")


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

    def record(self, state: ReleaseState) -> None:
        """Persist the engine's state after a decision that changed no weight."""
        self.check_alive()
        renew_lease(self.kube, self.application, self.holder, _lease_fields(state) or {})

    def check(self) -> None:
        self.check_alive()
        check_route(self.kube, self.application, self.route, self.last, self.holder)

    def check_alive(self) -> None:
        if self.guard is not None:
            self.guard.check_alive()


def _lease_fields(state: ReleaseState | None) -> dict[str, Any] | None:
    """What a resumed run needs of the engine, in the lease."""
    return None if state is None else {"state": state.model_dump(mode="json"), "step": state.steps}


def _cancel_requested(flow_run_id: str) -> bool:
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
    except Exception as exc:
        # The Prefect server away for a moment must not end the release: nobody can cancel it
        # through a server that is not there, and the release's state lives on the cluster.
        get_run_logger().warning("could not check whether the run was cancelled: %s", exc)
        return False
    return bool(run.state and (run.state.is_cancelling() or run.state.is_cancelled()))


def _wait_until(deadline: float, flow_run_id: str) -> None:
    """Sleep until ``deadline`` (wall clock), noticing a cancellation within a second.

    Runs started by a worker or runner are also stopped by a signal; runs started
    in-process only see the Cancelling state, which is why the loop polls it.
    """
    chaos.point("mid-sleep")
    while True:
        left = deadline - time.time()
        if left <= 0:
            return
        time.sleep(min(left, CANCEL_POLL_SECONDS))
        if _cancel_requested(flow_run_id):
            raise Cancellation("the run was cancelled")


def preflight(params: ReleaseParameters, application: Application, gateway: Gateway, lease: Lease | None,
              *, now: float, run: RunInfo | None = None) -> ReleaseSpec:
    """Everything that can be wrong with a release, found before anything starts: by `lamia release
    start` in the calling process, and again by the flow for runs started from the UI.

    Two different versions that exist; the baseline carrying traffic on the route (it is the version
    serving it); the policy valid for the app's versions; no other release holding the app.
    """
    if params.baseline == params.target:
        raise InvalidInput(f"baseline and target are both {params.target!r}: a release needs two versions")
    match = compile_condition(params.condition) if params.condition else None
    route = CANARY_ROUTE if match else gateway.default_route.name
    if match is not None:
        everyone_on_baseline = Weights.all_on(params.baseline, application.version_names)
        gateway = gateway.with_route(Route(name=CANARY_ROUTE, condition=params.condition, match=tuple(match),
                                           weights=everyone_on_baseline))
    spec = release_spec(params, application, gateway, route)
    weights = gateway.route(route).weights
    if weights[params.baseline] == 0:
        serving = ", ".join(v for v, w in weights.items() if w) or "none"
        raise InvalidInput(
            f"baseline {params.baseline!r} gets no traffic on route {route!r} ({weights}): the baseline is "
            f"the version serving the route now ({serving})")
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
    return spec


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


def _observe(params: ReleaseParameters, spec: ReleaseSpec, state: ReleaseState) -> Observation | None:
    if not spec.policy.observes:
        return None  # the time policy judges nothing: no reason to ask Prometheus
    logger = get_run_logger()
    try:
        if isinstance(spec.policy, ComparePolicy):
            # The first check also reads the counters as they were when the release started.
            first = state.judge is None or not state.judge.cursor
            since = read_counters(params.prometheus, spec.namespace, spec.app, spec.versions,
                                  state.started_at) if first else None
            now = read_counters(params.prometheus, spec.namespace, spec.app, spec.versions)
            return Observation(time=time.time(), counters=now, start_counters=since,
                               scraped_at=now.scraped_at)
        names = spec.policy.required_metrics(spec.versions)
        values = observe_metrics(
            params.prometheus, spec.namespace, spec.app, names, spec.policy.window, spec.versions
        )
        scraped = latest_scrape(params.prometheus, spec.namespace, spec.app) if spec.policy.observes else None
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
    policy = type(params.policy).model_validate({**params.policy.model_dump(), "scrape_interval": measured})
    return params.model_copy(update={"policy": policy})


def _approve(params: ReleaseParameters, thread: ReleaseThread) -> tuple[bool, str]:
    logger = get_run_logger()
    thread.post(
        f":raised_hand: {params.app}: {params.target} passed its last check and waits for approval "
        f"(`lamia release approve {params.app} --namespace {params.namespace}`)"
    )
    logger.info(
        "waiting up to %ss for approval to promote %s", params.approval_timeout_seconds, params.target
    )
    try:
        answer = pause_flow_run(
            wait_for_input=Approval, timeout=params.approval_timeout_seconds, poll_interval=2
        )
    except Exception as exc:  # timed out, or resumed without input
        return False, f"no approval: {exc}"
    note = f" ({answer.comment})" if answer.comment else ""
    return (answer.approve, f"approved{note}" if answer.approve else f"approval refused{note}")


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
    history.note("resumed", state.weights.as_dict(), reason, {"step": state.steps, "gap_s": round(gap, 1)})
    due = state.next_check_at if state.next_check_at is not None else now
    return Decision(action="hold", state=state, reason=reason, wake_at=max(now, due))


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
    decision = start(spec, now) if resume is None else _resumed(spec, resume, history, now)
    while True:
        if decision.action == "promote" and not approved:
            approved, why = _approve(params, thread)
            if not approved:
                decision = abort(spec, decision.state, time.time(), why)
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
        _wait_until(wake, history.flow_run_id)
        woke = time.monotonic()
        observation = _observe(params, spec, decision.state)
        chaos.point("observation")
        # Traffic split by someone else is no evidence about the target: look before judging.
        writer.check()
        decision = decide(spec, decision.state, time.time(), observation)


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
            cancelled = isinstance(exc, Cancellation) or type(exc).__name__ in {
                "TerminationSignal",
                "KeyboardInterrupt",
            }
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
            thread.post(slack_text.format_failed(thread.info, reason, weights=weights or None))
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
        text = f":pause_button: {params.app}: release held at {slack_text.format_weights(final)} ({reason})"
        final_state = Completed(message=f"held: {reason}", name=outcome.state_name, data=result)
    elif outcome is Outcome.INTERRUPTED:
        text = slack_text.format_interrupted(thread.info, reason, weights=final or None)
        final_state = Failed(message=reason, name=outcome.state_name, data=result)
    else:
        text = slack_text.format_rolled_back(thread.info, reason, history.last_evidence)
        final_state = Failed(
            message=f"rolled back to {params.baseline}: {reason}", name=outcome.state_name, data=result
        )
    thread.post(text)
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


__all__ = ["Approval", "ReleaseOutcome", "canary_release"]
