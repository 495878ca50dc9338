"""`lamia doctor` against real servers: the API-server emulator, the session's Prometheus scraping a
traffic simulator, and the session's Prefect server. Each ✖ is driven through the servers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from flows.cli import app
from lamia_core.istio import ISTIO_API
from lamia_core.kube import KubeAdapter, KubeConfig
from lamia_core.models import Gateway, Route, parse_weights
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.prometheus_server import PrometheusServer
from lamia_sandbox.seed import restart_deployment, seed_application
from lamia_sandbox.simulator import TrafficSimulator, VersionBehaviour, kubernetes_gateway_source
from tests.plugins.kube import CONTEXT

pytestmark = pytest.mark.integration

APP = "reviews"
POOL = "lamia-doctor"
DEPLOYMENT = "canary-release/doctor-check"
WORKER = "system:serviceaccount:lamia-system:lamia"
ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def lamia(*args: str) -> Result:
    return runner.invoke(app, list(args))


def checks(result: Result) -> dict[str, dict[str, Any]]:
    data = json.loads(result.stdout)
    return {c["id"]: c for c in data["checks"]}


@pytest.fixture(scope="module")
def prefect_deployment(prefect_server: Any) -> str:
    """The release flow deployed on a process work pool of its own, with no worker yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from flows.release import canary_release

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)
    canary_release.to_deployment(name="doctor-check").apply(work_pool_name=POOL)
    return DEPLOYMENT


