"""The Kubernetes manifests and the work pool's job template: well-formed, consistent with each
other, and granting Lamia exactly what its adapter uses (checked by running the adapter)."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient

from lamia_core.doctor import NEEDED_ACCESS, OPTIONAL_ACCESS
from lamia_core.exposure import ExposeRequest
from lamia_core.kube import KubeAdapter, KubeConfig
from lamia_core.models import Gateway, Route, Weights, parse_weights
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.prefect_server import PrefectServer
from lamia_sandbox.seed import seed_application

DEPLOYMENTS = Path(__file__).resolve().parents[1] / "deployments"
NAMESPACE = "lamia-system"
Obj = dict[str, Any]
Grant = tuple[str, str, str]  # (API group, resource, verb)

#: What Lamia's Kubernetes adapter (lamia_core/kube.py) calls, as RBAC sees it. The ClusterRole must
#: grant exactly this; test_adapter_needs_are_what_it_uses keeps this list honest.
ADAPTER_NEEDS: set[Grant] = {
    ("", "namespaces", "get"),  # read_namespace: init_namespace, and "does the namespace exist?"
    ("", "namespaces", "create"),  # create_namespace: init_namespace of a missing namespace
    ("", "namespaces", "update"),  # replace_namespace: init_namespace adds labels
    ("", "services", "list"),  # list_namespaced_service: the application's Service
    ("apps", "deployments", "list"),  # list_namespaced_deployment: the application's versions
    # list: the gateway is found by the host it routes, whatever its name
    ("networking.istio.io", "virtualservices", "list"),
    ("networking.istio.io", "destinationrules", "list"),
    ("networking.istio.io", "virtualservices", "get"),
    ("networking.istio.io", "virtualservices", "create"),
    ("networking.istio.io", "virtualservices", "update"),
    ("networking.istio.io", "destinationrules", "get"),
    ("networking.istio.io", "destinationrules", "create"),
    ("networking.istio.io", "destinationrules", "update"),
    ("", "services", "get"),  # read_namespaced_service: the port an Ingress sends traffic to
    ("", "pods", "list"),  # list_namespaced_pod: the doctor's sidecar check
    *{("networking.istio.io", "gateways", v) for v in ("get", "list", "create", "update", "delete")},
    *{("networking.k8s.io", "ingresses", v) for v in ("get", "list", "create", "update", "delete")},
    ("authorization.k8s.io", "selfsubjectaccessreviews", "create"),  # the doctor's access check
}

#: What the Prefect Kubernetes worker does in its namespace: submit Jobs, follow their Pods and logs.
WORKER_NEEDS: set[Grant] = {
    *{("batch", "jobs", v) for v in ("create", "get", "list", "watch", "delete")},
    *{("", "pods", v) for v in ("get", "list", "watch")},
    ("", "pods/log", "get"),
}

KNOWN_KINDS = {
    ("v1", "Namespace"), ("v1", "ServiceAccount"), ("v1", "ConfigMap"),
    ("apps/v1", "Deployment"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"), ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"), ("rbac.authorization.k8s.io/v1", "RoleBinding"),
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def load(name: str) -> list[Obj]:
    with open(DEPLOYMENTS / name, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def all_docs() -> list[Obj]:
    return [d for p in sorted(DEPLOYMENTS.glob("*.yaml")) for d in load(p.name)]


def find(docs: list[Obj], kind: str, name: str) -> Obj:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def grants(role: Obj) -> set[Grant]:
    out = set()
    for rule in role["rules"]:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def template() -> Obj:
    data: Obj = json.loads((DEPLOYMENTS / "work-pool-job-template.json").read_text(encoding="utf-8"))
    return data


def defaults() -> Obj:
    return {k: v.get("default") for k, v in template()["variables"]["properties"].items()}


def without_none(value: Any) -> Any:
    """Unset template variables render as None; Kubernetes treats them as absent."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


def round_trip(doc: Obj, model: str) -> Obj:
    """``doc`` through the kubernetes client's model: a misspelt or misplaced field is dropped."""

    api = ApiClient()
    try:
        model_obj = api.deserialize(json.dumps(doc), model, "application/json")
        result: Obj = api.sanitize_for_serialization(model_obj)  # type: ignore[no-untyped-call]
    finally:
        api.close()  # type: ignore[no-untyped-call]
    return result


# --- every manifest -------------------------------------------------------------------------------


def test_there_are_manifests() -> None:
    assert {p.name for p in DEPLOYMENTS.glob("*.yaml")} >= {"rbac.yaml", "prefect-worker.yaml"}


