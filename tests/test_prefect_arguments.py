"""Every model Lamia hands to a Prefect task or flow survives Prefect's handling, whatever its contents.

Prefect visits task arguments (``visit_collection``, which rebuilds pydantic
models from ``dict(model)``) and serialises flow parameters to JSON, then
validates them back against the flow's signature. A model that iterates as
anything but pydantic's (field, value) pairs breaks there: ``Weights`` once
iterated its version names and crashed every task unless each name had two
characters. These tests feed realistic names through both paths.
"""

from __future__ import annotations

from typing import Any

import pytest
from prefect.utilities.collections import visit_collection

from flows.expose import ExposeParameters, expose
from flows.manual import apply_route_flow, set_weights
from flows.params import ReleaseParameters, RouteParameters, WeightsParameters
from flows.release import canary_release
from lamia_core.conditions import compile_condition
from lamia_core.engine import ReleaseSpec, start
from lamia_core.exposure import ExposeRequest, Exposure
from lamia_core.kube import KubeConfig
from lamia_core.lease import Lease
from lamia_core.models import Application, Gateway, Route, Version, Weights
from lamia_core.policies import CustomPolicy, HealthPolicy, MetricPolicy
from lamia_core.prometheus import PrometheusConfig

NAME_SETS = [
    ("stable", "canary"),
    ("v9", "v10"),
    ("v1", "v2-mysql"),
    ("1.4.0", "1.5.0-rc.1"),
    ("a", "b"),
    ("reviews-v1", "x"),
]


#: A saved cluster's content, as a flow run resolves it: it reaches tasks, never flow parameters.
SAVED_CLUSTER: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Config", "current-context": "prod-eu",
    "clusters": [{"name": "prod-eu", "cluster": {"server": "https://api.prod-eu.example.com:6443"}}],
    "users": [{"name": "deployer", "user": {"token": "prod-eu-deployer-token"}}],
    "contexts": [{"name": "prod-eu", "context": {"cluster": "prod-eu", "user": "deployer"}}],
}


def _models(baseline: str, target: str) -> list[Any]:
    app = Application(
        namespace="shop",
        name="reviews",
        versions=(Version(name=baseline, deployment=f"reviews-{baseline}"),
                  Version(name=target, deployment=f"reviews-{target}")),
    )
    weights = Weights({baseline: 90, target: 10})
    condition = 'header "User-Agent" regex "^.*(Chrome).*$"'
    gateway = Gateway(application=app, routes=(
        Route(name="canary", condition=condition, match=tuple(compile_condition(condition)),
              weights=Weights.all_on(target, [baseline])),
        Route(weights=weights),
    ))
    spec = ReleaseSpec(namespace="shop", app="reviews", baseline=baseline, target=target,
                       policy=HealthPolicy())
    decision = start(spec, 1_700_000_000.0)
    return [
        weights, app, gateway, gateway.routes[0], spec, decision, decision.state,
        Lease.new("0b9c4f6e-6a47-4d4e-9a8e-1b0c9d8e7f60", "reviews stable", target=target, baseline=baseline),
        KubeConfig(context="prod"), PrometheusConfig(url="http://prometheus.istio-system:9090"),
        KubeConfig(config_data=SAVED_CLUSTER, context="prod-eu", name="prod-eu"),
        ExposeRequest(host="shop.example.com", tls_secret="shop-tls", selector={"istio": "edge"}),
        Exposure(host="shop.example.com", kind="Gateway", namespace="shop", name=f"reviews-{target}",
                 created=True, hosts_added=("shop.example.com",), gateways_added=("mesh", "shop/gw")),
    ]


@pytest.mark.parametrize(("baseline", "target"), NAME_SETS)
def test_task_arguments_survive_prefects_visit(baseline: str, target: str) -> None:
    for model in _models(baseline, target):
        visited = visit_collection(model, lambda x: x, return_data=True)
        assert visited == model, type(model).__name__
        # What Prefect does when a future or a state is nested in an argument: rebuild the model.
        rebuilt = visit_collection(model, lambda x: x + "" if isinstance(x, str) else x, return_data=True)
        assert rebuilt == model, type(model).__name__


@pytest.mark.parametrize(("baseline", "target"), NAME_SETS)
def test_flow_parameters_round_trip_through_prefects_serialisation(baseline: str, target: str) -> None:
    common: dict[str, Any] = {"namespace": "shop", "app": "reviews", "kubernetes": KubeConfig(context="prod")}
    cases = [
        (canary_release, ReleaseParameters(
            **common, baseline=baseline, target=target,
            policy=HealthPolicy(step=20),
            prometheus=PrometheusConfig(url="http://prometheus:9090"),
        )),
        (canary_release, ReleaseParameters(
            **common, baseline=baseline, target=target, policy=MetricPolicy(tolerance=0.01),
        )),
        (canary_release, ReleaseParameters(
            **common, baseline=baseline, target=target,
            policy=CustomPolicy(program=f'if metric "{target}" "upstream_rq_5xx" > 0 {{ v = "{baseline}"; }} '
                                        f'else {{ v = "{target}"; }} v'),
        )),
        (set_weights, WeightsParameters(**common, weights={baseline: 75, target: 25})),
        (apply_route_flow, RouteParameters(**common, condition='cookie "group" exact "beta"',
                                           weights={target: 100})),
        (expose, ExposeParameters(**common, host="shop.example.com", gateway=f"reviews-{target}".lower())),
        (canary_release, ReleaseParameters(namespace="shop", app="reviews", cluster="prod-eu",
                                           baseline=baseline, target=target)),
    ]
    for flow, params in cases:
        serialised = flow.serialize_parameters({"params": params})
        validated = flow.validate_parameters(serialised)
        assert validated["params"] == params, flow.name


def test_the_default_policy_of_a_release_is_compare() -> None:
    params = ReleaseParameters(namespace="shop", app="reviews", baseline="stable", target="canary")
    assert params.policy.kind == "compare"
    policy = params.policy
    assert (policy.max_weight, policy.interval, policy.progress_deadline) == (50, 15.0, 600.0)


def test_a_resolved_cluster_leaves_its_content_out_of_serialised_parameters() -> None:
    resolved = KubeConfig(config_data=SAVED_CLUSTER, context="prod-eu", name="prod-eu")
    params = ReleaseParameters(namespace="shop", app="reviews", cluster="prod-eu", baseline="stable",
                               target="canary", kubernetes=resolved)
    serialised = canary_release.serialize_parameters({"params": params})
    assert "prod-eu-deployer-token" not in str(serialised) and "config_data" not in str(serialised)
    assert serialised["params"]["cluster"] == "prod-eu"
    assert "prod-eu-deployer-token" not in repr(params)
    # Nor in the form the Prefect UI renders for the flow.
    form = str(canary_release.parameters.model_dump())
    assert "in_cluster" in form and "config_data" not in form
