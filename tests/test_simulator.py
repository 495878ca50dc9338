"""The traffic simulator: routing by the VirtualService, versions' behaviour, exact counts,
the metrics it serves, its background thread and its command line."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.routing import Request
from lamia_sandbox.simulator import (
    BUCKETS,
    NEXUS_6P_CHROME,
    SERVICE_ROUTE,
    TrafficSimulator,
    VersionBehaviour,
    file_gateway_source,
    kubernetes_gateway_source,
    parse_version,
)
from tests.plugins.kube import CONTEXT
from tests.plugins.prometheus import virtual_service

ROOT = Path(__file__).resolve().parents[1]


def weights_vs(weights: dict[str, int]) -> dict[str, Any]:
    return virtual_service("shop", "ns", weights)


def make(
    versions: dict[str, VersionBehaviour] | None = None,
    source: Callable[[], dict[str, Any] | None] = lambda: None,
    **kw: Any,
) -> TrafficSimulator:
    versions = versions or {"v1": VersionBehaviour(), "v2": VersionBehaviour()}
    return TrafficSimulator("ns", "shop", versions, gateway_source=source, seed=kw.pop("seed", 1), **kw)


@pytest.fixture
def serving() -> Iterator[list[TrafficSimulator]]:
    """Simulators put here are stopped after the test."""
    sims: list[TrafficSimulator] = []
    yield sims
    for s in sims:
        s.stop()


def scrape(sim: TrafficSimulator) -> dict[str, Any]:
    with urllib.request.urlopen(sim.metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def wait(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# --- routing and behaviour, fast-forwarded -------------------------------------------------------


def test_without_a_virtual_service_the_service_splits_evenly() -> None:
    sim = make({"v1": VersionBehaviour(), "v2": VersionBehaviour(), "v3": VersionBehaviour()})
    sim.step(300)
    c = sim.counts()
    assert c["by_version"] == {"v1": 100, "v2": 100, "v3": 100}
    assert c["by_route"] == {SERVICE_ROUTE: {"v1": 100, "v2": 100, "v3": 100}}
    assert c["total"] == 300 and c["unrouted"] == 0


def test_weights_of_the_virtual_service_are_followed() -> None:
    sim = make(source=lambda: weights_vs({"v1": 90, "v2": 10}))
    sim.step(5000)
    c = sim.counts()
    share = c["by_version"]["v2"] / 5000
    assert abs(share - 0.10) < 5 * math.sqrt(0.1 * 0.9 / 5000)
    assert c["by_route"] == {"lamia-default": c["by_version"]}


def test_a_new_virtual_service_is_picked_up() -> None:
    current: dict[str, Any] = {"vs": weights_vs({"v1": 100, "v2": 0})}
    sim = make(source=lambda: current["vs"], refresh_interval=0)
    sim.step(100)
    current["vs"] = weights_vs({"v1": 0, "v2": 100})
    sim.step(50)
    current["vs"] = None
    sim.step(10)
    c = sim.counts()
    assert c["by_route"] == {"lamia-default": {"v1": 100, "v2": 50}, SERVICE_ROUTE: {"v1": 5, "v2": 5}}


def test_the_virtual_service_is_read_at_most_every_refresh_interval() -> None:
    reads: list[float] = []

    def source() -> dict[str, Any]:
        reads.append(time.monotonic())
        return weights_vs({"v1": 100})

    sim = make(source=source, refresh_interval=3600)
    sim.step(200)
    assert len(reads) == 1
    sim.refresh_gateway()
    assert len(reads) == 2


def test_a_failing_source_keeps_the_last_virtual_service() -> None:
    state = {"fail": False}

    def source() -> dict[str, Any]:
        if state["fail"]:
            raise ConnectionError("API server down")
        return weights_vs({"v1": 0, "v2": 100})

    sim = make(source=source, refresh_interval=0)
    sim.step(10)
    state["fail"] = True
    sim.step(10)
    assert sim.counts()["by_version"] == {"v1": 0, "v2": 20}


def test_conditional_routes_and_requests_nothing_serves() -> None:
    vs = weights_vs({"v1": 100, "v2": 0})
    vs["spec"]["http"].insert(0, {
        "name": "lamia-android",
        "match": [{"headers": {"user-agent": {"regex": ".*Nexus 6P.*"}}}],
        "route": [{"destination": {"host": "shop", "subset": "v2"}, "weight": 100}],
    })
    vs["spec"]["http"].insert(1, {
        "name": "ghost",
        "match": [{"uri": {"exact": "/ghost"}}],
        "route": [{"destination": {"host": "shop", "subset": "v9"}, "weight": 100}],
    })
    sim = make(source=lambda: vs)
    android = sim.handle(Request(headers={"User-Agent": NEXUS_6P_CHROME}, path="/"))
    assert android is not None and (android.route, android.version) == ("lamia-android", "v2")
    assert sim.handle(Request(path="/ghost")) is None  # subset without pods
    outcomes = sim.step(2000)
    c = sim.counts()
    android_n = sum(1 for o in outcomes if o and o.route == "lamia-android")
    # The default mix has Nexus 6P traffic, all of which, and only which, reaches v2.
    assert android_n > 0
    assert c["by_route"]["lamia-android"] == {"v2": android_n + 1}
    assert c["by_route"]["lamia-default"] == {"v1": 2000 - android_n}
    assert c["unrouted"] == 1


def test_behaviour_error_rate_code_and_latency() -> None:
    always = VersionBehaviour(error_rate=1.0, error_code=500, latency_ms_median=300, latency_sigma=0)
    sim = make({"v1": always})
    outcomes = [o for o in sim.step(20) if o]
    assert {(o.code, o.latency_ms) for o in outcomes} == {(500, 300.0)}
    sim.set_behaviour("v1", error_rate=0.0)
    assert sim.behaviour("v1").latency_ms_median == 300
    assert all(o and o.code == 200 for o in sim.step(20))
    sim.set_behaviour("v1", VersionBehaviour(error_rate=0.25, error_code=503))
    sim.step(4000)
    codes = sim.counts()["by_version_code"]["v1"]
    assert codes[500] == 20 and codes[200] > 0
    assert abs(codes[503] / 4000 - 0.25) < 5 * math.sqrt(0.25 * 0.75 / 4000)
    with pytest.raises(ValidationError):
        sim.set_behaviour("v1", error_rate=1.5)


def test_latency_is_log_normal_around_the_median() -> None:
    sim = make({"v1": VersionBehaviour(latency_ms_median=40, latency_sigma=0.5)})
    lat = sorted(o.latency_ms for o in sim.step(4001) if o)
    median = lat[len(lat) // 2]
    assert 36 < median < 44
    hist = dict(sim.histogram("v1"))
    assert hist[math.inf] == 4001
    assert hist[50] == sum(1 for x in lat if x <= 50)


def test_adding_a_version_at_runtime_joins_the_service() -> None:
    sim = make({"v1": VersionBehaviour()})
    sim.set_behaviour("v2", error_rate=0.5)
    assert sim.versions == ["v1", "v2"]
    sim.step(10)
    assert sim.counts()["by_version"] == {"v1": 5, "v2": 5}


def test_same_seed_same_traffic() -> None:
    vs = weights_vs({"v1": 50, "v2": 50})
    behaviour = {"v1": VersionBehaviour(error_rate=0.2), "v2": VersionBehaviour(error_rate=0.4)}
    a = make(behaviour, source=lambda: vs, seed=5).step(500)
    b = make(behaviour, source=lambda: vs, seed=5).step(500)
    c = make(behaviour, source=lambda: vs, seed=6).step(500)
    assert a == b
    assert a != c


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one version"):
        TrafficSimulator("ns", "shop", {}, gateway_source=lambda: None)
    with pytest.raises(ValueError, match="rate"):
        make(rate=-1)
    with pytest.raises(RuntimeError, match="not serving"):
        _ = make().metrics_url


# --- what it serves ------------------------------------------------------------------------------


def test_served_metrics_equal_the_counts_with_istio_labels_and_buckets(
    serving: list[TrafficSimulator],
) -> None:
    vs = weights_vs({"v1": 70, "v2": 30, "v3": 0})
    sim = make({"v1": VersionBehaviour(), "v2": VersionBehaviour(error_rate=0.3), "v3": VersionBehaviour()},
               source=lambda: vs)
    serving.append(sim.serve())
    primed = scrape(sim)["istio_requests"]
    # Known series are served at zero before any request.
    zeros = {(s.labels["destination_version"], s.labels["response_code"], s.value) for s in primed.samples}
    assert zeros == {("v1", "200", 0.0), ("v2", "200", 0.0), ("v2", "503", 0.0), ("v3", "200", 0.0)}
    sim.step(1000)
    fams = scrape(sim)
    counts = sim.counts()["by_version_code"]
    requests = fams["istio_requests"]
    assert requests.type == "counter"
    served = {(s.labels["destination_version"], int(s.labels["response_code"])): s.value
              for s in requests.samples if s.name == "istio_requests_total"}
    assert served == {(v, code): n for v, codes in counts.items() for code, n in codes.items()}
    one = next(s for s in requests.samples if s.labels["destination_version"] == "v2")
    assert one.labels | {"response_code": "x"} == {
        "reporter": "destination", "source_workload": "istio-ingressgateway",
        "source_workload_namespace": "istio-system", "source_app": "istio-ingressgateway",
        "destination_workload": "shop-v2", "destination_workload_namespace": "ns", "destination_app": "shop",
        "destination_version": "v2", "destination_service": "shop.ns.svc.cluster.local",
        "destination_service_name": "shop", "destination_service_namespace": "ns", "request_protocol": "http",
        "response_code": "x", "response_flags": "-", "connection_security_policy": "mutual_tls",
    }
    durations = fams["istio_request_duration_milliseconds"]
    assert durations.type == "histogram"
    v1_buckets = [(s.labels["le"], s.value) for s in durations.samples
                  if s.name.endswith("_bucket") and s.labels["destination_version"] == "v1"]
    assert [float(le) for le, _ in v1_buckets] == [*BUCKETS, math.inf]
    assert [n for _, n in v1_buckets] == [n for _, n in sim.histogram("v1")]
    counts_v1 = next(s.value for s in durations.samples
                     if s.name.endswith("_count") and s.labels["destination_version"] == "v1")
    assert counts_v1 == counts["v1"][200]
    assert not any(s.name.endswith("_created") for f in fams.values() for s in f.samples)


def test_without_priming_series_appear_with_their_first_request(serving: list[TrafficSimulator]) -> None:
    sim = make(prime=False)
    serving.append(sim.serve())
    assert scrape(sim)["istio_requests"].samples == []
    sim.step(1)
    assert len(scrape(sim)["istio_requests"].samples) == 1


def test_background_traffic_flows_and_stops(serving: list[TrafficSimulator]) -> None:
    sim = make(rate=200.0)
    serving.append(sim)
    with sim:
        wait(lambda: sim.counts()["total"] >= 100)
    before = sim.counts()["total"]
    time.sleep(0.2)
    assert sim.counts()["total"] == before >= 100
    with pytest.raises(RuntimeError):
        _ = sim.metrics_url


def test_stop_traffic_keeps_serving(serving: list[TrafficSimulator]) -> None:
    sim = make(rate=100.0)
    serving.append(sim.start())
    wait(lambda: sim.counts()["total"] >= 20)
    sim.stop_traffic()
    total = sim.counts()["total"]
    time.sleep(0.15)
    served = sum(s.value for s in scrape(sim)["istio_requests"].samples)
    assert served == total == sim.counts()["total"]


# --- the demo's command line ---------------------------------------------------------------------


def test_parse_version() -> None:
    assert parse_version("v2,error_rate=0.3,error_code=500") == (
        "v2", VersionBehaviour(error_rate=0.3, error_code=500))
    assert parse_version("v1") == ("v1", VersionBehaviour())
    with pytest.raises(ValueError, match="FIELD=VALUE"):
        parse_version("v1,speed=3")
    with pytest.raises(ValidationError):
        parse_version("v1,error_rate=2")


def test_kubernetes_gateway_source_follows_the_cluster(kube_emulator: KubeEmulator, kubeconfig: Path) -> None:
    source = kubernetes_gateway_source("ns", "shop", kubeconfig=str(kubeconfig), context=CONTEXT)
    kube_emulator.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}})
    assert source() is None
    sim = make(source=source, refresh_interval=0)
    sim.step(4)
    kube_emulator.add_object(weights_vs({"v1": 0, "v2": 100}))
    sim.step(3)
    kube_emulator.replace_object(weights_vs({"v1": 100, "v2": 0}))
    sim.step(5)
    by_route = sim.counts()["by_route"]
    assert by_route == {SERVICE_ROUTE: {"v1": 2, "v2": 2}, "lamia-default": {"v1": 5, "v2": 3}}


def test_file_gateway_source(tmp_path: Path) -> None:
    path = tmp_path / "vs.yaml"
    source = file_gateway_source(str(path))
    assert source() is None
    path.write_text(yaml.safe_dump(weights_vs({"v1": 100})))
    assert source() == weights_vs({"v1": 100})


def test_command_line_serves_routed_traffic_until_terminated(tmp_path: Path) -> None:
    vs_file = tmp_path / "vs.yaml"
    vs_file.write_text(yaml.safe_dump(weights_vs({"v1": 0, "v2": 100})))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lamia_sandbox.simulator", "--namespace", "ns", "--app", "shop",
         "--version", "v1", "--version", "v2,error_rate=1,error_code=500", "--vs-file", str(vs_file),
         "--rate", "200", "--seed", "3"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")

        def served() -> dict[tuple[str, str], float]:
            with urllib.request.urlopen(url, timeout=5) as resp:
                fams = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
            return {(s.labels["destination_version"], s.labels["response_code"]): s.value
                    for s in fams["istio_requests"].samples}

        wait(lambda: served().get(("v2", "500"), 0) >= 20)
        assert served().get(("v1", "200"), 0) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "requests" in err


# --- public traffic through a Gateway ------------------------------------------------------------


def exposed_vs(weights: dict[str, int], gateways: list[str] | None) -> dict[str, Any]:
    vs = weights_vs(weights)
    vs["spec"]["hosts"] = ["shop", "shop.example.com"]
    if gateways is not None:
        vs["spec"]["gateways"] = gateways
    return vs


def test_public_traffic_follows_the_virtual_service_bound_to_its_gateway() -> None:
    current = {"vs": exposed_vs({"v1": 100, "v2": 0}, ["mesh", "ns/shop-gateway"])}
    sim = make(source=lambda: current["vs"], refresh_interval=0.0)
    sim.set_public_traffic("shop.example.com", "ns/shop-gateway", share=0.5)
    outcomes = [o for o in sim.step(400) if o is not None]
    public = [o for o in outcomes if o.gateway == "ns/shop-gateway"]
    assert 100 < len(public) < 300, "about half the requests come in through the gateway"
    assert {o.version for o in outcomes} == {"v1"}
    current["vs"] = exposed_vs({"v1": 0, "v2": 100}, ["mesh", "ns/shop-gateway"])
    assert {o.version for o in sim.step(200) if o is not None} == {"v2"}, "both kinds shift together"
    counts = sim.counts()
    assert set(counts["by_gateway"]) == {"mesh", "ns/shop-gateway"}
    assert sum(counts["by_gateway"]["ns/shop-gateway"].values()) + sum(
        counts["by_gateway"]["mesh"].values()) == counts["total"] == 600
    request = sim.public_request()
    assert request.authority == "shop.example.com" and request.header("Host") == "shop.example.com"


def test_public_traffic_without_a_bound_virtual_service_finds_no_route() -> None:
    current: dict[str, Any] = {"vs": exposed_vs({"v1": 100, "v2": 0}, None)}
    sim = make(source=lambda: current["vs"], refresh_interval=0.0)
    sim.set_public_traffic("shop.example.com", "ns/shop-gateway", share=1.0)
    assert sim.step(20) == [None] * 20
    assert sim.counts()["unrouted_by_gateway"] == {"ns/shop-gateway": 20}
    current["vs"] = None
    assert sim.handle(sim.public_request()) is None, "no VirtualService: the gateway has no route either"
    # A VirtualService bound to the gateway only leaves mesh traffic to the Service's round robin.
    current["vs"] = exposed_vs({"v1": 100, "v2": 0}, ["ns/shop-gateway"])
    sim.set_public_traffic(None)
    assert {o.version for o in sim.step(20) if o is not None} == {"v1", "v2"}
    assert {o.route for o in sim.step(4) if o is not None} == {SERVICE_ROUTE}
    with pytest.raises(ValueError, match="NS/NAME"):
        sim.set_public_traffic("shop.example.com", "shop-gateway")
    with pytest.raises(RuntimeError):
        sim.public_request()
