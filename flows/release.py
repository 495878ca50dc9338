"""The `canary-release` flow: the engine decides, tasks act, the loop waits and observes.

Whatever happens after the first change to the gateway, the run ends with the
gateway in a state the user asked for: promoted (target at 100%), rolled back
(baseline at 100%) or, with a policy whose final action is ``hold``, held where
the policy stopped. An exception or a cancellation on the way puts the
baseline back at 100% and says so in the logs, in Slack and in an event. A run
whose process is killed outright cannot; its lease on the VirtualService keeps
other releases out and records the baseline, which ``lamia release abort`` puts
back.
"""

from __future__ import annotations

import time
from typing import Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Cancelled, Completed, Failed
from pydantic import BaseModel, Field

from flows._guard import exclusive_release
from flows._history import ReleaseHistory, flow_run_url
from flows._notify import ReleaseThread
from flows.params import ReleaseParameters
from lamia_core import slack as slack_text
from lamia_core.conditions import compile_condition
from lamia_core.engine import Decision, Observation, ReleaseSpec, ReleaseState, abort, decide, start
from lamia_core.errors import InvalidInput, TemporaryError
from lamia_core.lease import Lease
from lamia_core.models import DEFAULT_ROUTE, Application, Gateway, Route, Weights
from lamia_core.policies import ComparePolicy
from tasks.kubernetes import (
    apply_gateway,
    apply_weights,
    discover_application,
    raise_no_gateway,
    read_gateway,
)
from tasks.prometheus import latest_scrape, measure_scrape_interval, observe_metrics, read_counters

#: Name of the route a conditional release shifts.
CANARY_ROUTE = "canary"
#: How often the wait between steps checks whether someone cancelled the run.
CANCEL_POLL_SECONDS = 1.0

Outcome = Literal["promoted", "rolled-back", "held", "failed", "cancelled"]


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


def _cancel_requested(flow_run_id: str) -> bool:
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
    return bool(run.state and (run.state.is_cancelling() or run.state.is_cancelled()))


def _wait_until(deadline: float, flow_run_id: str) -> None:
    """Sleep until ``deadline`` (wall clock), noticing a cancellation within a second.

    Runs started by a worker or runner are also stopped by a signal; runs started
    in-process only see the Cancelling state, which is why the loop polls it.
    """
    while True:
        left = deadline - time.time()
        if left <= 0:
            return
        time.sleep(min(left, CANCEL_POLL_SECONDS))
        if _cancel_requested(flow_run_id):
            raise Cancellation("the run was cancelled")


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


def _prepare_gateway(
    params: ReleaseParameters, application: Application, match: list[dict[str, Any]] | None
) -> tuple[Gateway, str, bool]:
    """The gateway to release on, the route to shift, and whether it must be written first.

    The gateway exists (the lease lives on its VirtualService); a conditional
    release adds its own route, starting with everything on the baseline.
    """
    gateway = read_gateway(params.kubernetes, application)
    if gateway is None:
        raise_no_gateway(application)
    if match is None:
        return gateway, gateway.default_route.name, False
    baseline_only = Weights.all_on(params.baseline, application.version_names)
    canary = Route(name=CANARY_ROUTE, condition=params.condition, match=tuple(match), weights=baseline_only)
    return gateway.with_route(canary), CANARY_ROUTE, True


def _observe(params: ReleaseParameters, spec: ReleaseSpec, state: ReleaseState) -> Observation | None:
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
        # Prometheus being away is "no data", which the policy's no-data setting
        # turns into a hold or a failure; it is not a reason to crash the release.
        logger.warning("no observation this step: %s", exc)
        return None
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


def _apply(
    params: ReleaseParameters, application: Application, decision: Decision, spec: ReleaseSpec
) -> None:
    if decision.weights is not None and decision.action in ("set_weights", "promote", "rollback"):
        apply_weights(params.kubernetes, application, decision.weights, spec.route)


def _drive(
    params: ReleaseParameters,
    application: Application,
    spec: ReleaseSpec,
    history: ReleaseHistory,
    thread: ReleaseThread,
) -> tuple[Outcome, ReleaseState, str]:
    logger = get_run_logger()
    woke = time.monotonic()
    decision = start(spec, time.time())
    approved = not params.approval
    while True:
        if decision.action == "promote" and not approved:
            approved, why = _approve(params, thread)
            if not approved:
                decision = abort(spec, decision.state, time.time(), why)
        _apply(params, application, decision, spec)
        weights = decision.state.weights.as_dict()
        history.step(decision, weights, acted_in=time.monotonic() - woke)
        logger.info("%s: %s -> %s", decision.action, decision.reason, weights)
        if decision.action == "set_weights":
            thread.post(slack_text.format_step(thread.info, weights, step=decision.state.steps), step=True)
        if decision.action == "promote":
            return "promoted", decision.state, decision.reason
        if decision.action == "rollback":
            return "rolled-back", decision.state, decision.reason
        if decision.action == "finish":
            return "held", decision.state, decision.reason
        wake = decision.wake_at if decision.wake_at is not None else time.time() + spec.policy.interval
        _wait_until(wake, history.flow_run_id)
        woke = time.monotonic()
        decision = decide(spec, decision.state, time.time(), _observe(params, spec, decision.state))


