"""All three flows with the version names real applications have, for real: each name set gets its
own sandbox (emulator, traffic simulator, Prometheus) and the session's Prefect server.

Version names reach Prefect inside task arguments and flow parameters; once a model that iterated
its version names crashed every flow unless each name had two characters. A release must
promote and roll back, a conditional release must promote on its own route, and both manual
flows must apply, whatever the names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flows._history import run_outcome
from flows.manual import apply_route_flow, set_weights
from flows.params import ReleaseParameters, RouteParameters, WeightsParameters
from flows.release import canary_release
from lamia_core.kube import KubeAdapter
from lamia_core.models import Gateway, Route, Weights
from lamia_core.outcome import Outcome
from lamia_core.policies import HealthPolicy
from lamia_sandbox.sandbox import Sandbox
from lamia_sandbox.simulator import VersionBehaviour

pytestmark = pytest.mark.integration

#: (baseline, a healthy target, a target failing half its requests). A version's health stays what
#: it is for the whole module: a query window reaching back over a behaviour change would blur it.
NAME_SETS = [
    ("stable", "canary", "canary-next"),
    ("v9", "v10", "v11"),
    ("v1", "v2-mysql", "v2-mysql-vm"),
    ("1.4.0", "1.5.0-rc.1", "1.5.0-rc.2"),
]
CHROME = 'header "User-Agent" regex "^.*(Chrome).*$"'


Named = tuple[Sandbox, str, str, str]


@pytest.fixture(scope="module", params=NAME_SETS, ids=["-".join(n[:2]) for n in NAME_SETS])
def named(request: pytest.FixtureRequest) -> Iterator[Named]:
    baseline, target, bad = request.param
    versions = {baseline: VersionBehaviour(), target: VersionBehaviour(),
                bad: VersionBehaviour(error_rate=0.5, error_code=503)}
    with Sandbox("store", "catalog", versions, rate=150.0, seed=11) as sb:
        yield sb, baseline, target, bad


@pytest.fixture
def fresh(named: Named) -> Iterator[Named]:
    """Everything on the baseline, only the default route."""
    sb, baseline, target, bad = named
    with KubeAdapter(sb.kube) as kube:
        app = kube.discover_application(sb.namespace, sb.app)
        vs = kube.read_virtual_service(app)
        if vs is not None:
            vs["spec"]["http"] = [r for r in vs["spec"]["http"] if r.get("name") == "lamia-default"]
            sb.emulator.replace_object(vs)
        everything_on_baseline = Weights.all_on(baseline, [target, bad])
        kube.apply_gateway(Gateway(application=app, routes=(Route(weights=everything_on_baseline),)))
    yield named


def release_params(sb: Sandbox, baseline: str, target: str, **overrides: Any) -> ReleaseParameters:
    policy = HealthPolicy(step=50, interval=1.5, window="10s", min_requests=5, failure_limit=1,
                          scrape_interval=1.0)
    return ReleaseParameters(namespace=sb.namespace, app=sb.app, baseline=baseline, target=target,
                             policy=policy, kubernetes=sb.kube, prometheus=sb.prometheus, **overrides)


def routes(sb: Sandbox) -> dict[str, dict[str, int]]:
    with KubeAdapter(sb.kube) as kube:
        gateway = kube.read_gateway(kube.discover_application(sb.namespace, sb.app))
    assert gateway is not None
    return {r.name: r.weights.as_dict() for r in gateway.routes}


def test_a_healthy_target_is_promoted(prefect_server: Any, fresh: Named) -> None:
    sb, baseline, target, bad = fresh
    state = canary_release(release_params(sb, baseline, target), return_state=True)
    assert run_outcome(state) is Outcome.PROMOTED, state.message
    assert routes(sb) == {"default": {baseline: 0, target: 100, bad: 0}}
    assert state.result()["weights"] == {baseline: 0, target: 100, bad: 0}


def test_a_failing_target_is_rolled_back(prefect_server: Any, fresh: Named) -> None:
    sb, baseline, _, bad = fresh
    state = canary_release(release_params(sb, baseline, bad), return_state=True)
    assert run_outcome(state) is Outcome.ROLLED_BACK, state.message
    assert f"{bad} unhealthy" in (state.message or "")
    assert routes(sb)["default"][baseline] == 100


def test_a_conditional_release_promotes_on_its_own_route(prefect_server: Any, fresh: Named) -> None:
    sb, baseline, target, bad = fresh
    state = canary_release(release_params(sb, baseline, target, condition=CHROME), return_state=True)
    assert run_outcome(state) is Outcome.PROMOTED, state.message
    assert routes(sb) == {"canary": {baseline: 0, target: 100, bad: 0},
                          "default": {baseline: 100, target: 0, bad: 0}}


def test_the_manual_flows_apply(prefect_server: Any, fresh: Named) -> None:
    sb, baseline, target, _ = fresh
    common: dict[str, Any] = {"namespace": sb.namespace, "app": sb.app, "kubernetes": sb.kube}
    weights = set_weights(WeightsParameters(**common, weights={baseline: 70, target: 30}), return_state=True)
    assert run_outcome(weights) is Outcome.APPLIED, weights.message
    route = apply_route_flow(RouteParameters(**common, condition=CHROME, weights={target: 100}),
                             return_state=True)
    assert run_outcome(route) is Outcome.APPLIED, route.message
    assert routes(sb)["condition"] == {target: 100}
    assert {v: w for v, w in routes(sb)["default"].items() if w} == {baseline: 70, target: 30}
