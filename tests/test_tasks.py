"""Tasks: thin, retried only on temporary errors, tested through `.fn` and inside a real flow."""

from __future__ import annotations

from typing import Any

import pytest
from prefect import flow

from lamia_core.errors import InvalidInput, NotFound, ServerError
from lamia_core.kube import KubeConfig
from lamia_core.models import Gateway, Route, Weights
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.seed import seed_application
from tasks._retry import RETRIES, retry_on_temporary
from tasks.kubernetes import apply_gateway, apply_weights, discover_application, read_gateway


@pytest.fixture
def kube(kube_emulator: KubeEmulator, kubeconfig: Any) -> KubeConfig:
    seed_application(kube_emulator, "shop", "reviews", ["v1", "v2"])
    return KubeConfig(kubeconfig=str(kubeconfig), context="lamia-emulator")


def writes(emu: KubeEmulator) -> int:
    return sum(1 for method, path in emu.requests if method in ("PUT", "POST") and "virtualservices" in path)


def test_tasks_through_fn(kube: KubeConfig) -> None:
    app = discover_application.fn(kube, "shop", "reviews")
    assert app.version_names == ["v1", "v2"]
    with pytest.raises(NotFound, match="has no gateway yet; create it with `lamia gateway apply"):
        read_gateway.fn(kube, app)
    apply_gateway.fn(kube, Gateway(application=app, routes=(Route(weights=Weights({"v1": 100, "v2": 0})),)))
    apply_weights.fn(kube, app, Weights({"v1": 60, "v2": 40}))
    gateway = read_gateway.fn(kube, app)
    assert gateway is not None and gateway.default_route.weights.as_dict() == {"v1": 60, "v2": 40}


def test_a_temporary_error_is_retried_and_a_permanent_one_is_not(
    prefect_server: Any, kube: KubeConfig, kube_emulator: KubeEmulator
) -> None:
    app = discover_application.fn(kube, "shop", "reviews")
    apply_gateway.fn(kube, Gateway(application=app, routes=(Route(weights=Weights({"v1": 100, "v2": 0})),)))

    @flow
    def shift(weights: dict[str, int]) -> None:
        apply_weights(kube, app, Weights(weights))

    before = writes(kube_emulator)
    kube_emulator.fail_next("PUT", "virtualservices", 503, count=2)
    shift({"v1": 50, "v2": 50})
    assert writes(kube_emulator) - before == 3, "two 503s, then the write that landed"
    gateway = read_gateway.fn(kube, app)
    assert gateway is not None and gateway.default_route.weights["v2"] == 50

    before = writes(kube_emulator)
    kube_emulator.fail_next("PUT", "virtualservices", 503, count=RETRIES + 1)
    with pytest.raises(ServerError):
        shift({"v1": 0, "v2": 100})
    assert writes(kube_emulator) - before == RETRIES + 1, "bounded: one try and RETRIES retries"

    def lists() -> int:
        return sum(
            1 for method, path in kube_emulator.requests if method == "GET" and path.endswith("/deployments")
        )

    calls = lists()
    with pytest.raises(NotFound):
        discover_application_flow(kube)
    assert lists() - calls == 1, "a permanent error is not retried"


def discover_application_flow(kube: KubeConfig) -> None:
    @flow
    def missing() -> None:
        discover_application(kube, "shop", "no-such-app")

    missing()


class _State:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def result(self, raise_on_failure: bool = True) -> BaseException:
        return self.exc


def test_retry_condition_is_one_line_over_the_error_hierarchy() -> None:
    assert retry_on_temporary(None, None, _State(ServerError("503")))
    assert not retry_on_temporary(None, None, _State(InvalidInput("bad")))
    assert not retry_on_temporary(None, None, _State(RuntimeError("bug")))