def _restore_baseline(params: ReleaseParameters, application: Application, route: str) -> Weights:
    weights = Weights.all_on(params.baseline, application.version_names)
    apply_weights(params.kubernetes, application, weights, route)
    return weights


@flow(name="canary-release", log_prints=True, persist_result=False)
def canary_release(params: ReleaseParameters) -> State:
    """Shift traffic to `target` step by step while it stays healthy; roll back when it does not."""
    logger = get_run_logger()
    ctx = FlowRunContext.get()
    assert ctx is not None and ctx.flow_run is not None
    run_id, run_name = str(ctx.flow_run.id), ctx.flow_run.name

    # Everything that can be wrong with the input is found before the first write.
    match = compile_condition(params.condition) if params.condition else None
    if params.baseline == params.target:
        raise InvalidInput(f"baseline and target are both {params.target!r}")
    application = discover_application(params.kubernetes, params.namespace, params.app)
    application.version(params.baseline)
    application.version(params.target)
    params = _with_scrape_interval(params)
    params.policy.validate_for(tuple(application.version_names))
    slack = params.slack.resolve() if params.slack else None
    history = ReleaseHistory(params.namespace, params.app, "canary-release", params.baseline, params.target)

    lease = Lease.new(
        run_id,
        run_name,
        "canary-release",
        params.target,
        baseline=params.baseline,
        route=CANARY_ROUTE if match else DEFAULT_ROUTE,
    )
    with exclusive_release(params.kubernetes, application, lease, wait_seconds=params.lock_wait_seconds):
        gateway, route, must_write = _prepare_gateway(params, application, match)
        spec = release_spec(params, application, gateway, route)
        if must_write:
            apply_gateway(params.kubernetes, gateway)
        history.started(spec.initial_weights or {}, {"policy": params.policy.kind, "route": route})
        thread = ReleaseThread(
            slack,
            slack_text.ReleaseInfo(
                params.namespace, params.app, params.baseline, params.target, run_url=flow_run_url(run_id)
            ),
        )
        thread.post(slack_text.format_started(thread.info, policy=params.policy.kind))
        state: ReleaseState | None = None
        try:
            outcome, state, reason = _drive(params, application, spec, history, thread)
        except BaseException as exc:
            cancelled = isinstance(exc, Cancellation) or type(exc).__name__ in {
                "TerminationSignal",
                "KeyboardInterrupt",
            }
            what = "cancelled" if cancelled else "failed"
            reason = f"release {what}: {exc}" if str(exc) else f"release {what}: {type(exc).__name__}"
            try:
                weights = _restore_baseline(params, application, route).as_dict()
                reason += f"; baseline {params.baseline} is back at 100%"
            except Exception as restore_exc:
                logger.error("could not restore the baseline: %s", restore_exc)
                reason += f"; restoring the baseline FAILED: {restore_exc}"
                weights = {}
            logger.error(reason)
            history.finished(what, weights, reason)
            thread.post(slack_text.format_failed(thread.info, reason, weights=weights or None))
            thread.close()
            if cancelled:
                return Cancelled(message=reason)
            raise

    final = state.weights.as_dict()
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
    ).model_dump()
    final_state: State
    if outcome == "promoted":
        text = slack_text.format_promoted(thread.info, reason=reason)
        final_state = Completed(message=f"promoted {params.target}: {reason}", name="Promoted", data=result)
    elif outcome == "held":
        text = f":pause_button: {params.app}: release held at {slack_text.format_weights(final)} ({reason})"
        final_state = Completed(message=f"held: {reason}", name="Held", data=result)
    else:
        text = slack_text.format_rolled_back(thread.info, reason, history.last_evidence)
        final_state = Failed(
            message=f"rolled back to {params.baseline}: {reason}", name="RolledBack", data=result
        )
    thread.post(text)
    thread.close()
    return final_state


__all__ = ["Approval", "ReleaseOutcome", "canary_release"]