def heartbeat() -> None:
    """What a worker of the pool sends every few seconds while it runs."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.send_worker_heartbeat(POOL, "process-worker-3f2a", heartbeat_interval_seconds=30)


class Cluster:
    def __init__(self, emulator: KubeEmulator, kubeconfig: Path, namespace: str) -> None:
        self.emulator, self.namespace = emulator, namespace
        self.kube = ["--kubeconfig", str(kubeconfig), "--context", CONTEXT]
        self.config = KubeConfig(kubeconfig=str(kubeconfig), context=CONTEXT)

    def doctor(self, *args: str) -> Result:
        return lamia("doctor", "-n", self.namespace, "--app", APP, "--deployment", DEPLOYMENT, "-o", "json",
                     *args, *self.kube)


def traffic(prometheus: PrometheusServer, cluster: Cluster, versions: list[str]) -> TrafficSimulator:
    """Requests for ``versions`` routed by the app's VirtualService, scraped by the session's Prometheus."""
    source = kubernetes_gateway_source(cluster.namespace, APP, kubeconfig=cluster.config.kubeconfig,
                                       context=CONTEXT)
    sim = TrafficSimulator(cluster.namespace, APP, {v: VersionBehaviour() for v in versions},
                           gateway_source=source, seed=3).serve()
    prometheus.add_target(sim.metrics_url)
    sim.step(200)
    selector = f'destination_workload_namespace="{cluster.namespace}",destination_app="{APP}"'
    prometheus.wait_for(f"count by (destination_version) (istio_requests_total{{{selector}}})",
                        lambda r: len(r) == len(versions), timeout=60)
    return sim


@pytest.fixture
def healthy(kube_emulator: KubeEmulator, kubeconfig: Path, prometheus_server: PrometheusServer,
            prefect_deployment: str, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """An application ready for releases: injected pods, a gateway, metrics for both versions."""
    namespace = "doctor-" + request.node.name.replace("_", "-")[5:30].strip("-")
    kube_emulator.add_object({"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": namespace, "labels": {"istio-injection": "enabled"}}})
    seed_application(kube_emulator, namespace, APP, ["stable", "canary"])
    cluster = Cluster(kube_emulator, kubeconfig, namespace)
    with KubeAdapter(cluster.config) as adapter:
        application = adapter.discover_application(namespace, APP)
        route = Route(weights=parse_weights("stable=50,canary=50"))
        adapter.apply_gateway(Gateway(application=application, routes=(route,)))
    sim = traffic(prometheus_server, cluster, ["stable", "canary"])
    heartbeat()
    try:
        yield cluster
    finally:
        prometheus_server.remove_target(sim.metrics_url)
        sim.stop()


def test_a_ready_application_passes_every_check(
        healthy: Cluster, prometheus_server: PrometheusServer) -> None:
    result = healthy.doctor("--prometheus", prometheus_server.url, "--as", "lamia-system/lamia")
    assert result.exit_code == 0, result.stdout
    found = checks(result)
    assert {k: c["status"] for k, c in found.items() if c["status"] != "pass"} == {}
    assert found["scrape-interval"]["detail"].startswith("job istio-simulator: every 1 s")
    assert found["prefect-worker"]["detail"] == f"work pool {POOL}: process-worker-3f2a"
    text = lamia("doctor", "-n", healthy.namespace, "--app", APP, "--deployment", DEPLOYMENT,
                 "--prometheus", prometheus_server.url, *healthy.kube)
    assert text.exit_code == 0
    assert text.stdout.splitlines()[1] == "✔ Istio's networking.istio.io/v1 is served (Istio ≥ 1.22)"
    assert text.stdout.endswith("14 checks: 14 passed, 0 failed, 0 not checked\n")


def test_an_older_istio_fails_the_first_check(healthy: Cluster) -> None:
    healthy.emulator.serve_versions("networking.istio.io", ("v1beta1", "v1alpha3"))
    result = healthy.doctor()
    assert result.exit_code == 1
    istio = checks(result)["istio-api"]
    assert istio["status"] == "fail" and "v1beta1, v1alpha3 only" in istio["detail"]
    assert istio["fix"] == "upgrade Istio to 1.22 or later (istioctl upgrade)"


def test_pods_that_predate_injection_are_told_to_restart(
        kube_emulator: KubeEmulator, kubeconfig: Path, prefect_deployment: str) -> None:
    seed_application(kube_emulator, "legacy", APP, ["stable", "canary"])
    cluster = Cluster(kube_emulator, kubeconfig, "legacy")
    found = checks(cluster.doctor())
    assert found["injection"]["status"] == "fail" and found["injection"]["fix"] == "lamia cluster init legacy"
    assert lamia("cluster", "init", "legacy", *cluster.kube).exit_code == 0
    found = checks(cluster.doctor())
    assert found["injection"]["status"] == "pass"
    sidecars = found["sidecars"]
    assert sidecars["status"] == "fail" and "(they predate injection)" in sidecars["detail"]
    assert sidecars["fix"] == ("kubectl rollout restart -n legacy deployment/reviews-canary "
                               "deployment/reviews-stable")
    for name in ("reviews-canary", "reviews-stable"):
        restart_deployment(kube_emulator, "legacy", name)
    assert checks(cluster.doctor())["sidecars"]["status"] == "pass"


def test_labels_services_and_an_unadoptable_virtual_service(healthy: Cluster) -> None:
    emu, ns = healthy.emulator, healthy.namespace
    canary = emu.get_object("apps/v1", "Deployment", ns, "reviews-canary")
    assert canary is not None
    del canary["metadata"]["labels"]["deployment"]
    emu.replace_object(canary)
    service = emu.get_object("v1", "Service", ns, APP)
    assert service is not None
    emu.add_object({**service, "metadata": {"name": "reviews-public", "namespace": ns,
                                            "labels": {"app.kubernetes.io/managed-by": "Helm"}}})
    vs = emu.get_object(ISTIO_API, "VirtualService", ns, APP)
    assert vs is not None
    vs["spec"]["http"].insert(0, {"name": "maintenance", "route": [
        {"destination": {"host": "maintenance-page", "port": {"number": 80}}}]})
    emu.replace_object(vs)
    found = checks(healthy.doctor())
    assert "reviews-canary lacks deployment" in found["labels"]["detail"]
    assert "Services reviews, reviews-public all select app=reviews" in found["service"]["detail"]
    assert found["service"]["fix"] == "say which one fronts the application with --service NAME"
    canary["metadata"]["labels"]["deployment"] = "reviews-canary"
    emu.replace_object(canary)
    again = checks(healthy.doctor("--service", "reviews"))
    assert again["labels"]["status"] == "pass"
    assert again["service"]["status"] == "pass"
    assert again["adoption"]["status"] == "fail"
    assert "'maintenance'" in again["adoption"]["detail"]


def test_metrics_and_scrape_interval(kube_emulator: KubeEmulator, kubeconfig: Path,
                                     prometheus_server: PrometheusServer, prefect_deployment: str) -> None:
    kube_emulator.add_object({"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": "quiet", "labels": {"istio-injection": "enabled"}}})
    seed_application(kube_emulator, "quiet", APP, ["stable", "canary"])
    cluster = Cluster(kube_emulator, kubeconfig, "quiet")
    url = prometheus_server.url
    found = checks(cluster.doctor("--prometheus", url))
    assert found["metrics"]["status"] == "fail"
    assert "no istio_requests_total series" in found["metrics"]["detail"]
    sim = traffic(prometheus_server, cluster, ["stable"])
    try:
        found = checks(cluster.doctor("--prometheus", url, "--window", "2s"))
        assert "no series with destination_version=canary (seen: stable)" in found["metrics"]["detail"]
        scrape = found["scrape-interval"]
        assert scrape["status"] == "fail"
        assert "window 2s is shorter than 4 scrape intervals" in scrape["detail"]
        assert scrape["fix"].startswith("use --window 4s or longer")
    finally:
        prometheus_server.remove_target(sim.metrics_url)
        sim.stop()
    down = checks(cluster.doctor("--prometheus", "http://127.0.0.1:9"))
    assert down["prometheus"]["status"] == "fail" and down["metrics"]["status"] == "skip"


def test_access_of_the_worker_from_the_rbac_manifest(healthy: Cluster) -> None:
    role = next(d for d in yaml.safe_load_all((ROOT / "deployments" / "rbac.yaml").read_text())
                if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == "lamia")
    healthy.emulator.set_access(role["rules"], user=WORKER)
    found = checks(healthy.doctor("--as", "lamia-system/lamia"))
    assert found["access-as"]["status"] == "pass" and found["access-as-optional"]["status"] == "pass"
    healthy.emulator.set_access([r for r in role["rules"] if "virtualservices" not in r["resources"]],
                                user=WORKER)
    result = healthy.doctor("--as", "lamia-system/lamia")
    assert result.exit_code == 1
    denied = checks(result)["access-as"]
    assert denied["status"] == "fail" and "update virtualservices.networking.istio.io" in denied["detail"]
    # Impersonation itself refused: the review fails, and says so.
    healthy.emulator.set_access(
        [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "create"]}])
    refused = checks(healthy.doctor("--as", "lamia-system/lamia"))["access-as"]
    assert refused["status"] == "fail" and "cannot impersonate" in refused["detail"]


def test_prefect_deployment_and_worker(healthy: Cluster, prefect_deployment: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate

    found = checks(healthy.doctor("--deployment", "canary-release/missing-one"))
    assert found["prefect-deployment"]["status"] == "fail"
    assert "has no deployment canary-release/missing-one" in found["prefect-deployment"]["detail"]
    with get_client(sync_client=True) as client:
        client.update_work_pool(POOL, WorkPoolUpdate(is_paused=True))
    try:
        paused = checks(healthy.doctor())["prefect-worker"]
        assert paused["status"] == "fail" and paused["fix"] == f"prefect work-pool resume {POOL}"
    finally:
        with get_client(sync_client=True) as client:
            client.update_work_pool(POOL, WorkPoolUpdate(is_paused=False))
    down = checks(healthy.doctor("--prefect-api", "http://127.0.0.1:9/api"))
    assert down["prefect-api"]["status"] == "fail" and down["prefect-deployment"]["status"] == "skip"


@pytest.mark.parametrize(("args", "fragment"), [
    (["-n", "Shop", "--app", APP], "namespace 'Shop' is not a valid DNS-1123 label"),
    (["-n", "shop", "--app", APP, "--window", "1 minute"], "is not a Prometheus duration"),
    (["-n", "shop", "--app", APP, "--as", "lamia system/lamia"], "--as 'lamia system/lamia'"),
    (["-n", "shop", "--app", APP, "--deployment", "canary-release"], "is not FLOW/DEPLOYMENT"),
])
def test_bad_input_is_one_line_and_exit_2(kubeconfig: Path, args: list[str], fragment: str) -> None:
    result = lamia("doctor", *args, "--kubeconfig", str(kubeconfig))
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith("lamia: error: ") and fragment in result.stderr
