"""Manual flows: `set-weights` (a manual canary) and `apply-route` (a condition and its weights).

They hold the same lock and lease as a release and leave the same history, so
a person's change never races a running release and shows up beside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Completed

from flows._guard import exclusive_release
from flows._history import ReleaseHistory, app_tag, current_run, tag_run
from flows._notify import ReleaseThread
from flows.clusters import use_cluster
from flows.params import RouteParameters, Target, WeightsParameters
from lamia_core.conditions import compile_condition
from lamia_core.errors import InvalidInput
from lamia_core.lease import Lease
from lamia_core.models import Application, Gateway, Route, Weights
from lamia_core.outcome import Outcome
from tasks.kubernetes import apply_gateway, apply_weights, discover_application, read_gateway


def _checked_weights(raw: dict[str, int], versions: list[str]) -> Weights:
    weights = Weights(raw)
    unknown = sorted(set(weights.versions) - set(versions))
    if unknown:
        raise InvalidInput(f"unknown version(s) {', '.join(unknown)} (known versions: {', '.join(versions)})")
    return weights


def _tag_first(params: Target, kind: str) -> None:
    """Tag the run before anything can fail, so that a refused change is in the app's history too."""
    run_id, _ = current_run()
    tag_run(run_id, "lamia", app_tag(params.namespace, params.app), f"lamia/kind:{kind}")


@contextlib.contextmanager
def _manual_change(
    params: Target, application: Application, kind: str
) -> Iterator[tuple[Gateway, ReleaseHistory, ReleaseThread, str]]:
    """Hold the app's lock and lease for one manual change; yields the gateway as it is now and the
    lease's holder, which every write of the change names.

    The gateway must exist: the lease lives on its VirtualService, and which version everyone
    else gets is not ours to guess (the gateway is made by `lamia gateway apply`).
    """
    run_id, run_name = current_run()
    history = ReleaseHistory(params.namespace, params.app, kind)
    thread = ReleaseThread(params.slack.resolve() if params.slack else None)
    lease = Lease.new(run_id, run_name, kind)
    with exclusive_release(params.kubernetes, application, lease):
        yield read_gateway(params.kubernetes, application), history, thread, run_id


@flow(name="set-weights", flow_run_name="{params.run_name}", persist_result=False)
def set_weights(params: WeightsParameters) -> State:
    """Set one route's weights by hand."""
    logger = get_run_logger()
    _tag_first(params, "set-weights")
    params = use_cluster(params)
    application = discover_application(params.kubernetes, params.namespace, params.app, params.service)
    weights = _checked_weights(params.weights, application.version_names)
    with _manual_change(params, application, "set-weights") as (gateway, history, thread, holder):
        gateway.route(params.route)  # InvalidInput when the route does not exist
        apply_weights(params.kubernetes, application, weights, params.route, holder=holder)
        history.started(weights.as_dict(), {"route": params.route})
        reason = f"weights of route {params.route!r} set by hand"
        history.finished(Outcome.APPLIED, weights.as_dict(), reason)
    logger.info("%s: %s", reason, weights)
    thread.post(f":level_slider: {params.app} ({params.namespace}): route {params.route} now {weights}")
    return Completed(message=f"{reason}: {weights}", name=Outcome.APPLIED.state_name, data=weights.as_dict())


@flow(name="apply-route", flow_run_name="{params.run_name}", persist_result=False)
def apply_route_flow(params: RouteParameters) -> State:
    """Send the requests matching a condition to versions by their own weights."""
    params = use_cluster(params)
    _tag_first(params, "apply-route")
    match = compile_condition(params.condition)
    application = discover_application(params.kubernetes, params.namespace, params.app, params.service)
    weights = _checked_weights(params.weights, application.version_names)
    route = Route(name=params.route, condition=params.condition, match=tuple(match), weights=weights)
    with _manual_change(params, application, "apply-route") as (gateway, history, thread, holder):
        apply_gateway(params.kubernetes, gateway.with_route(route), holder=holder)
        history.started(weights.as_dict(), {"route": params.route, "condition": params.condition})
        reason = f"route {params.route!r} for {params.condition}"
        history.finished(Outcome.APPLIED, weights.as_dict(), reason)
    thread.post(f":twisted_rightwards_arrows: {params.app}: {reason} -> {weights}")
    return Completed(message=f"{reason}: {weights}", name=Outcome.APPLIED.state_name, data=weights.as_dict())
