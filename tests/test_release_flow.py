"""The canary-release flow, run for real: a Prefect server (SQLite), the API-server
emulator, the traffic simulator, Prometheus and the fake Slack server."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter, EventResourceFilter
from prefect.events.worker import EventsWorker
from prefect.states import Cancelling, get_state_exception

from flows._history import STEP_EVENTS, run_outcome
from flows.params import ReleaseParameters, SlackSettings
from flows.release import ReleaseEnded, canary_release, outcome_of
from lamia_core.istio import virtual_service_name
from lamia_core.kube import KubeAdapter
from lamia_core.lease import Lease, lease_of
from lamia_core.outcome import Outcome
from lamia_core.policies import ComparePolicy, HealthPolicy
from lamia_sandbox.fake_slack import DEFAULT_TOKEN, FakeSlack
from lamia_sandbox.sandbox import Sandbox

pytestmark = pytest.mark.integration

INTERVAL = 1.5


def params(
    sb: Sandbox, target: str, *, baseline: str = "v1", slack: FakeSlack | None = None, **overrides: Any
) -> ReleaseParameters:
    policy = {
        "step": 50,
        "interval": INTERVAL,
        "window": "10s",
        # The sandbox's Prometheus scrapes every second; say so, since a run may start before
        # Prometheus has enough samples to tell.
        "scrape_interval": 1.0,
        "min_requests": 5,
        "failure_limit": 1,
        **overrides.pop("policy", {}),
    }
    return ReleaseParameters(
        namespace=sb.namespace,
        app=sb.app,
        baseline=baseline,
        target=target,
        policy=HealthPolicy(**policy),
        kubernetes=sb.kube,
        prometheus=sb.prometheus,
        slack=SlackSettings(channel="#releases", base_url=slack.api_url) if slack else None,
        **overrides,
    )


def routes(sb: Sandbox) -> dict[str, dict[str, int]]:
    with KubeAdapter(sb.kube) as adapter:
        gateway = adapter.read_gateway(adapter.discover_application(sb.namespace, sb.app))
    assert gateway is not None
    return {r.name: r.weights.as_dict() for r in gateway.routes}


def vs(sb: Sandbox) -> dict[str, Any]:
    with KubeAdapter(sb.kube) as adapter:
        app = adapter.discover_application(sb.namespace, sb.app)
        obj = adapter.get_object("VirtualService", sb.namespace, virtual_service_name(app))
    assert obj is not None
    return obj


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Background:
    """A flow run in a thread, as a second user or a long release would be."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.state: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.state = fn()
        except BaseException as exc:  # surfaced by join()
            self.error = exc

    def join(self, timeout: float = 90.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "flow run did not finish"
        if self.error:
            raise self.error
        return self.state


def flow_run_id(state: Any) -> UUID:
    return UUID(state.state_details.flow_run_id.hex)


def artifacts(run_id: UUID) -> dict[str, Any]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    latest: dict[str, Any] = {}
    for a in sorted(found, key=lambda a: a.created):
        # By type (table, progress) and by what the key names (summary, chart: both Markdown).
        latest[a.type] = a
        latest[(a.key or "").rsplit("-", 1)[-1]] = a
    return latest


def table_rows(artifact: Any) -> list[dict[str, Any]]:
    """A table artifact's rows (the API returns them as JSON text)."""
    data = artifact.data
    return data if isinstance(data, list) else json.loads(data)


FINAL_EVENTS = ("lamia.release.promoted", "lamia.release.rolled-back", "lamia.release.failed")


def events(app_resource: str, run_id: UUID, timeout: float = 30.0,
           final: tuple[str, ...] = FINAL_EVENTS) -> list[str]:
    EventsWorker.drain_all(timeout=10)
    names: list[str] = []

    def fetched() -> bool:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                EventFilter(
                    event=EventNameFilter(prefix=["lamia.release."]),
                    resource=EventResourceFilter(id=[app_resource]),
                    related=EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"]),
                ),
                limit=50,
            )
        names[:] = [e.event for e in sorted(page.events, key=lambda e: e.occurred)]
        return any(n in names for n in final)

    wait_until(fetched, timeout, "the release's final event")
    return names