@pytest.mark.parametrize("name", sorted(p.name for p in DEPLOYMENTS.glob("*.yaml")))
def test_manifest_parses_with_known_kinds(name: str) -> None:
    docs = load(name)
    assert docs
    for doc in docs:
        assert (doc.get("apiVersion"), doc.get("kind")) in KNOWN_KINDS, doc
        meta = doc["metadata"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"])
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta
        else:
            # Nothing may land in whatever namespace kubectl happens to default to.
            assert meta.get("namespace") == NAMESPACE, f"{doc['kind']} {meta['name']}"


@pytest.mark.parametrize("name", sorted(p.name for p in DEPLOYMENTS.glob("*.yaml")))
def test_manifest_has_no_unknown_fields(name: str) -> None:
    for doc in load(name):
        assert round_trip(doc, f"V1{doc['kind']}") == doc


def test_names_are_unique() -> None:
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in all_docs()]
    assert len(keys) == len(set(keys))


def test_bindings_point_at_defined_roles_and_service_accounts() -> None:
    docs = all_docs()
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert len(bindings) == 2
    for b in bindings:
        ref = b["roleRef"]
        assert ref["apiGroup"] == "rbac.authorization.k8s.io"
        role = find(docs, ref["kind"], ref["name"])
        if b["kind"] == "RoleBinding":
            assert role["metadata"]["namespace"] == b["metadata"]["namespace"]
        for s in b["subjects"]:
            assert s["kind"] == "ServiceAccount"
            assert find(docs, "ServiceAccount", s["name"])["metadata"]["namespace"] == s["namespace"]


def test_the_namespace_is_created_by_rbac_yaml() -> None:
    assert find(load("rbac.yaml"), "Namespace", NAMESPACE)


# --- Lamia's access -------------------------------------------------------------------------------


def test_cluster_role_grants_exactly_what_the_adapter_needs() -> None:
    role = find(load("rbac.yaml"), "ClusterRole", "lamia")
    granted = grants(role)
    assert ADAPTER_NEEDS - granted == set(), "missing"
    assert granted - ADAPTER_NEEDS == set(), "more than Lamia uses"


def test_the_doctor_checks_exactly_what_the_adapter_needs() -> None:
    checked = {(group, resource, verb) for group, resource, verb in (*NEEDED_ACCESS, *OPTIONAL_ACCESS)}
    # An access review cannot tell whether access reviews are allowed; every user may make them.
    assert checked == ADAPTER_NEEDS - {("authorization.k8s.io", "selfsubjectaccessreviews", "create")}


def test_lamia_service_account_holds_the_cluster_role() -> None:
    binding = find(load("rbac.yaml"), "ClusterRoleBinding", "lamia")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "lamia",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lamia", "namespace": NAMESPACE}]


