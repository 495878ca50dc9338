"""What the Prefect UI shows of a run (flows/_history.py), read back through the Prefect API from
real runs: one artifact of each kind per run, updated in place; the summary, the chart; the run's
name and outcome tag; events named for what happened, with the step's weights, decision and
reason; and a promoted run under the deployment page's default filter."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import prefect
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateName,
)
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect.events.worker import EventsWorker
from prefect.flow_engine import run_flow
from prefect.states import Cancelling

from flows._history import STEP_EVENTS, ReleaseHistory, run_outcome
from flows.manual import apply_route_flow, set_weights
from flows.params import ReleaseParameters, RouteParameters, WeightsParameters
from flows.reconcile import ReconcileParameters, reconcile
from flows.release import canary_release
from lamia_core.lease import lease_of
from lamia_core.outcome import Outcome
from lamia_core.policies import HealthPolicy
from lamia_sandbox.sandbox import Sandbox
from tests.test_release_flow import Background, compare_params, params, routes, vs, wait_until

pytestmark = pytest.mark.integration

SVG_PREFIX = "data:image/svg+xml;base64,"


def run_of(state: Any) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(str(state.state_details.flow_run_id)))


def run_artifacts(state: Any) -> dict[str, list[Any]]:
    """The run's artifacts by the last part of their key (summary, chart, steps, progress)."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(str(state.state_details.flow_run_id))])))
    by_kind: dict[str, list[Any]] = {}
    for a in found:
        by_kind.setdefault((a.key or "").rsplit("-", 1)[-1], []).append(a)
    return by_kind


#: The last event of every run: its outcome's (``lamia.release.promoted``, ``lamia.set-weights.applied``).
FINAL = tuple(f".{o.value}" for o in Outcome)


