"""The doctor's checks as pure functions: each passing on healthy facts, and each failing with its fix."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from lamia_core.doctor import (
    NEEDED_ACCESS,
    OPTIONAL_ACCESS,
    Check,
    Facts,
    Failed,
    Report,
    report_json,
    run_checks,
    scrape_interval,
)
from lamia_core.istio import render_destination_rule, render_virtual_service
from lamia_core.models import Application, Gateway, Route, Version, Weights
from lamia_sandbox.seed import application_objects, pod_objects

NS, APP = "shop", "reviews"
WORKER = "system:serviceaccount:lamia-system:lamia"
CONFIG = """global:
  scrape_interval: 15s
scrape_configs:
- job_name: kubernetes-pods
  scrape_interval: 5s
- job_name: federate
"""


def healthy() -> Facts:
    objects = application_objects(NS, APP, ["1.4.0", "1.5.0-rc.1"])
    namespace, service, *deployments = objects
    namespace["metadata"]["labels"] = {"istio-injection": "enabled"}
    pods = [p for d in deployments for p in pod_objects(d, sidecar=True)]
    app = Application(namespace=NS, name=APP, versions=tuple(
        Version(name=v, deployment=f"{APP}-{v}") for v in ("1.4.0", "1.5.0-rc.1")))
    gateway = Gateway(application=app, routes=(Route(weights=Weights({"1.4.0": 100, "1.5.0-rc.1": 0})),))
    grants = {g: (True, "") for g in (*NEEDED_ACCESS, *OPTIONAL_ACCESS)}
    return Facts(
        namespace=NS, app=APP, istio_versions=["v1", "v1beta1", "v1alpha3"], kube_gathered=True,
        namespace_object=namespace, deployments=deployments, pods=pods, services=[service],
        virtual_service=render_virtual_service(gateway), destination_rule=render_destination_rule(app),
        access={"": grants, WORKER: dict(grants)},
        prometheus_url="http://prometheus.monitoring:9090",
        series=[{"metric": {"destination_version": v, "job": "kubernetes-pods"}, "value": [0, "4"]}
                for v in ("1.4.0", "1.5.0-rc.1")],
        prometheus_config=CONFIG, window="1m",
        prefect_api="http://prefect.lamia-system:4200/api",
        deployment={"work_pool_name": "lamia-k8s", "status": "READY"},
        workers=[{"name": "prefect-worker-7d9f", "status": "ONLINE"}],
    )


def check(facts: Facts, id: str) -> Check:
    [found] = [c for c in run_checks(facts, as_identity=WORKER).checks if c.id == id]
    return found


def failing(facts: Facts, id: str, *fragments: str) -> Check:
    c = check(facts, id)
    assert c.status == "fail", c
    assert c.fix, "every ✖ says how to fix it"
    for f in fragments:
        assert f in c.detail + " | " + c.fix, (f, c)
    return c


def test_healthy_facts_pass_every_check_in_order() -> None:
    report = run_checks(healthy(), as_identity=WORKER)
    assert [c.id for c in report.checks] == [
        "istio-api", "injection", "sidecars", "labels", "service", "adoption", "prometheus", "metrics",
        "scrape-interval", "access", "access-optional", "access-as", "access-as-optional",
        "prefect-api", "prefect-deployment", "prefect-worker"]
    assert all(c.status == "pass" for c in report.checks), [c for c in report.checks if c.status != "pass"]
    assert report.ok
    text = report.text()
    assert text.startswith("lamia doctor: application reviews in namespace shop\n✔ ")
    assert text.endswith("16 checks: 16 passed, 0 failed, 0 not checked\n")
    data = json.loads(report_json(report))
    assert data["ok"] is True and len(data["checks"]) == 16


def test_older_istio_and_no_istio() -> None:
    f = healthy()
    f.istio_versions = ["v1beta1", "v1alpha3"]
    failing(f, "istio-api", "serves networking.istio.io v1beta1, v1alpha3 only", "istioctl upgrade")
    f.istio_versions = []
    failing(f, "istio-api", "Istio is not installed", "istioctl install")
    f.istio_versions = Failed("cannot reach the Kubernetes API server at https://10.0.0.1:6443")
    failing(f, "istio-api", "cannot reach", "kubeconfig")


@pytest.mark.parametrize(("labels", "detail"), [
    ({}, "neither the istio-injection=enabled nor an istio.io/rev label"),
    ({"istio-injection": "disabled", "istio.io/rev": "1-24"}, "istio-injection=disabled"),
])
def test_namespace_without_injection(labels: dict[str, str], detail: str) -> None:
    f = healthy()
    assert isinstance(f.namespace_object, dict)
    f.namespace_object["metadata"]["labels"] = labels
    failing(f, "injection", detail, "lamia cluster init shop")
    f.namespace_object = None
    failing(f, "injection", "namespace shop does not exist")


def test_a_revision_label_counts_as_injection() -> None:
    f = healthy()
    assert isinstance(f.namespace_object, dict)
    f.namespace_object["metadata"]["labels"] = {"istio.io/rev": "1-24-2"}
    assert check(f, "injection").status == "pass"


def test_pods_that_predate_injection_are_told_to_restart() -> None:
    f = healthy()
    assert isinstance(f.deployments, list) and isinstance(f.pods, list)
    canary = f.deployments[1]
    stable_pods = [p for p in f.pods if "1.5.0-rc.1" not in p["metadata"]["name"]]
    f.pods = stable_pods + pod_objects(canary, sidecar=False)
    failing(f, "sidecars", "pods of reviews-1.5.0-rc.1 have no istio-proxy (they predate injection)",
            "kubectl rollout restart -n shop deployment/reviews-1.5.0-rc.1")
    # Without injection the fix enables it first.
    assert isinstance(f.namespace_object, dict)
    f.namespace_object["metadata"]["labels"] = {}
    c = failing(f, "sidecars")
    assert c.fix.startswith("lamia cluster init shop, then kubectl rollout restart")


def test_native_sidecars_count_and_opting_out_and_empty_versions_do_not() -> None:
    f = healthy()
    assert isinstance(f.deployments, list) and isinstance(f.pods, list)
    for p in f.pods:
        proxy = p["spec"]["containers"].pop()
        p["spec"]["initContainers"] = [{**proxy, "restartPolicy": "Always"}]
    assert check(f, "sidecars").status == "pass"
    stable = f.deployments[0]
    stable["spec"]["template"]["metadata"]["annotations"] = {"sidecar.istio.io/inject": "false"}
    f.pods = [p for p in f.pods if "1.5.0-rc.1" not in p["metadata"]["name"]]
    failing(f, "sidecars", 'reviews-1.4.0 opt out with sidecar.istio.io/inject: "false"',
            "reviews-1.5.0-rc.1 has no pods", "kubectl scale -n shop deployment/reviews-1.5.0-rc.1")


def test_missing_labels_are_named_with_the_command_that_adds_them() -> None:
    f = healthy()
    assert isinstance(f.deployments, list)
    del f.deployments[1]["metadata"]["labels"]["deployment"]
    del f.deployments[0]["spec"]["template"]["metadata"]["labels"]["version"]
    failing(f, "labels", "reviews-1.5.0-rc.1 lacks deployment", "kubectl label -n shop "
            "deployment/reviews-1.5.0-rc.1 deployment=reviews-1.5.0-rc.1", "pod template lacks")
    f.deployments = []
    failing(f, "labels", "no Deployments labelled app=reviews in namespace shop")


def test_two_deployments_of_one_version() -> None:
    f = healthy()
    assert isinstance(f.deployments, list)
    twin = copy.deepcopy(f.deployments[0])
    twin["metadata"]["name"] = "reviews-1.4.0-blue"
    f.deployments.append(twin)
    failing(f, "labels", "version=1.4.0 is on reviews-1.4.0, reviews-1.4.0-blue", "exactly one Deployment")


def test_service_must_be_one_or_named() -> None:
    f = healthy()
    assert isinstance(f.services, list)
    canary_only = copy.deepcopy(f.services[0])
    canary_only["metadata"]["name"] = "reviews-canary"
    canary_only["spec"]["selector"] = {"app": APP, "version": "1.5.0-rc.1"}
    f.services.append(canary_only)
    assert check(f, "service").status == "pass", "a Service of one version does not count"
    second = copy.deepcopy(f.services[0])
    second["metadata"]["name"] = "reviews-public"
    f.services.append(second)
    failing(f, "service", "Services reviews, reviews-public all select app=reviews", "--service NAME")
    f.service = "reviews-public"
    assert check(f, "service").status == "pass"
    f.service = "reviews-canary"
    failing(f, "service", "Service reviews-canary does not select app=reviews")
    f.services = []
    f.service = None
    failing(f, "service", "no Service in namespace shop selects app=reviews")


def test_adoption_says_why_not() -> None:
    f = healthy()
    assert isinstance(f.virtual_service, dict)
    f.virtual_service["spec"]["hosts"] = ["ratings"]
    failing(f, "adoption", "routes hosts ratings", "lamia gateway apply -n shop --app reviews")
    f.virtual_service = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                         "metadata": {"name": APP, "namespace": NS},
                         "spec": {"hosts": [APP], "http": [{"name": "everything", "route": [
                             {"destination": {"host": APP, "subset": "1.4.0"}}]}]}}
    failing(f, "adoption", "has no match and comes before Lamia's routes")
    f.virtual_service = None
    f.destination_rule = None
    assert "none yet" in check(f, "adoption").detail


def test_prometheus_checks() -> None:
    f = healthy()
    f.series = f.series[:1] if isinstance(f.series, list) else None
    failing(f, "metrics", "no series with destination_version=1.5.0-rc.1 (seen: 1.4.0)", "version label")
    f.series = []
    failing(f, "metrics", "no istio_requests_total series for app reviews", "15090")
    f.prometheus_error = "cannot reach Prometheus at http://prometheus.monitoring:9090"
    failing(f, "prometheus", "cannot reach")
    assert check(f, "metrics").status == "skip" and check(f, "scrape-interval").status == "skip"
    f.prometheus_url = None
    skipped = check(f, "prometheus")
    assert skipped.status == "skip" and "--prometheus" in skipped.detail
    assert run_checks(f).ok, "Prometheus not asked for: nothing fails"


def test_scrape_interval_against_the_window() -> None:
    assert scrape_interval(CONFIG, "kubernetes-pods") == 5.0
    assert scrape_interval(CONFIG, "federate") == 15.0 and scrape_interval(CONFIG, None) == 15.0
    assert scrape_interval("scrape_configs: []", None) == 60.0, "Prometheus' own default"
    f = healthy()
    f.window = "15s"
    failing(f, "scrape-interval", "window 15s is shorter than 4 scrape intervals (job kubernetes-pods: 5 s)",
            "--window 20s")
    f.window = "20s"
    assert check(f, "scrape-interval").status == "pass"
    f.series = [{"metric": {"destination_version": "1.4.0", "job": "federate"}}]
    f.window = "30s"
    failing(f, "scrape-interval", "(job federate: 15 s)", "--window 1m")


def test_access_is_checked_per_identity_and_optional_access_does_not_fail() -> None:
    f = healthy()
    answers = f.access[WORKER]
    assert isinstance(answers, dict)
    answers[("networking.istio.io", "virtualservices", "update")] = (False, "RBAC: no rule")
    c = failing(f, "access-as", "may not update virtualservices.networking.istio.io", "bound to " + WORKER)
    assert c.title.startswith(f"identity {WORKER}")
    mine = f.access[""]
    assert isinstance(mine, dict)
    mine[("networking.istio.io", "gateways", "create")] = (False, "")
    f.access = {"": mine}
    report = run_checks(f)
    optional = next(c for c in report.checks if c.id == "access-optional")
    assert optional.status == "fail" and not optional.required
    assert report.ok, "only expose needs it"
    assert "✖ the identity in use may expose, init namespaces and run the doctor (optional)" in report.text()
    f.access = {"": Failed("access reviews are not served")}
    failing(f, "access", "access reviews are not served")


def test_prefect_checks() -> None:
    f = healthy()
    f.workers = [{"name": "prefect-worker-7d9f", "status": "OFFLINE"}]
    failing(f, "prefect-worker", "work pool lamia-k8s has no online worker",
            "prefect worker start --pool lamia-k8s")
    f.work_pool_paused = True
    failing(f, "prefect-worker", "paused", "prefect work-pool resume lamia-k8s")
    f.deployment = {"work_pool_name": None, "status": "NOT_READY"}
    failing(f, "prefect-worker", "no process serves it", "lamia serve")
    f.deployment = {"work_pool_name": None, "status": "READY"}
    assert check(f, "prefect-worker").status == "pass"
    f.deployment = Failed("Prefect at http://prefect.lamia-system:4200/api has no deployment "
                          "canary-release/canary-release")
    failing(f, "prefect-deployment", "has no deployment", "prefect deploy --all")
    f.prefect_error = "cannot reach Prefect's API"
    failing(f, "prefect-api", "cannot reach", "PREFECT_API_URL")
    f.prefect_api = None
    failing(f, "prefect-api", "no Prefect API is configured")


def test_a_report_fails_only_on_required_failures() -> None:
    def make(status: Any, required: bool = True) -> Check:
        return Check(id="x", title="x", status=status, required=required)

    assert Report(namespace=NS, app=APP, checks=[make("pass"), make("skip")]).ok
    assert not Report(namespace=NS, app=APP, checks=[make("fail")]).ok
    assert Report(namespace=NS, app=APP, checks=[make("fail", required=False)]).ok