def test_healthy_target_is_promoted_with_history_and_slack_thread(
    prefect_server: Any, fresh_gateway: Sandbox, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", DEFAULT_TOKEN)
    sb = fresh_gateway
    state = canary_release(params(sb, "v2", slack=fake_slack), return_state=True)

    assert run_outcome(state) is Outcome.PROMOTED, state.message
    assert state.is_completed()
    assert routes(sb) == {"default": {"v1": 0, "v2": 100, "v3": 0}}
    assert lease_of(vs(sb)) is None, "the lease is given back"
    outcome = state.result()
    assert outcome["outcome"] == "promoted" and outcome["weights"]["v2"] == 100

    run_id = flow_run_id(state)
    found = artifacts(run_id)
    assert set(found) >= {"progress", "table", "markdown"}
    assert found["progress"].data == 100.0
    rows = table_rows(found["table"])
    assert [r["decision"] for r in rows] == ["set_weights", "set_weights", "promote"]
    assert "v2=50" in rows[0]["weights"] and "v2=100" in rows[-1]["weights"]
    assert ">= 0.8" in rows[1]["evidence"], "each step shows the threshold it met"
    assert "Promoted" in found["summary"].data

    names = events(f"lamia.app.{sb.namespace}.{sb.app}", run_id)
    assert names[0] == "lamia.release.started"
    steps = [n for n in names if n.removeprefix("lamia.release.") in STEP_EVENTS.values()]
    assert steps == ["lamia.release.weights-shifted"] * 2 + ["lamia.release.promotion-decided"]
    assert names[-1] == "lamia.release.promoted"

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    assert f"lamia/app:{sb.namespace}/{sb.app}" in run.tags

    first, *replies = fake_slack.messages
    assert "started" in first.text and first.thread_ts is None
    assert replies and all(m.thread_ts == first.ts for m in replies), "one thread per release"
    assert "promoted to 100%" in replies[-1].text
    # Only the outcome is shown in the channel too; the steps stay in the thread.
    assert replies[-1].broadcast and not any(m.broadcast for m in replies[:-1])


def test_unhealthy_target_is_rolled_back_at_the_first_check_that_sees_its_errors(
    prefect_server: Any, fresh_gateway: Sandbox, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", DEFAULT_TOKEN)
    sb = fresh_gateway
    state = canary_release(params(sb, "v3", slack=fake_slack), return_state=True)

    assert run_outcome(state) is Outcome.ROLLED_BACK, state.message
    assert state.is_failed(), "a CI gate on this run fails"
    # What a worker or `lamia serve` does with a failed run's state: it must resolve without a TypeError.
    ended = get_state_exception(state)
    assert isinstance(ended, ReleaseEnded) and ended.outcome["outcome"] == "rolled-back"
    assert outcome_of(state)["target"] == "v3"
    assert routes(sb) == {"default": {"v1": 100, "v2": 0, "v3": 0}}
    rows = table_rows(artifacts(flow_run_id(state))["table"])
    # v3 gets traffic at the first step; the next check (one interval later) sees
    # its errors (half its requests) and rolls back: no step in between.
    assert [r["decision"] for r in rows] == ["set_weights", "rollback"]
    assert "v3" in rows[1]["evidence"] and "(>= 0.8) ✗" in rows[1]["evidence"]
    assert rows[1]["elapsed_s"] - rows[0]["elapsed_s"] < 2 * INTERVAL + 1.0
    rolled = fake_slack.messages[-1].text
    assert "rolled back to v1" in rolled and "Measured" in rolled and "0.8" in rolled
    assert fake_slack.messages[-1].broadcast
    assert events(f"lamia.app.{sb.namespace}.{sb.app}", flow_run_id(state))[-1] == "lamia.release.rolled-back"


def release_in_background(sb: Sandbox, **overrides: Any) -> tuple[Background, Lease]:
    """A release of v2 (10% every 3 s unless overridden) in a thread, once it holds its lease."""
    policy = {"step": 10, "interval": 3.0, **overrides.pop("policy", {})}
    run = Background(lambda: canary_release(params(sb, "v2", policy=policy, **overrides), return_state=True))
    wait_until(lambda: lease_of(vs(sb)) is not None, what="the release's lease")
    holder = lease_of(vs(sb))
    assert holder is not None
    return run, holder


def cancel(holder: Lease) -> None:
    """What the Prefect UI's cancel button does."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(
            UUID(holder.holder), Cancelling(message="cancelled by the test"), force=True
        )


def test_cancelled_release_puts_the_baseline_back(prefect_server: Any, fresh_gateway: Sandbox) -> None:
    sb = fresh_gateway
    run, holder = release_in_background(sb)
    wait_until(lambda: routes(sb)["default"]["v2"] > 0, what="the first step")
    cancel(holder)
    state = run.join()

    assert state.is_cancelled(), state
    assert routes(sb)["default"] == {"v1": 100, "v2": 0, "v3": 0}
    assert lease_of(vs(sb)) is None


def test_second_release_of_the_same_app_is_refused_naming_the_running_one(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    first, holder = release_in_background(sb)
    writes_before = routes(sb)

    second = canary_release(params(sb, "v3"), return_state=True)
    assert second.is_failed()
    assert "already running" in (second.message or "")
    assert holder.name in (second.message or ""), "the refusal names the running flow run"
    kept = lease_of(vs(sb))
    assert kept is not None and kept.holder == holder.holder, "the running release keeps its lease"
    assert routes(sb)["default"]["v3"] == 0 and writes_before["default"]["v3"] == 0

    cancel(holder)
    assert first.join().is_cancelled()
    assert routes(sb)["default"]["v1"] == 100


def test_slack_outage_does_not_change_the_outcome(
    prefect_server: Any, fresh_gateway: Sandbox, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", DEFAULT_TOKEN)
    fake_slack.outage = True
    state = canary_release(params(fresh_gateway, "v2", slack=fake_slack), return_state=True)
    assert run_outcome(state) is Outcome.PROMOTED, state.message
    assert routes(fresh_gateway)["default"]["v2"] == 100
    assert fake_slack.requests, "Lamia did try to post"
    assert not fake_slack.messages
    assert all(r.status == 503 for r in fake_slack.requests)


def test_bad_input_fails_before_any_change(prefect_server: Any, fresh_gateway: Sandbox) -> None:
    sb = fresh_gateway
    before = vs(sb)["metadata"]["resourceVersion"]
    writes = len([r for r in sb.emulator.requests if r[0] in ("POST", "PUT", "PATCH", "DELETE")])

    unknown = canary_release(params(sb, "v9"), return_state=True)
    assert unknown.is_failed() and "unknown version 'v9'" in (unknown.message or "")
    bad_regex = canary_release(
        params(sb, "v2", condition='header "User-Agent" regex "^(?!Chrome).*$"'), return_state=True
    )
    assert bad_regex.is_failed() and "RE2" in (bad_regex.message or "")

    assert vs(sb)["metadata"]["resourceVersion"] == before
    assert len([r for r in sb.emulator.requests if r[0] in ("POST", "PUT", "PATCH", "DELETE")]) == writes


def test_conditional_release_shifts_only_the_matching_route(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    condition = 'header "User-Agent" regex "^.*(Chrome).*$"'
    state = canary_release(params(sb, "v2", condition=condition), return_state=True)
    assert run_outcome(state) is Outcome.PROMOTED, state.message
    assert routes(sb) == {"canary": {"v1": 0, "v2": 100, "v3": 0}, "default": {"v1": 100, "v2": 0, "v3": 0}}
    http = vs(sb)["spec"]["http"]
    assert http[0]["name"] == "lamia-canary"
    assert http[0]["match"] == [{"headers": {"user-agent": {"regex": "^.*(Chrome).*$"}}}]


def test_approval_gates_promotion(prefect_server: Any, fresh_gateway: Sandbox) -> None:
    from prefect.flow_runs import resume_flow_run

    sb = fresh_gateway
    # Max weight 50: the release stops at 50% and only the approval takes v2 to 100%.
    run, holder = release_in_background(
        sb, approval=True, policy={"step": 50, "interval": 1.5, "max_weight": 50}
    )

    def paused() -> bool:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(holder.holder)).state
        return bool(state and state.is_paused())

    wait_until(paused, 60, "the pause for approval")
    assert routes(sb)["default"]["v2"] == 50, "nothing is promoted while the run waits"
    assert (lease_of(vs(sb)) or holder).holder == holder.holder and lease_of(vs(sb)) is not None
    resume_flow_run(UUID(holder.holder), run_input={"decision": "go on", "comment": "looks good",
                                                    "by": "alice@laptop"})
    state = run.join()
    assert run_outcome(state) is Outcome.PROMOTED, state.message
    assert routes(sb)["default"]["v2"] == 100


def test_an_app_without_a_gateway_is_refused_with_the_command_that_makes_one(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    from lamia_sandbox.seed import seed_application

    sb = fresh_gateway
    seed_application(sb.emulator, sb.namespace, "ratings", ["v1", "v2"])
    writes = len([r for r in sb.emulator.requests if r[0] in ("POST", "PUT", "PATCH", "DELETE")])
    state = canary_release(params(sb, "v2").model_copy(update={"app": "ratings"}), return_state=True)
    assert state.is_failed()
    assert "no gateway yet" in (state.message or "") and "lamia gateway apply" in (state.message or "")
    assert len([r for r in sb.emulator.requests if r[0] in ("POST", "PUT", "PATCH", "DELETE")]) == writes


# -- the default policy: compare ------------------------------------------------------------------


def compare_params(sb: Sandbox, target: str, *, slack: FakeSlack | None = None) -> ReleaseParameters:
    """The default policy, with the pace of these tests: a check every 1.5 s (Prometheus scrapes the
    sandbox every second), one step of 50 to max weight 50."""
    return ReleaseParameters(
        namespace=sb.namespace,
        app=sb.app,
        baseline="v1",
        target=target,
        policy=ComparePolicy(step=50, interval=INTERVAL, scrape_interval=1.0, min_requests=5),
        kubernetes=sb.kube,
        prometheus=sb.prometheus,
        slack=SlackSettings(channel="#releases", base_url=slack.api_url) if slack else None,
    )


def test_compare_rolls_back_a_failing_target_with_both_versions_counts_in_the_step_table(
    prefect_server: Any, fresh_gateway: Sandbox, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", DEFAULT_TOKEN)
    sb = fresh_gateway
    state = canary_release(compare_params(sb, "v3", slack=fake_slack), return_state=True)

    assert run_outcome(state) is Outcome.ROLLED_BACK, state.message
    assert routes(sb) == {"default": {"v1": 100, "v2": 0, "v3": 0}}
    rows = table_rows(artifacts(flow_run_id(state))["table"])
    assert rows[0]["decision"] == "set_weights" and rows[-1]["decision"] == "rollback"
    # v3 fails half its requests: the first check with its data is decisive, whatever came before.
    assert all(r["decision"] == "hold" for r in rows[1:-1])
    reason = rows[-1]["reason"]
    counts = r"v3: (\d[\d,]*) errors in (\d[\d,]*) requests \((\d+) %\) vs v1: ([\d.]+) %"
    evidence = re.search(counts, reason)
    assert evidence, reason
    errors, requests = (int(evidence.group(i).replace(",", "")) for i in (1, 2))
    assert requests > 0 and 0.3 < errors / requests < 0.7
    assert float(evidence.group(4)) < 5
    assert "worse beyond tolerance with 99 % confidence" in reason and "rolling back to v1" in reason
    assert "v3: evidence of worse errors than v1" in rows[-1]["evidence"]
    assert re.search(r"v1: errors = \d[\d,]* of \d[\d,]* requests", rows[-1]["evidence"])
    rolled = fake_slack.messages[-1].text
    assert "rolled back to v1" in rolled and "worse beyond tolerance" in rolled
    assert "v3: errors = " in rolled and "v1: errors = " in rolled, "Slack lists both versions' counts"
    assert events(f"lamia.app.{sb.namespace}.{sb.app}", flow_run_id(state))[-1] == "lamia.release.rolled-back"


def test_compare_promotes_a_good_target_on_evidence(prefect_server: Any, fresh_gateway: Sandbox) -> None:
    sb = fresh_gateway
    state = canary_release(compare_params(sb, "v2"), return_state=True)

    assert run_outcome(state) is Outcome.PROMOTED, state.message
    assert routes(sb)["default"] == {"v1": 0, "v2": 100, "v3": 0}
    rows = table_rows(artifacts(flow_run_id(state))["table"])
    assert rows[-1]["decision"] == "promote"
    assert "not worse than" in rows[-1]["reason"] and "with 99 % confidence" in rows[-1]["reason"]
    assert re.search(r"v2: \d[\d,]* errors? in \d[\d,]* requests", rows[-1]["reason"])
