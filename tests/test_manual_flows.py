"""The set-weights and apply-route flows, for real against the sandbox and a Prefect server."""

from __future__ import annotations

from typing import Any

import pytest

from flows._history import run_outcome
from flows.manual import apply_route_flow, set_weights
from flows.params import RouteParameters, WeightsParameters
from lamia_core.lease import lease_of
from lamia_core.outcome import Outcome
from lamia_sandbox.sandbox import Sandbox
from tests.test_release_flow import cancel, release_in_background, routes, vs

pytestmark = pytest.mark.integration

CHROME_OR_NEXUS = 'header "User-Agent" regex "^.*(Chrome).*$" or header "User-Agent" regex "^.*(Nexus 6P).*$"'


def test_set_weights_applies_and_records_history(prefect_server: Any, fresh_gateway: Sandbox) -> None:
    sb = fresh_gateway
    state = set_weights(
        WeightsParameters(
            namespace=sb.namespace, app=sb.app, kubernetes=sb.kube, weights={"v1": 80, "v2": 20, "v3": 0}
        ),
        return_state=True,
    )
    assert run_outcome(state) is Outcome.APPLIED, state.message
    assert routes(sb)["default"] == {"v1": 80, "v2": 20, "v3": 0}
    assert lease_of(vs(sb)) is None


def test_set_weights_rejects_bad_weights_without_writing(prefect_server: Any, fresh_gateway: Sandbox) -> None:
    sb = fresh_gateway
    before = vs(sb)["metadata"]["resourceVersion"]
    for weights, message in (({"v1": 80, "v2": 30}, "sum to 100"), ({"v1": 50, "v9": 50}, "unknown version")):
        state = set_weights(
            WeightsParameters(namespace=sb.namespace, app=sb.app, kubernetes=sb.kube, weights=weights),
            return_state=True,
        )
        assert state.is_failed() and message in (state.message or "")
    assert vs(sb)["metadata"]["resourceVersion"] == before


def test_apply_route_sends_matching_requests_by_their_weights(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    state = apply_route_flow(
        RouteParameters(
            namespace=sb.namespace,
            app=sb.app,
            kubernetes=sb.kube,
            condition=CHROME_OR_NEXUS,
            weights={"v1": 50, "v2": 50},
        ),
        return_state=True,
    )
    assert run_outcome(state) is Outcome.APPLIED, state.message
    assert routes(sb) == {"condition": {"v1": 50, "v2": 50}, "default": {"v1": 100, "v2": 0, "v3": 0}}
    first = vs(sb)["spec"]["http"][0]
    assert first["name"] == "lamia-condition"
    assert first["match"] == [
        {"headers": {"user-agent": {"regex": "^.*(Chrome).*$"}}},
        {"headers": {"user-agent": {"regex": "^.*(Nexus 6P).*$"}}},
    ]


def test_manual_change_waits_for_no_one_while_a_release_runs(
    prefect_server: Any, fresh_gateway: Sandbox
) -> None:
    sb = fresh_gateway
    release, holder = release_in_background(sb)
    refused = set_weights(
        WeightsParameters(
            namespace=sb.namespace, app=sb.app, kubernetes=sb.kube, weights={"v1": 0, "v2": 0, "v3": 100}
        ),
        return_state=True,
    )
    assert refused.is_failed() and holder.name in (refused.message or "")
    assert routes(sb)["default"]["v3"] == 0

    cancel(holder)
    assert release.join().is_cancelled()
