"""The `expose` flow run for real, and public traffic shifting with a canary release: the sandbox's
simulator sends part of its requests through the ingress gateway with the public Host header."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from flows._history import run_outcome
from flows.expose import ExposeParameters, expose
from flows.params import ReleaseParameters
from flows.release import canary_release
from lamia_core.exposure import exposure_of
from lamia_core.istio import ISTIO_API
from lamia_core.lease import lease_of
from lamia_core.outcome import Outcome
from lamia_core.policies import HealthPolicy
from lamia_sandbox.sandbox import Sandbox

pytestmark = pytest.mark.integration

HOST = "reviews.shop.example.com"
PUBLIC = "shop/reviews-gateway"


def vs(sb: Sandbox) -> dict[str, Any]:
    obj = sb.emulator.get_object(ISTIO_API, "VirtualService", sb.namespace, sb.app)
    assert obj is not None
    return obj


def exposing(sb: Sandbox, **overrides: Any) -> ExposeParameters:
    return ExposeParameters(namespace=sb.namespace, app=sb.app, host=HOST, kubernetes=sb.kube, **overrides)


@pytest.fixture
def exposed(prefect_server: Any, fresh_gateway: Sandbox) -> Iterator[Sandbox]:
    """The sandbox's app exposed by the flow; unexposed (by the flow) afterwards."""
    sb = fresh_gateway
    state = expose(exposing(sb), return_state=True)
    assert run_outcome(state) is Outcome.APPLIED, state.message
    assert sb.simulator is not None
    sb.simulator.refresh_gateway()
    sb.simulator.set_public_traffic(HOST, PUBLIC, share=0.5)
    try:
        yield sb
    finally:
        sb.simulator.set_public_traffic(None)
        expose(exposing(sb, remove=True), return_state=True)


def public_versions(sb: Sandbox, n: int = 400) -> Counter[str]:
    """Where ``n`` requests through the public gateway go with the VirtualService as it is now."""
    sim = sb.simulator
    assert sim is not None
    sim.refresh_gateway()
    outcomes = [sim.handle(sim.public_request()) for _ in range(n)]
    assert all(o is not None and o.gateway == PUBLIC for o in outcomes), "every public request is routed"
    return Counter(o.version for o in outcomes if o is not None)


def release(sb: Sandbox, **policy: Any) -> Any:
    settings = {"step": 50, "interval": 1.5, "window": "10s", "min_requests": 5, "failure_limit": 1,
                "scrape_interval": 1.0, **policy}
    params = ReleaseParameters(namespace=sb.namespace, app=sb.app, baseline="v1", target="v2",
                               policy=HealthPolicy(**settings), kubernetes=sb.kube, prometheus=sb.prometheus)
    return canary_release(params, return_state=True)


def test_the_flow_exposes_and_unexposes_under_the_lease(prefect_server: Any, fresh_gateway: Sandbox) -> None:
    sb = fresh_gateway
    before = vs(sb)["spec"]
    state = expose(exposing(sb, tls_secret="reviews-shop-tls"), return_state=True)
    assert run_outcome(state) is Outcome.APPLIED, state.message
    assert "exposed as reviews.shop.example.com through Gateway shop/reviews-gateway (created)" in (
        state.message or "")
    gateway = sb.emulator.get_object(ISTIO_API, "Gateway", sb.namespace, "reviews-gateway")
    assert gateway is not None
    assert gateway["spec"]["servers"][1]["tls"]["credentialName"] == "reviews-shop-tls"
    assert vs(sb)["spec"]["gateways"] == ["mesh", PUBLIC]
    assert lease_of(vs(sb)) is None, "the lease is given back"

    removed = expose(exposing(sb, remove=True), return_state=True)
    assert run_outcome(removed) is Outcome.APPLIED, removed.message
    assert sb.emulator.get_object(ISTIO_API, "Gateway", sb.namespace, "reviews-gateway") is None
    assert vs(sb)["spec"] == before and exposure_of(vs(sb)) is None


def test_bad_host_fails_the_flow_before_any_write(prefect_server: Any, fresh_gateway: Sandbox) -> None:
    sb = fresh_gateway
    writes = len([r for r in sb.emulator.requests if r[0] in ("POST", "PUT", "PATCH", "DELETE")])
    state = expose(exposing(sb).model_copy(update={"host": "Reviews.Example.com"}), return_state=True)
    assert state.is_failed() and "not a public DNS name" in (state.message or "")
    assert len([r for r in sb.emulator.requests if r[0] in ("POST", "PUT", "PATCH", "DELETE")]) == writes


def test_public_traffic_shifts_with_a_release(exposed: Sandbox) -> None:
    sb = exposed
    assert public_versions(sb) == Counter({"v1": 400}), "before the release, all on the baseline"

    held = release(sb, max_weight=50, final_action="hold")
    assert run_outcome(held) is Outcome.HELD, held.message
    split = public_versions(sb)
    assert set(split) == {"v1", "v2"} and all(100 < n < 300 for n in split.values()), split

    promoted = release(sb)
    assert run_outcome(promoted) is Outcome.PROMOTED, promoted.message
    assert public_versions(sb) == Counter({"v2": 400}), "after promotion, all on the target"

    # The background traffic saw both kinds of request take the same routes all along.
    assert sb.simulator is not None
    counts = sb.simulator.counts()
    assert set(counts["by_gateway"]) >= {"mesh", PUBLIC}
    assert counts["by_gateway"][PUBLIC].get("v2", 0) > 0 and counts["by_gateway"]["mesh"].get("v2", 0) > 0
    assert vs(sb)["spec"]["gateways"] == ["mesh", PUBLIC], "the release kept the binding"
