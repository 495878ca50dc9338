"""A whole sandbox (API-server emulator, traffic simulator, Prometheus) per test module,
with the gateway reset to all traffic on v1 before each test that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lamia_core.istio import virtual_service_name
from lamia_core.kube import KubeAdapter
from lamia_core.lease import LEASE_ANNOTATION
from lamia_core.models import Gateway, Route, Weights
from lamia_sandbox.sandbox import Sandbox
from lamia_sandbox.simulator import VersionBehaviour

#: v3 answers half of its requests with 503: a release of it must roll back. Half, not the
#: demo's 30%: the first check sees only a second or so of v3's traffic (a few dozen
#: requests), and at 30% such a sample reaches the 0.8 threshold by chance a few times in a
#: hundred, which would make the "rolled back at the first check" assertions flaky.
SANDBOX_VERSIONS = {
    "v1": VersionBehaviour(),
    "v2": VersionBehaviour(),
    "v3": VersionBehaviour(error_rate=0.5, error_code=503),
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox("shop", "reviews", SANDBOX_VERSIONS, rate=150.0, seed=7) as sb:
        yield sb


@pytest.fixture
def fresh_gateway(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The sandbox with its gateway at v1=100 (only the default route) and no lease."""
    adapter = KubeAdapter(sandbox.kube)
    app = adapter.discover_application(sandbox.namespace, sandbox.app)
    vs = sandbox.emulator.get_object("networking.istio.io/v1", "VirtualService", sandbox.namespace,
                                     virtual_service_name(app))
    if vs is not None:
        # As a person with kubectl would: whatever a previous test left, lease included, goes.
        vs["metadata"].get("annotations", {}).pop(LEASE_ANNOTATION, None)
        vs["spec"]["http"] = [r for r in vs["spec"].get("http", []) if r.get("name") == "lamia-default"]
        sandbox.emulator.replace_object(vs)
    baseline = Route(weights=Weights({"v1": 100, "v2": 0, "v3": 0}))
    adapter.apply_gateway(Gateway(application=app, routes=(baseline,)))
    assert sandbox.simulator is not None
    for version, behaviour in SANDBOX_VERSIONS.items():
        sandbox.simulator.set_behaviour(version, behaviour)
    yield sandbox
    adapter.close()