def run_events(state: Any, prefix: str = "lamia.") -> list[Any]:
    """The run's events, oldest first, once its last one (its outcome's) is stored."""
    EventsWorker.drain_all(timeout=10)
    run_id = state.state_details.flow_run_id
    events: list[Any] = []

    def stored() -> bool:
        with get_client(sync_client=True) as client:
            page = client.read_events(EventFilter(
                event=EventNameFilter(prefix=[prefix]),
                related=EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"])), limit=50)
            found = list(page.events)
            while page.next_page:
                page = client.read_events_page(str(page.next_page))
                found += page.events
        events[:] = sorted(found, key=lambda e: e.occurred)
        return any(e.event.endswith(FINAL) for e in events)

    wait_until(stored, 30.0, "the run's last event")
    return events


def ui_title(event_name: str) -> str:
    """An event's title as the Prefect UI shows it (its `eventLabel`: the name, `prefect.` dropped,
    `.`, `-` and `_` as spaces, lower case, the first letter capitalised)."""
    prefix = event_name.startswith(("prefect.", "prefect-cloud."))
    name = event_name.split(".", 1)[1] if prefix else event_name
    text = re.sub(r"[_.-]", " ", name).lower()
    return text[:1].upper() + text[1:]


def svg_of(markdown: str) -> ET.Element:
    found = re.search(r"\]\((data:image/svg\+xml;base64,[A-Za-z0-9+/=]+)\)", markdown)
    assert found, markdown[:200]
    return ET.fromstring(base64.b64decode(found.group(1).removeprefix(SVG_PREFIX)))


def texts(svg: ET.Element) -> list[str]:
    return [t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text")]


def test_a_promoted_release_has_one_artifact_of_each_kind_with_its_story(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    state = canary_release(compare_params(sb, "v2"), return_state=True)
    assert routes(sb)["default"]["v2"] == 100, state.message

    run = run_of(state)
    assert run.name == f"{sb.app} v1→v2", "runs are named after what they do"
    assert run_outcome(run) is Outcome.PROMOTED and Outcome.PROMOTED.tag in run.tags
    assert state.name == "Completed" and state.message.startswith("promoted v2")

    found = run_artifacts(state)
    assert {k: len(v) for k, v in found.items()} == {"summary": 1, "chart": 1, "steps": 1, "progress": 1}, \
        "one artifact of each kind per run, updated in place"
    rows = json.loads(found["steps"][0].data)
    assert len(rows) >= 3 and rows[-1]["decision"] == "promote"
    assert found["progress"][0].data == 100.0

    summary = found["summary"][0]
    head, *_ = summary.data.splitlines()
    assert head == f"# {sb.app} in {sb.namespace}: v1 → v2: Promoted", "the outcome comes first"
    headline = f"**Promoted**: {sb.app} in {sb.namespace}: v1 → v2, {len(rows)} steps"
    assert summary.description.startswith(headline)
    for row in rows:  # every reason whole, in a table that wraps it
        assert f"| {row['step']} | {row['time']} | " in summary.data
        assert row["reason"].replace("|", "\\|") in summary.data
    assert summary.data.index("- **outcome**:") < summary.data.index("![")

    chart = found["chart"][0]
    assert chart.description.startswith("![") and SVG_PREFIX in chart.description, \
        "the run page's card of the chart shows the picture"
    svg = svg_of(chart.data)
    labels = texts(svg)
    assert "weights (%)" in labels and "seconds since the release started" in labels
    assert any(t.startswith("evidence of worse errors than v1") for t in labels)
    assert any(t.startswith("evidence of not clearly worse errors") for t in labels)
    circles = list(svg.iter("{http://www.w3.org/2000/svg}circle"))
    judged = sum(1 for r in rows if r["evidence"] != "-")
    # A dot per judged check for each of the two gates' evidence (errors, latency: two panels each).
    assert len(circles) >= 2 * judged and all(c.get("fill") in ("#2e7d32", "#c62828", "#9e9e9e")
                                              for c in circles)
    assert any(c.get("fill") == "#2e7d32" for c in circles), "a promoted target met its gates"
    dashed = [p for p in svg.iter("{http://www.w3.org/2000/svg}path") if p.get("stroke-dasharray") == "6,4"]
    assert dashed, "each gate's threshold or boundary is drawn"

    events = run_events(state)
    names = [e.event for e in events]
    assert names[0] == "lamia.release.started" and names[-1] == "lamia.release.promoted"
    steps = [e for e in events if e.payload.get("step") is not None and e.payload.get("decision")]
    assert [e.payload["step"] for e in steps] == [r["step"] for r in rows]
    for event, row in zip(steps, rows, strict=True):
        assert event.event == f"lamia.release.{STEP_EVENTS[row['decision']]}"
        assert event.payload["reason"] == row["reason"] and event.payload["decision"] == row["decision"]
        assert ", ".join(f"{v}={w}" for v, w in sorted(event.payload["weights"].items())) == row["weights"]
    assert ui_title(steps[0].event) == "Lamia release weights shifted"
    assert ui_title(names[-1]) == "Lamia release promoted"
    assert "lamia.release.failed" not in names


def test_a_rolled_back_release_is_failed_for_ci_and_draws_the_gate_it_missed(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    state = canary_release(compare_params(sb, "v3"), return_state=True)
    assert state.is_failed() and state.name == "Failed", "a CI gate on the state type fails"
    assert run_outcome(run_of(state)) is Outcome.ROLLED_BACK
    found = run_artifacts(state)
    assert found["summary"][0].data.splitlines()[0].endswith(": Rolled back")
    circles = list(svg_of(found["chart"][0].data).iter("{http://www.w3.org/2000/svg}circle"))
    assert any(c.get("fill") == "#c62828" for c in circles), "the missed check is red"
    names = [e.event for e in run_events(state)]
    assert names[-2:] == ["lamia.release.rollback-decided", "lamia.release.rolled-back"]
    assert "lamia.release.failed" not in names


def test_a_held_release_says_held_and_never_failed(prefect_server: Any, fresh_gateway: Sandbox) -> None:
    sb = fresh_gateway
    state = canary_release(params(sb, "v2", policy={"max_weight": 50, "final_action": "hold"}),
                           return_state=True)
    assert state.is_completed() and run_outcome(run_of(state)) is Outcome.HELD, state.message
    assert routes(sb)["default"] == {"v1": 50, "v2": 50, "v3": 0}
    names = [e.event for e in run_events(state)]
    assert names[-2:] == ["lamia.release.hold-decided", "lamia.release.held"]
    assert "lamia.release.failed" not in names and "lamia.release.promoted" not in names


def test_a_cancelled_release_says_cancelled_and_never_failed(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    slow = params(sb, "v2", policy={"step": 10, "interval": 3.0})
    background = Background(lambda: canary_release(slow, return_state=True))
    wait_until(lambda: routes(sb)["default"]["v2"] > 0, what="the first step")
    lease = lease_of(vs(sb))
    assert lease is not None
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(UUID(lease.holder), Cancelling(message="cancelled by the test"), force=True)
    state = background.join()
    assert state.is_cancelled() and routes(sb)["default"]["v1"] == 100
    assert run_outcome(run_of(state)) is Outcome.CANCELLED
    names = [e.event for e in run_events(state)]
    assert names[-1] == "lamia.release.cancelled" and "lamia.release.failed" not in names


@flow(name="history-by-hand", persist_result=False)
def _by_hand(namespace: str, app: str) -> None:
    """What the release loop records when a person steps in, in the order it could happen."""
    history = ReleaseHistory(namespace, app, "canary-release", "stable", "canary")
    history.started({"stable": 100, "canary": 0}, {"policy": "compare"})
    half = {"stable": 50, "canary": 50}
    history.note("waiting-for-approval", half, "canary passed its checks at 50%", {"timeout_s": 3600})
    history.note("approved", half, "approved by alice (dashboards look fine)",
                 {"by": "alice", "comment": "dashboards look fine"})
    history.note("paused", half, "paused by bob (holding for the load test)",
                 {"by": "bob", "why": "holding for the load test"})
    history.note("resumed", half, "resumed by bob", {"by": "bob", "why": ""})
    history.note("taken-over", half, "taken over after the worker was lost", {"gap_s": 3})
    history.note("promoted-by-hand", {"stable": 0, "canary": 100}, "promoted by hand by carol (urgent fix)",
                 {"by": "carol", "why": "urgent fix"})
    history.finished(Outcome.PROMOTED, {"stable": 0, "canary": 100}, "promoted by hand")


def test_a_person_stepping_in_leaves_rows_and_events_titled_for_what_they_did(prefect_server: Any) -> None:
    state = _by_hand("shop", "reviews", return_state=True)
    events = [e for e in run_events(state) if e.event != "lamia.release.started"]
    titles = [ui_title(e.event) for e in events]
    assert titles == [
        "Lamia release waiting for approval", "Lamia release approved", "Lamia release paused",
        "Lamia release resumed", "Lamia release taken over", "Lamia release promoted by hand",
        "Lamia release promoted",
    ]
    by = [e.payload.get("by") for e in events[:6]]
    assert by == [None, "alice", "bob", "bob", None, "carol"]
    assert events[1].payload["comment"] == "dashboards look fine"
    assert all(e.payload["weights"] and e.payload["reason"] for e in events)
    rows = json.loads(run_artifacts(state)["steps"][0].data)
    assert [r["reason"] for r in rows] == [
        "canary passed its checks at 50%", "approved by alice (dashboards look fine)",
        "paused by bob (holding for the load test)", "resumed by bob", "taken over after the worker was lost",
        "promoted by hand by carol (urgent fix)",
    ]


def test_manual_flows_and_the_reconciler_are_named_after_what_they_do(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    common: dict[str, Any] = {"namespace": sb.namespace, "app": sb.app, "kubernetes": sb.kube}
    weights = set_weights(WeightsParameters(weights={"v1": 90, "v2": 10, "v3": 0}, **common),
                          return_state=True)
    assert run_of(weights).name == f"{sb.app} weights v1=90 v2=10 v3=0"
    chrome = 'header "User-Agent" regex "^.*(Chrome).*$"'
    split = {"v1": 50, "v2": 50, "v3": 0}
    route = apply_route_flow(RouteParameters(condition=chrome, weights=split, **common), return_state=True)
    assert run_of(route).name == f"{sb.app} route condition: v1=50 v2=50 v3=0"
    events = [e.event for e in run_events(weights)]
    assert events == ["lamia.set-weights.started", "lamia.set-weights.applied"], "titled for what they are"
    looked = reconcile(ReconcileParameters(kubernetes=sb.kube, namespace=sb.namespace), return_state=True)
    assert run_of(looked).name == f"reconcile {sb.namespace}"


def _deployment_page_state_names() -> list[str]:
    """The state names the Prefect UI's deployment page lists a deployment's runs by, read from the
    UI that this Prefect serves: every name of its list of Prefect's state names but Scheduled."""
    assets = Path(prefect.__file__).parent / "server" / "ui" / "assets"
    page = next(assets.glob("Deployment-*.js")).read_text()
    assert re.search(r"flowRuns:\{state:\{name:(\w+)\.filter\(e=>e!==`Scheduled`\)\}\}", page), \
        "the deployment page no longer filters its runs by state name: look again at what it shows"
    for bundle in assets.glob("index-*.js"):
        names = re.search(r"=\[(`Scheduled`,`Late`(?:,`\w+`)+)\]", bundle.read_text())
        if names:
            return [n.strip("`") for n in names.group(1).split(",") if n != "`Scheduled`"]
    raise AssertionError("the Prefect UI's list of state names was not found")


def test_a_promoted_run_is_listed_under_the_deployment_pages_default_filter(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    names = _deployment_page_state_names()
    assert {"Completed", "Failed", "Cancelled"} <= set(names) and "Promoted" not in names
    release = compare_params(sb, "v2")
    deployment_id = cast(UUID, canary_release.to_deployment(name="history-test").apply())
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run_from_deployment(
            deployment_id, parameters={"params": release.model_dump(mode="json")})
    state = run_flow(canary_release, flow_run=flow_run,
                     parameters={"params": ReleaseParameters.model_validate(release.model_dump())},
                     return_type="state")
    assert run_outcome(run_of(state)) is Outcome.PROMOTED, state
    with get_client(sync_client=True) as client:
        listed = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=names))))
    assert [r.id for r in listed] == [flow_run.id]
    assert listed[0].name == f"{sb.app} v1→v2" and Outcome.PROMOTED.tag in listed[0].tags


def test_health_policy_chart_draws_the_threshold_and_the_baselines_reference(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    state = canary_release(params(sb, "v2", policy={"step": 25, "max_weight": 50}), return_state=True)
    svg = svg_of(run_artifacts(state)["chart"][0].data)
    labels = texts(svg)
    assert HealthPolicy().expression in labels, "one panel for the health expression"
    assert "threshold (>=)" in labels and "v1" in labels and "v2" in labels
    dashed = [p for p in svg.iter("{http://www.w3.org/2000/svg}path") if p.get("stroke-dasharray") == "6,4"]
    assert len(dashed) == 1, "the threshold, once"
