"""Saved clusters in flow runs (flows/clusters.py): resolved by name inside the run, and one release
on each of two clusters at once, each cluster's gateway moving by its own release only.

The releases use the time policy against the emulators only: this is about which cluster a run
talks to, not about metrics.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from pydantic import ValidationError
from typer.testing import CliRunner

from flows._guard import limit_name
from flows._history import run_outcome
from flows.cli import app as cli
from flows.clusters import LamiaCluster, cluster_tag, save, use_cluster
from flows.params import ReleaseParameters, Target
from flows.release import canary_release
from lamia_core.errors import InvalidInput
from lamia_core.istio import ISTIO_API
from lamia_core.kube import KubeConfig
from lamia_core.lease import lease_of
from lamia_core.outcome import Outcome
from lamia_core.policies import TimePolicy
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.seed import seed_application
from tests.plugins.clusters import TOKENS, TwoRegions
from tests.test_release_flow import Background, wait_until

pytestmark = pytest.mark.integration

NS, APP = "shop", "reviews"
runner = CliRunner()


def lamia(*args: str) -> Any:
    result = runner.invoke(cli, list(args))
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result


def add_both(regions: TwoRegions) -> None:
    for region in ("prod-eu", "prod-us"):
        lamia("cluster", "add", region, "--context", region, "--kubeconfig", str(regions.kubeconfig))


def test_target_refuses_a_cluster_with_a_kubeconfig_of_its_own() -> None:
    with pytest.raises(ValidationError, match=r"cluster 'prod-eu' and kubernetes .* both say which cluster"):
        Target(namespace=NS, app=APP, cluster="prod-eu", kubernetes=KubeConfig(context="prod-us"))
    with pytest.raises(ValidationError, match="pattern"):
        Target(namespace=NS, app=APP, cluster="Prod EU")
    # The config resolved from the cluster itself is no second way.
    resolved = KubeConfig(config_data={"kind": "Config"}, context="prod-eu", name="prod-eu")
    assert Target(namespace=NS, app=APP, cluster="prod-eu", kubernetes=resolved).kubernetes == resolved


def test_use_cluster_resolves_the_saved_connection_and_prometheus(no_saved_clusters: None) -> None:
    save("prod-eu", LamiaCluster(in_cluster=True, prometheus_url="http://prometheus.istio-system:9090"))
    plain = ReleaseParameters(namespace=NS, app=APP, baseline="stable", target="canary")
    assert use_cluster(plain) is plain
    resolved = use_cluster(plain.model_copy(update={"cluster": "prod-eu"}))
    assert resolved.kubernetes == KubeConfig(in_cluster=True, name="prod-eu")
    # Unset in the run's parameters: the cluster's Prometheus; set: the run's own.
    fresh = ReleaseParameters.model_validate(
        {"namespace": NS, "app": APP, "baseline": "stable", "target": "canary", "cluster": "prod-eu"})
    assert use_cluster(fresh).prometheus.url == "http://prometheus.istio-system:9090"
    given = ReleaseParameters.model_validate(
        {"namespace": NS, "app": APP, "baseline": "stable", "target": "canary", "cluster": "prod-eu",
         "prometheus": {"url": "http://thanos.monitoring:9090"}})
    assert use_cluster(given).prometheus.url == "http://thanos.monitoring:9090"
    with pytest.raises(InvalidInput, match=r"no cluster named 'prod-ap' \(saved clusters: prod-eu;"):
        use_cluster(plain.model_copy(update={"cluster": "prod-ap"}))


def test_a_run_naming_an_unknown_cluster_fails_before_touching_any(two_regions: TwoRegions) -> None:
    add_both(two_regions)
    before = len(two_regions.eu.requests), len(two_regions.us.requests)
    params = ReleaseParameters(namespace=NS, app=APP, baseline="stable", target="canary", cluster="prod-ap",
                               policy=TimePolicy(step=50, interval=1))
    state = canary_release(params, return_state=True)
    assert state.is_failed() and "no cluster named 'prod-ap'" in str(state.message)
    assert (len(two_regions.eu.requests), len(two_regions.us.requests)) == before


def canary_weights(emu: KubeEmulator) -> list[int]:
    """Every canary weight the cluster's default route is written with, in order (repeats dropped)."""
    seen: list[int] = []

    def hook(method: str, path: str, body: Any) -> None:
        if method == "PUT" and "/virtualservices/" in path and isinstance(body, dict):
            for route in body["spec"]["http"]:
                if route.get("name") == "lamia-default":
                    weight = {d["destination"]["subset"]: d["weight"] for d in route["route"]}["canary"]
                    if not seen or seen[-1] != weight:
                        seen.append(weight)

    emu.before_write(hook)
    return seen


def canary_now(emu: KubeEmulator) -> int:
    vs = emu.get_object(ISTIO_API, "VirtualService", NS, APP)
    assert vs is not None
    (route,) = [r for r in vs["spec"]["http"] if r.get("name") == "lamia-default"]
    return int({d["destination"]["subset"]: d["weight"] for d in route["route"]}["canary"])