def rbac_of(method: str, path: str) -> Grant | None:
    """The (group, resource, verb) RBAC checks for one API request; None for discovery."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) > 2:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) > 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    verb = {"GET": "get" if named else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if named else "deletecollection"}[method]
    return group, resource, verb


def test_rbac_of_requests() -> None:
    assert rbac_of("GET", "/api/v1/namespaces/shop") == ("", "namespaces", "get")
    assert rbac_of("POST", "/api/v1/namespaces") == ("", "namespaces", "create")
    assert rbac_of("GET", "/api/v1/namespaces/shop/services") == ("", "services", "list")
    assert rbac_of("GET", "/api/v1/namespaces/shop/pods/p/log") == ("", "pods/log", "get")
    assert rbac_of("PUT", "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/cart") == (
        "networking.istio.io", "virtualservices", "update")
    assert rbac_of("GET", "/apis/apps/v1") is None and rbac_of("GET", "/api") is None


def test_adapter_needs_are_what_it_uses(tmp_path: Path) -> None:
    """Every call of the adapter, made against the emulator, and the RBAC check each one needs."""
    with KubeEmulator() as emulator:
        seed_application(emulator, "shop", "cart", ["v1", "v2"])
        adapter = KubeAdapter(KubeConfig(kubeconfig=str(emulator.write_kubeconfig(tmp_path / "kubeconfig"))))
        try:
            emulator.requests.clear()
            adapter.init_namespace("shop")  # exists: read, then update its labels
            adapter.init_namespace("fresh")  # missing: read, then create
            app = adapter.discover_application("shop", "cart")
            first = Route(weights=Weights.all_on("v1", ["v2"]))
            adapter.apply_gateway(Gateway(application=app, routes=(first,)))
            adapter.set_weights(app, parse_weights("v1=90,v2=10"))
            assert adapter.read_gateway(app) is not None
            # A third version: the DestinationRule gains a subset, so it is updated too.
            seed_application(emulator, "shop", "cart", ["v3"])
            app = adapter.discover_application("shop", "cart")
            adapter.apply_gateway(Gateway(application=app, routes=(Route(weights=parse_weights("v1=100")),)))
            # Exposing through a Gateway and an Ingress, and undoing both.
            for ingress in (False, True):
                adapter.expose(app, ExposeRequest(host="cart.example.com", ingress=ingress))
                # Again with TLS: Lamia's own Gateway or Ingress is updated.
                adapter.expose(app, ExposeRequest(host="cart.example.com", ingress=ingress, tls_secret="tls"))
                adapter.unexpose(app)
            # The doctor's reads.
            adapter.list_pods("shop", "app=cart")
            adapter.can_i("update", "networking.istio.io", "virtualservices", "shop")
            used = {g for g in (rbac_of(m, p) for m, p in emulator.requests) if g is not None}
        finally:
            adapter.close()
    assert used == ADAPTER_NEEDS


# --- the worker -----------------------------------------------------------------------------------


def worker() -> Obj:
    return find(load("prefect-worker.yaml"), "Deployment", "prefect-worker")


def test_worker_runs_the_kubernetes_pool() -> None:
    [container] = worker()["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[:3] == ["prefect", "worker", "start"]
    assert args[args.index("--pool") + 1] == "lamia-k8s"
    assert args[args.index("--type") + 1] == "kubernetes"
    assert container["image"].endswith("-kubernetes")  # the image with prefect-kubernetes in it
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]


def test_worker_selector_matches_its_pods() -> None:
    spec = worker()["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()


def test_worker_gets_the_api_url_from_a_defined_config_map() -> None:
    docs = load("prefect-worker.yaml")
    [container] = worker()["spec"]["template"]["spec"]["containers"]
    assert "PREFECT_API_URL" not in {e["name"] for e in container.get("env", [])}
    [ref] = [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e]
    config = find(docs, "ConfigMap", ref)["data"]
    assert re.fullmatch(r"https?://[^/]+/api", config["PREFECT_API_URL"])
    # The observer watches only the namespace the worker's Role covers.
    assert config["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == NAMESPACE


def test_worker_service_account_may_run_jobs_in_its_namespace_only() -> None:
    docs = all_docs()
    account = worker()["spec"]["template"]["spec"]["serviceAccountName"]
    assert find(docs, "ServiceAccount", account)["metadata"]["namespace"] == NAMESPACE
    bindings = [b for b in docs if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
                and {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in b["subjects"]]
    assert [b["kind"] for b in bindings] == ["RoleBinding"]
    role = find(docs, "Role", bindings[0]["roleRef"]["name"])
    assert role["metadata"]["namespace"] == NAMESPACE
    granted = grants(role)
    assert WORKER_NEEDS <= granted
    assert not any(g[0] == "networking.istio.io" for g in granted)


# --- the work pool's job template ---------------------------------------------------------------


def test_template_placeholders_are_declared_variables() -> None:
    t = template()
    used = set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", json.dumps(t["job_configuration"])))
    declared = set(t["variables"]["properties"])
    assert used - declared == set()
    assert {"image", "service_account_name", "namespace", "env"} <= used


def rendered_job() -> Obj:
    from prefect.utilities.templating import apply_values

    config: Obj = apply_values(template()["job_configuration"], defaults())
    job: Obj = config["job_manifest"]
    return job


def test_flow_runs_are_jobs_in_lamia_system_as_lamia() -> None:
    job = rendered_job()
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["namespace"] == NAMESPACE
    assert pod["serviceAccountName"] == "lamia"
    account = find(load("rbac.yaml"), "ServiceAccount", pod["serviceAccountName"])
    assert account["metadata"]["namespace"] == NAMESPACE
    [container] = pod["containers"]
    assert container["image"] == defaults()["image"] == "lamia:0.1.0"
    assert container["env"]["LAMIA_PROMETHEUS_URL"].startswith("http://")
    # Slack credentials may come from an optional Secret; a missing one must not block the pod.
    assert {"secretRef": {"name": "lamia-slack", "optional": True}} in container["envFrom"]


def test_rendered_job_keeps_what_the_prefect_kubernetes_worker_requires() -> None:
    # prefect-kubernetes (worker.py, _get_base_job_manifest) refuses a job manifest lacking these.
    job = rendered_job()
    pod = job["spec"]["template"]["spec"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert (pod["parallelism"], pod["completions"], pod["restartPolicy"]) == (1, 1, "Never")
    assert pod["containers"][0]["name"] == "prefect-job"
    # Otherwise a valid Job: only the two fields Prefect insists on misplacing are unknown to Kubernetes.
    job["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": k, "value": v} for k, v in job["spec"]["template"]["spec"]["containers"][0]["env"].items()
    ]
    expected = without_none(job)
    for field in ("parallelism", "completions"):
        del expected["spec"]["template"]["spec"][field]
    assert round_trip(without_none(job), "V1Job") == expected


@pytest.mark.integration
def test_prefect_server_accepts_the_template(prefect_server: PrefectServer) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"lamia-k8s-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=name, type="kubernetes", base_job_template=template()))
        pool = client.read_work_pool(name)
        client.delete_work_pool(name)
    assert pool.type == "kubernetes"
    props = pool.base_job_template["variables"]["properties"]
    assert props["service_account_name"]["default"] == "lamia"
    assert props["namespace"]["default"] == NAMESPACE