def leased(emu: KubeEmulator) -> bool:
    vs = emu.get_object(ISTIO_API, "VirtualService", NS, APP)
    return vs is not None and lease_of(vs) is not None


def run_state(run_id: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(run_id))


def test_one_release_on_each_of_two_clusters_at_once(two_regions: TwoRegions) -> None:
    """The same app, namespace and versions on prod-eu and prod-us, released at the same time: each
    cluster's gateway moves by its own release, and each release is found, aborted or approved by
    its cluster's name."""
    add_both(two_regions)
    eu, us = two_regions.eu, two_regions.us
    for region, emu in (("prod-eu", eu), ("prod-us", us)):
        seed_application(emu, NS, APP, ["stable", "canary"])
        lamia("gateway", "apply", "-n", NS, "-a", APP, "--cluster", region,
              "--weights", "stable=100,canary=0")
    eu_writes, us_writes = canary_weights(eu), canary_weights(us)

    def release(region: str, policy: TimePolicy, **extra: Any) -> Background:
        params = ReleaseParameters(namespace=NS, app=APP, baseline="stable", target="canary", cluster=region,
                                   policy=policy, lock_wait_seconds=5, **extra)
        return Background(lambda: canary_release(params, return_state=True))

    # prod-us moves 10% and then waits far longer than the test: it only ends by its abort.
    us_run = release("prod-us", TimePolicy(step=10, interval=600))
    wait_until(lambda: canary_now(us) == 10, 60, "prod-us's first step")
    # prod-eu, started later (the newest run of shop/reviews), climbs to 75% and waits for approval.
    eu_run = release("prod-eu", TimePolicy(step=25, interval=1, max_weight=75), approval=True)
    us_lease = lease_of(us.get_object(ISTIO_API, "VirtualService", NS, APP) or {})
    assert us_lease is not None

    def eu_paused() -> bool:
        vs = eu.get_object(ISTIO_API, "VirtualService", NS, APP)
        held = lease_of(vs) if vs else None
        run = run_state(held.holder) if held else None
        return bool(run and run.state and run.state.is_paused())

    wait_until(eu_paused, 60, "prod-eu's release waiting for approval")
    # Both releases hold their cluster's lease at once, each with a slot of its own at Prefect.
    assert leased(eu) and leased(us)
    eu_lease = lease_of(eu.get_object(ISTIO_API, "VirtualService", NS, APP) or {})
    assert eu_lease is not None and eu_lease.holder != us_lease.holder
    assert limit_name(NS, APP, "prod-eu") != limit_name(NS, APP, "prod-us")
    with get_client(sync_client=True) as client:
        for region in ("prod-eu", "prod-us"):
            assert client.read_global_concurrency_limit_by_name(limit_name(NS, APP, region)).active_slots == 1
    assert (canary_now(eu), canary_now(us)) == (75, 10)
    assert eu_writes == [0, 25, 50, 75] and us_writes == [0, 10]

    status = json.loads(lamia("release", "status", "-a", APP, "-n", NS, "--cluster", "prod-us",
                              "-o", "json").stdout)
    assert status["release"]["flow_run_id"] == us_lease.holder and status["release"]["state"] == "Running"
    assert status["routes"] == {"default": {"stable": 90, "canary": 10}}

    # Without --cluster the newest running release (prod-eu's) is not taken for the one meant.
    for command in ("abort", "approve"):
        refused = runner.invoke(cli, ["release", command, "-a", APP, "-n", NS])
        assert refused.exit_code == 2 and "is on cluster prod-eu: say which cluster with --cluster prod-eu" \
            in refused.stderr, refused.stderr
    assert run_state(us_lease.holder).state.is_running() and run_state(eu_lease.holder).state.is_paused()
    # Abort names prod-us: its run is cancelled (not prod-eu's, the newer one), its baseline is back.
    aborted = lamia("release", "abort", "-a", APP, "-n", NS, "--cluster", "prod-us", "--timeout", "60")
    assert us_lease.holder in aborted.stdout
    assert us_run.join().name == "Cancelled"
    assert canary_now(us) == 0 and not leased(us)
    assert run_state(eu_lease.holder).state.is_paused(), "prod-eu's release goes on"

    lamia("release", "approve", "-a", APP, "-n", NS, "--cluster", "prod-eu")
    assert run_outcome(eu_run.join()) is Outcome.PROMOTED
    assert eu_writes == [0, 25, 50, 75, 100] and us_writes == [0, 10, 0]
    assert canary_now(eu) == 100 and canary_now(us) == 0

    # Each run is tagged with its cluster and found by it; its parameters name the cluster and hold
    # none of the saved credentials.
    for region, lease, other in (("prod-eu", eu_lease, us_lease), ("prod-us", us_lease, eu_lease)):
        run = run_state(lease.holder)
        assert cluster_tag(region) in run.tags
        assert run.parameters["params"]["cluster"] == region
        assert all(token not in json.dumps(run.parameters) for token in TOKENS.values())
        history = json.loads(lamia("release", "history", "-a", APP, "-n", NS, "--cluster", region,
                                   "-o", "json").stdout)
        ids = [h["flow_run_id"] for h in history]
        assert ids[0] == lease.holder and other.holder not in ids
