"""The Kubernetes emulator, exercised through the official client over real HTTP on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, dynamic
from kubernetes.client.exceptions import ApiException

from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.seed import seed_application
from tests.plugins.kube import CONTEXT

ROOT = Path(__file__).resolve().parents[1]
G = "networking.istio.io"
VS = "virtualservices"


def vs_body(name: str, host: str = "cart", version: str = "v1", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": f"{G}/{version}", "kind": "VirtualService",
            "metadata": {"name": name, **meta},
            "spec": {"hosts": [host], "http": [{"name": "lamia-default",
                                                "route": [{"destination": {"host": host, "subset": "v1"},
                                                           "weight": 100}]}]}}


def create_vs(custom: client.CustomObjectsApi, body: dict[str, Any], **kwargs: Any) -> Any:
    return custom.create_namespaced_custom_object(G, "v1", "default", VS, body, **kwargs)


def get_vs(custom: client.CustomObjectsApi) -> Any:
    return custom.get_namespaced_custom_object(G, "v1", "default", VS, "cart")


def replace_vs(custom: client.CustomObjectsApi, body: dict[str, Any]) -> Any:
    return custom.replace_namespaced_custom_object(G, "v1", "default", VS, "cart", body)


def patch_vs(custom: client.CustomObjectsApi, patch: Any, name: str = "cart", **kwargs: Any) -> Any:
    return custom.patch_namespaced_custom_object(G, "v1", "default", VS, name, patch, **kwargs)


def api_error(call: Callable[[], Any]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as info:
        call()
    return int(info.value.status), json.loads(info.value.body)


def raw(emu: KubeEmulator, method: str, path: str, body: bytes | None = None,
        content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    """A request the client cannot send (a malformed body, an odd path), over plain HTTP."""
    req = urllib.request.Request(emu.url + path, data=body, method=method,
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def core(kube_api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube_api_client)


@pytest.fixture
def apps(kube_api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(kube_api_client)


@pytest.fixture
def custom(kube_api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api_client)


@pytest.fixture
def shop(kube_emulator: KubeEmulator) -> KubeEmulator:
    """Namespace ``shop`` with app ``cart`` v1..v3 and an unrelated, differently labelled Deployment."""
    seed_application(kube_emulator, "shop", "cart", ["v1", "v2", "v3"])
    seed_application(kube_emulator, "shop", "db", ["v1"])
    db = kube_emulator.get_object("apps/v1", "Deployment", "shop", "db-v1")
    assert db is not None
    db["metadata"]["labels"]["tier"] = "backend"
    kube_emulator.replace_object(db)
    return kube_emulator


# --- discovery and kubeconfig --------------------------------------------------------------------


def test_kubeconfig_selects_the_emulator(kubeconfig: Path, kube_emulator: KubeEmulator) -> None:
    contexts, active = config.list_kube_config_contexts(config_file=str(kubeconfig))
    assert active["name"] == CONTEXT and [c["name"] for c in contexts] == [CONTEXT]
    assert active["context"]["namespace"] == "default"
    api = config.new_client_from_config(config_file=str(kubeconfig), context=CONTEXT)
    try:
        assert api.configuration.host == kube_emulator.url
    finally:
        api.close()


def test_discovery_serves_every_group_and_resource(kube_api_client: client.ApiClient, tmp_path: Path) -> None:
    assert client.VersionApi(kube_api_client).get_code().major == "1"
    groups = client.ApisApi(kube_api_client).get_api_versions()
    assert {g.name: [v.version for v in g.versions] for g in groups.groups} == {
        "apps": ["v1"], "coordination.k8s.io": ["v1"], G: ["v1", "v1beta1", "v1alpha3"],
        "networking.k8s.io": ["v1"], "authorization.k8s.io": ["v1"]}
    core = {r.name: r for r in client.CoreV1Api(kube_api_client).get_api_resources().resources}
    assert set(core) == {"namespaces", "services", "pods", "configmaps"}
    assert not core["namespaces"].namespaced and core["services"].namespaced
    # The dynamic client discovers like kubectl does: /api, /apis, then each group version.
    dyn = dynamic.DynamicClient(kube_api_client, cache_file=str(tmp_path / "discovery.json"))
    for version in ("v1", "v1beta1", "v1alpha3"):
        vs = dyn.resources.get(api_version=f"{G}/{version}", kind="VirtualService")
        assert (vs.name, vs.namespaced) == (VS, True)
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    assert deployments.get(namespace="default").kind == "DeploymentList"


# --- create, read, list ----------------------------------------------------------------------------


def test_create_sets_server_fields_and_get_returns_them(custom: client.CustomObjectsApi) -> None:
    created = create_vs(custom, vs_body("cart"))
    meta = created["metadata"]
    assert meta["namespace"] == "default" and meta["generation"] == 1
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and int(meta["resourceVersion"]) > 0
    assert get_vs(custom) == created


@pytest.mark.parametrize(("selector", "expected"), [
    ("app=cart", ["cart-v1", "cart-v2", "cart-v3"]),
    ("app==cart,version!=v1", ["cart-v2", "cart-v3"]),
    ("version in (v1, v3)", ["cart-v1", "cart-v3", "db-v1"]),
    ("app=cart,version notin (v1,v2)", ["cart-v3"]),
    ("tier", ["db-v1"]),
    ("!tier,version=v1", ["cart-v1"]),
    ("tier!=backend", ["cart-v1", "cart-v2", "cart-v3"]),
    ("app in (cart),deployment=cart-v2", ["cart-v2"]),
    ("", ["cart-v1", "cart-v2", "cart-v3", "db-v1"]),
])
def test_list_honours_label_selectors(shop: KubeEmulator, apps: client.AppsV1Api, selector: str,
                                      expected: list[str]) -> None:
    listed = apps.list_namespaced_deployment("shop", label_selector=selector)
    assert [d.metadata.name for d in listed.items] == expected


def test_list_honours_field_selectors_and_lists_across_namespaces(
        shop: KubeEmulator, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    seed_application(shop, "other", "cart", ["v9"])
    assert [d.metadata.name for d in apps.list_namespaced_deployment(
        "shop", field_selector="metadata.name=cart-v2").items] == ["cart-v2"]
    everywhere = apps.list_deployment_for_all_namespaces(label_selector="app=cart")
    assert [(d.metadata.namespace, d.metadata.name) for d in everywhere.items] == [
        ("other", "cart-v9"), ("shop", "cart-v1"), ("shop", "cart-v2"), ("shop", "cart-v3")]
    assert int(everywhere.metadata.resource_version) >= max(
        int(d.metadata.resource_version) for d in everywhere.items)
    names = [n.metadata.name for n in core.list_namespace(field_selector="metadata.name!=default").items]
    assert "default" not in names and {"shop", "other", "kube-system"} <= set(names)
    assert [n.metadata.name for n in core.list_namespace(
        label_selector="kubernetes.io/metadata.name=shop").items] == ["shop"]


def test_list_response_is_shaped_like_the_real_one(shop: KubeEmulator, kube_api_client: client.ApiClient,
                                                   custom: client.CustomObjectsApi) -> None:
    response = client.AppsV1Api(kube_api_client).list_namespaced_deployment("shop", _preload_content=False)
    body = json.loads(response.data)
    assert (body["kind"], body["apiVersion"]) == ("DeploymentList", "apps/v1")
    # Built-in list items carry no apiVersion/kind; custom resource items do.
    assert all("kind" not in item for item in body["items"])
    custom.create_namespaced_custom_object(G, "v1", "shop", VS, vs_body("cart"))
    listed = custom.list_namespaced_custom_object(G, "v1beta1", "shop", VS)
    assert listed["kind"] == "VirtualServiceList" and listed["items"][0]["kind"] == "VirtualService"
    assert listed["items"][0]["apiVersion"] == f"{G}/v1beta1"


@pytest.mark.parametrize("selector", ["app in v1", "version in ()", "=cart", "app=cart,", "app=a b",
                                      "Bad Key=x", "app=-x-"])
def test_invalid_label_selector_is_400(shop: KubeEmulator, apps: client.AppsV1Api, selector: str) -> None:
    status, body = api_error(lambda: apps.list_namespaced_deployment("shop", label_selector=selector))
    assert (status, body["reason"], body["kind"]) == (400, "BadRequest", "Status")


def test_unsupported_field_selector_is_400(shop: KubeEmulator, apps: client.AppsV1Api) -> None:
    status, body = api_error(
        lambda: apps.list_namespaced_deployment("shop", field_selector="spec.replicas=1"))
    assert status == 400 and "spec.replicas" in body["message"]


def test_istio_versions_share_one_storage(custom: client.CustomObjectsApi,
                                          kube_emulator: KubeEmulator) -> None:
    custom.create_namespaced_custom_object(G, "v1alpha3", "default", VS, vs_body("cart", version="v1alpha3"))
    for version in ("v1", "v1beta1", "v1alpha3"):
        got = custom.get_namespaced_custom_object(G, version, "default", VS, "cart")
        assert got["apiVersion"] == f"{G}/{version}" and got["spec"]["hosts"] == ["cart"]
    stored = kube_emulator.get_object(f"{G}/v1", "VirtualService", "default", "cart")
    assert stored is not None and stored["apiVersion"] == f"{G}/v1"
    custom.create_namespaced_custom_object(G, "v1", "default", "destinationrules", {
        "apiVersion": f"{G}/v1", "kind": "DestinationRule", "metadata": {"name": "cart"},
        "spec": {"host": "cart", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]}})
    rules = kube_emulator.list_objects(f"{G}/v1beta1", "DestinationRule")
    assert [(o["apiVersion"], o["metadata"]["name"]) for o in rules] == [(f"{G}/v1beta1", "cart")]


# --- errors ----------------------------------------------------------------------------------------


def test_unknown_object_is_404_with_a_real_status(apps: client.AppsV1Api, custom: client.CustomObjectsApi,
                                                  core: client.CoreV1Api) -> None:
    status, body = api_error(lambda: apps.read_namespaced_deployment("nope", "default"))
    assert status == 404 and body == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'deployments.apps "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "group": "apps", "kind": "deployments"}, "code": 404}
    status, body = api_error(lambda: custom.get_namespaced_custom_object(G, "v1", "default", VS, "x"))
    assert body["message"] == f'virtualservices.{G} "x" not found'
    status, body = api_error(lambda: core.read_namespace("nowhere"))
    assert body["details"] == {"name": "nowhere", "kind": "namespaces"}


@pytest.mark.parametrize("path", [
    "/apis/example.com/v1/namespaces/default/widgets", f"/apis/{G}/v2/namespaces/default/gateways",
    "/api/v1/namespaces/default/widgets", "/apis/apps/v1/deployments/x", "/api/v1/namespaces/default/status",
    "/api/v1/namespaces/default/services/x/status", "/healthz", "/",
])
def test_unknown_resource_or_path_is_404(kube_emulator: KubeEmulator, path: str) -> None:
    status, body = raw(kube_emulator, "GET", path)
    assert (status, body["reason"]) == (404, "NotFound")


def test_custom_objects_api_on_unknown_resource_is_404(custom: client.CustomObjectsApi) -> None:
    status, body = api_error(
        lambda: custom.list_namespaced_custom_object("example.com", "v1", "default", "widgets"))
    assert status == 404 and body["message"] == "the server could not find the requested resource"


def test_stale_resource_version_is_a_409_conflict(custom: client.CustomObjectsApi,
                                                  kube_emulator: KubeEmulator) -> None:
    read = create_vs(custom, vs_body("cart"))
    other = kube_emulator.get_object(f"{G}/v1", "VirtualService", "default", "cart")
    assert other is not None
    other["metadata"]["annotations"] = {"by": "someone else"}
    kube_emulator.replace_object(other)
    read["spec"]["hosts"] = ["changed"]
    status, body = api_error(lambda: replace_vs(custom, read))
    assert status == 409 and body["reason"] == "Conflict" and body["code"] == 409
    assert body["message"] == (
        f'Operation cannot be fulfilled on virtualservices.{G} "cart": the object has been modified; '
        "please apply your changes to the latest version and try again")
    assert body["details"] == {"name": "cart", "group": G, "kind": VS}
    # The other writer's change survived; a fresh read then write goes through.
    fresh = get_vs(custom)
    assert fresh["metadata"]["annotations"] == {"by": "someone else"} and fresh["spec"]["hosts"] == ["cart"]
    fresh["spec"]["hosts"] = ["changed"]
    written = replace_vs(custom, fresh)
    assert written["spec"]["hosts"] == ["changed"]
    assert written["metadata"]["annotations"] == {"by": "someone else"}


def test_put_without_resource_version_is_422_for_custom_resources_only(
        custom: client.CustomObjectsApi, core: client.CoreV1Api) -> None:
    create_vs(custom, vs_body("cart"))
    status, body = api_error(
        lambda: replace_vs(custom, vs_body("cart", "x")))
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "metadata.resourceVersion"
    assert "must be specified for an update" in body["message"]
    # Built-in kinds allow an unconditional update, as on a real cluster.
    core.create_namespace({"metadata": {"name": "shop"}})
    unconditional: Any = {"metadata": {"name": "shop", "labels": {"a": "b"}}}
    replaced = core.replace_namespace("shop", unconditional)
    assert replaced.metadata.labels == {"a": "b", "kubernetes.io/metadata.name": "shop"}


def test_create_of_an_existing_name_is_409_already_exists(custom: client.CustomObjectsApi) -> None:
    create_vs(custom, vs_body("cart"))
    status, body = api_error(lambda: create_vs(custom, vs_body("cart")))
    assert (status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == f'virtualservices.{G} "cart" already exists'


def test_create_into_a_missing_namespace_is_404(apps: client.AppsV1Api, kube_emulator: KubeEmulator) -> None:
    deployment: Any = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {
        "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}},
                     "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    status, body = api_error(lambda: apps.create_namespaced_deployment("nowhere", deployment))
    assert (status, body["reason"], body["message"]) == (404, "NotFound", 'namespaces "nowhere" not found')
    assert kube_emulator.list_objects("apps/v1", "Deployment") == []


@pytest.mark.parametrize(("change", "code", "words"), [
    (lambda b: b["metadata"].update(name="other"), 400, "does not match the name on the URL"),
    (lambda b: b["metadata"].update(namespace="kube-system"), 400, "namespace of the provided object"),
    (lambda b: b.update(apiVersion="networking.istio.io/v1beta1"), 400, "API version in the data"),
    (lambda b: b.update(kind="DestinationRule"), 400, "kind in the data"),
    (lambda b: b.pop("kind"), 400, "must be set"),
    (lambda b: b["metadata"].update(labels={"version": "not valid!"}), 422, "valid label value"),
    (lambda b: b["metadata"].update(labels={"n": 1}), 400, "map of strings"),
])
def test_malformed_object_is_refused(custom: client.CustomObjectsApi, change: Callable[[dict[str, Any]], Any],
                                     code: int, words: str) -> None:
    created = create_vs(custom, vs_body("cart"))
    change(created)
    status, body = api_error(lambda: replace_vs(custom, created))
    assert status == code and words in body["message"]


def test_create_needs_a_valid_name(custom: client.CustomObjectsApi, core: client.CoreV1Api) -> None:
    nameless = vs_body("")
    status, body = api_error(lambda: create_vs(custom, nameless))
    assert (status, body["reason"]) == (422, "Invalid")
    assert body["message"] == (f'VirtualService.{G} "" is invalid: metadata.name: Required value: '
                               "name or generateName is required")
    status, body = api_error(lambda: core.create_namespace({"metadata": {"name": "Not_DNS"}}))
    assert status == 422 and body["details"]["causes"][0]["field"] == "metadata.name"
    generated = create_vs(custom, vs_body("", generateName="cart-"))
    assert generated["metadata"]["name"].startswith("cart-") and len(generated["metadata"]["name"]) == 10


@pytest.mark.parametrize(("method", "body", "content_type", "code"), [
    ("POST", b"{not json", "application/json", 400),
    ("POST", b"", "application/json", 400),
    ("POST", b"[1, 2]", "application/json", 400),
    ("POST", b"kind: Namespace", "application/yaml", 415),
    ("PUT", b"{\"metadata\": ", "application/json", 400),
    ("PATCH", b"{oops", "application/merge-patch+json", 400),
])
def test_bodies_that_are_not_json_objects_are_refused(kube_emulator: KubeEmulator, method: str, body: bytes,
                                                      content_type: str, code: int) -> None:
    path = "/api/v1/namespaces" if method == "POST" else "/api/v1/namespaces/default"
    status, answer = raw(kube_emulator, method, path, body, content_type)
    assert status == code and answer["kind"] == "Status"


def test_methods_the_api_does_not_have_are_405(kube_emulator: KubeEmulator) -> None:
    assert raw(kube_emulator, "POST", "/apis/apps/v1/deployments", b"{}")[0] == 405
    assert raw(kube_emulator, "PUT", "/api/v1/namespaces", b"{}")[0] == 405
    assert raw(kube_emulator, "POST", "/api/v1", b"{}")[0] == 405


# --- resourceVersion and generation ----------------------------------------------------------------


def test_every_write_bumps_the_global_resource_version(custom: client.CustomObjectsApi,
                                                       core: client.CoreV1Api) -> None:
    seen: list[int] = []

    def rv(obj: dict[str, Any]) -> dict[str, Any]:
        seen.append(int(obj["metadata"]["resourceVersion"]))
        return obj

    vs = rv(create_vs(custom, vs_body("cart")))
    core.create_namespace({"metadata": {"name": "shop"}})
    vs["spec"]["hosts"] = ["a"]
    vs = rv(replace_vs(custom, vs))
    assert vs["metadata"]["generation"] == 2
    vs = rv(patch_vs(custom, {"metadata": {"labels": {"l": "1"}}}))
    assert vs["metadata"]["generation"] == 2  # metadata changes leave generation alone
    vs = rv(patch_vs(custom, {"spec": {"hosts": ["b"]}}))
    assert vs["metadata"]["generation"] == 3
    # Strictly increasing, and global: the namespace created in between took a version too.
    assert seen == sorted(set(seen)) and seen[1] - seen[0] == 2
    # A write that changes nothing is not written, as with etcd.
    same = patch_vs(custom, {"spec": {"hosts": ["b"]}})
    assert same == vs
    assert get_vs(custom)["metadata"]["uid"] == vs["metadata"]["uid"]


def test_writes_to_the_main_resource_leave_status_alone(shop: KubeEmulator, apps: client.AppsV1Api) -> None:
    d = apps.read_namespaced_deployment("cart-v1", "shop")
    assert d.status.ready_replicas == 1
    d.status.ready_replicas = 0
    d.spec.replicas = 3
    written = apps.replace_namespaced_deployment("cart-v1", "shop", d)
    assert written.spec.replicas == 3 and written.status.ready_replicas == 1
    assert written.metadata.generation == 2


# --- patches ----------------------------------------------------------------------------------------


def test_merge_patch_on_a_custom_resource(custom: client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(G, "v1", "default", VS,
                                           vs_body("cart", labels={"keep": "1", "drop": "2"}))
    patched = patch_vs(custom, {
        "metadata": {"labels": {"drop": None, "new": "3"}}, "spec": {"gateways": ["mesh"]}})
    assert patched["metadata"]["labels"] == {"keep": "1", "new": "3"}
    assert patched["spec"]["gateways"] == ["mesh"] and patched["spec"]["hosts"] == ["cart"]


def test_patch_carrying_a_resource_version_must_match(custom: client.CustomObjectsApi) -> None:
    created = create_vs(custom, vs_body("cart"))
    rv = created["metadata"]["resourceVersion"]
    ok = custom.patch_namespaced_custom_object(G, "v1", "default", VS, "cart",
                                               {"metadata": {"resourceVersion": rv, "labels": {"a": "1"}}})
    assert ok["metadata"]["labels"] == {"a": "1"}
    status, body = api_error(lambda: patch_vs(
        custom, {"metadata": {"resourceVersion": rv, "labels": {"a": "2"}}}))
    assert (status, body["reason"]) == (409, "Conflict")
    assert get_vs(custom)["metadata"]["labels"] == {"a": "1"}


def test_patch_of_a_missing_object_is_404(custom: client.CustomObjectsApi, core: client.CoreV1Api) -> None:
    assert api_error(lambda: patch_vs(custom, {"a": 1}, name="x"))[0] == 404
    assert api_error(lambda: core.patch_namespace("nowhere", {"metadata": {"labels": {"a": "b"}}}))[0] == 404


def test_json_patch_operations(custom: client.CustomObjectsApi) -> None:
    create_vs(custom, vs_body("cart"))
    ops = [
        {"op": "test", "path": "/spec/hosts/0", "value": "cart"},
        {"op": "add", "path": "/spec/hosts/-", "value": "cart.shop"},
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 90},
        {"op": "add", "path": "/spec/http/0/route/-",
         "value": {"destination": {"host": "cart", "subset": "v2"}}},
        {"op": "copy", "from": "/spec/http/0/route/0/weight", "path": "/spec/http/0/route/1/weight"},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 10},
        {"op": "add", "path": "/metadata/annotations", "value": {"a~b/c": "x"}},
        {"op": "move", "from": "/metadata/annotations/a~0b~1c", "path": "/metadata/annotations/moved"},
        {"op": "remove", "path": "/spec/hosts/0"},
    ]
    patched = patch_vs(custom, ops,
                                                    _content_type="application/json-patch+json")
    assert patched["spec"]["hosts"] == ["cart.shop"]
    assert [r["weight"] for r in patched["spec"]["http"][0]["route"]] == [90, 10]
    assert patched["metadata"]["annotations"] == {"moved": "x"}


@pytest.mark.parametrize("ops", [
    [{"op": "test", "path": "/spec/hosts/0", "value": "other"}],
    [{"op": "test", "path": "/metadata/generation", "value": True}],
    [{"op": "remove", "path": "/spec/missing"}],
    [{"op": "replace", "path": "/spec/hosts/5", "value": "x"}],
])
def test_json_patch_that_does_not_apply_is_422_and_changes_nothing(
        custom: client.CustomObjectsApi, ops: list[dict[str, Any]]) -> None:
    created = create_vs(custom, vs_body("cart"))
    ops = [{"op": "add", "path": "/metadata/labels", "value": {"half": "done"}}, *ops]
    status, body = api_error(lambda: patch_vs(
        custom, ops, _content_type="application/json-patch+json"))
    assert (status, body["reason"]) == (422, "Invalid")
    assert get_vs(custom) == created


def test_malformed_json_patch_is_400(custom: client.CustomObjectsApi, kube_emulator: KubeEmulator) -> None:
    create_vs(custom, vs_body("cart"))
    for ops in ([{"op": "frobnicate", "path": "/spec"}], [{"op": "add", "path": "spec", "value": 1}],
                [{"op": "add", "path": "/spec/x"}]):
        status, _ = api_error(lambda ops=ops: patch_vs(
            custom, ops, _content_type="application/json-patch+json"))
        assert status == 400
    # The client turns a JSON patch that is not a list into a strategic merge patch, so send it raw.
    status, body = raw(kube_emulator, "PATCH", f"/apis/{G}/v1/namespaces/default/{VS}/cart", b'{"op": "add"}',
                       "application/json-patch+json")
    assert status == 400 and "array" in body["message"]


def test_core_patches_as_the_client_sends_them(core: client.CoreV1Api, kube_emulator: KubeEmulator) -> None:
    # A dict goes out as a strategic merge patch, a list as a JSON patch (kubernetes/client/rest.py).
    core.create_namespace({"metadata": {"name": "shop"}})
    ns = core.patch_namespace("shop", {"metadata": {"labels": {"istio-injection": "enabled"}}})
    assert ns.metadata.labels["istio-injection"] == "enabled"
    ns = core.patch_namespace("shop", [{"op": "remove", "path": "/metadata/labels/istio-injection"}])
    assert "istio-injection" not in ns.metadata.labels
    assert [m for m, p in kube_emulator.requests if p == "/api/v1/namespaces/shop"] == ["PATCH", "PATCH"]


def test_strategic_merge_patch_on_a_custom_resource_is_415(custom: client.CustomObjectsApi,
                                                          kube_emulator: KubeEmulator) -> None:
    create_vs(custom, vs_body("cart"))
    status, body = api_error(lambda: patch_vs(
        custom, {"spec": {"hosts": ["x"]}},
        _content_type="application/strategic-merge-patch+json"))
    assert (status, body["reason"]) == (415, "UnsupportedMediaType")
    assert "application/merge-patch+json" in body["message"]
    # The client refuses to send other media types itself.
    for media in ("application/xml", "application/apply-patch+yaml"):
        status, body = raw(kube_emulator, "PATCH", f"/apis/{G}/v1/namespaces/default/{VS}/cart",
                           b'{"spec": {"hosts": ["x"]}}', media)
        assert (status, body["reason"]) == (415, "UnsupportedMediaType")
    assert get_vs(custom)["spec"]["hosts"] == ["cart"]


# --- delete ---------------------------------------------------------------------------------------------


def test_delete_answers_like_the_real_server(shop: KubeEmulator, apps: client.AppsV1Api,
                                             core: client.CoreV1Api) -> None:
    uid = apps.read_namespaced_deployment("cart-v1", "shop").metadata.uid
    status: dict[str, Any] = apps.delete_namespaced_deployment("cart-v1", "shop")
    assert (status["kind"], status["status"]) == ("Status", "Success")
    assert status["details"] == {"name": "cart-v1", "group": "apps", "kind": "deployments", "uid": uid}
    assert api_error(lambda: apps.read_namespaced_deployment("cart-v1", "shop"))[0] == 404
    assert api_error(lambda: apps.delete_namespaced_deployment("cart-v1", "shop"))[0] == 404
    # Services answer with the object, as on a real cluster.
    assert core.delete_namespaced_service("cart", "shop").metadata.name == "cart"
    code, body = api_error(lambda: apps.delete_namespaced_deployment(
        "cart-v2", "shop", body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="other"))))
    assert code == 409 and "Precondition failed" in body["message"]
    assert api_error(lambda: core.delete_namespace("default"))[0] == 403


def test_deleting_a_namespace_deletes_its_contents(shop: KubeEmulator, core: client.CoreV1Api,
                                                   apps: client.AppsV1Api) -> None:
    seed_application(shop, "other", "cart", ["v1"])
    core.delete_namespace("shop")
    assert apps.list_namespaced_deployment("shop").items == []
    assert [d.metadata.namespace for d in apps.list_deployment_for_all_namespaces().items] == ["other"]
    assert api_error(lambda: core.read_namespace("shop"))[0] == 404


def test_dry_run_stores_nothing(custom: client.CustomObjectsApi, kube_emulator: KubeEmulator) -> None:
    answer = create_vs(custom, vs_body("cart"), dry_run="All")
    assert answer["metadata"]["name"] == "cart"
    assert kube_emulator.list_objects(f"{G}/v1", "VirtualService") == []


def test_leases_and_configmaps(kube_api_client: client.ApiClient, core: client.CoreV1Api) -> None:
    leases = client.CoordinationV1Api(kube_api_client)
    lease = leases.create_namespaced_lease("default", client.V1Lease(
        metadata=client.V1ObjectMeta(name="lamia-cart"), spec=client.V1LeaseSpec(holder_identity="run-1")))
    lease.spec.holder_identity = "run-2"
    assert leases.replace_namespaced_lease("lamia-cart", "default", lease).spec.holder_identity == "run-2"
    assert api_error(lambda: leases.replace_namespaced_lease("lamia-cart", "default", lease))[0] == 409
    core.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="c"), data={"k": "v"}))
    assert core.read_namespaced_config_map("c", "default").data == {"k": "v"}


# --- test hooks --------------------------------------------------------------------------------------


def test_fail_next_injects_failures_without_touching_the_store(
        kube_emulator: KubeEmulator, custom: client.CustomObjectsApi) -> None:
    kube_emulator.fail_next("POST", r"/virtualservices$", 500)
    status, body = api_error(lambda: create_vs(custom, vs_body("cart")))
    assert (status, body["reason"]) == (500, "InternalError")
    assert kube_emulator.get_object(f"{G}/v1", "VirtualService", "default", "cart") is None
    create_vs(custom, vs_body("cart"))
    kube_emulator.fail_next("get", r"/virtualservices/cart$", 503, count=2)
    for _ in range(2):
        assert api_error(lambda: get_vs(custom))[0] == 503
    assert get_vs(custom)["metadata"]["name"] == "cart"
    # 429 carries Retry-After, as from a real server (which urllib3 obeys by retrying: so asked raw here).
    kube_emulator.fail_next("GET", r"/virtualservices/cart$", 429)
    request = urllib.request.Request(f"{kube_emulator.url}/apis/{G}/v1/namespaces/default/{VS}/cart")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 429 and info.value.headers["Retry-After"] == "1"
    assert json.loads(info.value.read())["reason"] == "TooManyRequests"
    kube_emulator.fail_next("*", "/virtualservices/", 503, body={"custom": True})
    assert api_error(lambda: get_vs(custom)) == (
        503, {"custom": True})


def test_before_write_hook_can_play_a_concurrent_writer(
        kube_emulator: KubeEmulator, custom: client.CustomObjectsApi) -> None:
    create_vs(custom, vs_body("cart"))
    calls: list[tuple[str, str, Any]] = []

    def meddle(method: str, path: str, body: Any) -> None:
        calls.append((method, path, body))
        if len(calls) == 1:  # only the first write loses the race
            other = kube_emulator.get_object(f"{G}/v1", "VirtualService", "default", "cart")
            assert other is not None
            other["metadata"]["labels"] = {"winner": "other"}
            kube_emulator.replace_object(other)

    kube_emulator.before_write(meddle)
    current = get_vs(custom)
    current["spec"]["hosts"] = ["mine"]
    assert api_error(lambda: replace_vs(custom, current))[0] == 409
    assert calls[0][:2] == ("PUT", f"/apis/{G}/v1/namespaces/default/virtualservices/cart")
    assert calls[0][2]["spec"]["hosts"] == ["mine"]
    fresh = get_vs(custom)
    fresh["spec"]["hosts"] = ["mine"]
    written = replace_vs(custom, fresh)
    assert written["metadata"]["labels"] == {"winner": "other"} and written["spec"]["hosts"] == ["mine"]
    kube_emulator.before_write(lambda *_: (_ for _ in ()).throw(RuntimeError("boom")))
    status, body = api_error(lambda: custom.delete_namespaced_custom_object(G, "v1", "default", VS, "cart"))
    assert status == 500 and "boom" in body["message"]
    kube_emulator.before_write(None)
    custom.delete_namespaced_custom_object(G, "v1", "default", VS, "cart")
    assert ("DELETE", f"/apis/{G}/v1/namespaces/default/virtualservices/cart") in kube_emulator.requests


def test_concurrent_writers_never_lose_an_update(kube_emulator: KubeEmulator, kubeconfig: Path) -> None:
    """Optimistic concurrency under real parallel clients: each increment lands exactly once."""
    kube_emulator.add_object(vs_body("cart", namespace="default", annotations={"n": "0"}))
    conflicts: list[int] = []

    def writer() -> None:
        api = config.new_client_from_config(config_file=str(kubeconfig))
        custom = client.CustomObjectsApi(api)
        try:
            for _ in range(15):
                while True:
                    vs = get_vs(custom)
                    vs["metadata"]["annotations"]["n"] = str(int(vs["metadata"]["annotations"]["n"]) + 1)
                    try:
                        replace_vs(custom, vs)
                        break
                    except ApiException as exc:
                        assert exc.status == 409
                        conflicts.append(1)
        finally:
            api.close()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = kube_emulator.get_object(f"{G}/v1", "VirtualService", "default", "cart")
    assert final is not None and final["metadata"]["annotations"]["n"] == "60"
    puts = [m for m, p in kube_emulator.requests if m == "PUT"]
    assert len(puts) == 60 + len(conflicts)


def test_direct_access_is_checked_and_copies(kube_emulator: KubeEmulator) -> None:
    with pytest.raises(ValueError, match="namespace 'shop' does not exist"):
        kube_emulator.add_object(vs_body("cart", namespace="shop"))
    with pytest.raises(ValueError, match="does not serve kind"):
        kube_emulator.add_object({"apiVersion": "example.com/v1", "kind": "Widget",
                                  "metadata": {"name": "w"}})
    with pytest.raises(LookupError):
        kube_emulator.replace_object(vs_body("cart", namespace="default"))
    stored = kube_emulator.add_object(vs_body("cart", namespace="default"))
    stored["spec"]["hosts"] = ["mutated"]
    again = kube_emulator.get_object(f"{G}/v1", "VirtualService", "default", "cart")
    assert again is not None and again["spec"]["hosts"] == ["cart"]
    again["spec"]["hosts"] = ["x"]
    replaced = kube_emulator.replace_object(again)
    assert int(replaced["metadata"]["resourceVersion"]) > int(stored["metadata"]["resourceVersion"])
    assert replaced["metadata"]["uid"] == stored["metadata"]["uid"]


def test_stop_closes_the_port_and_keeps_connections_from_lingering(kubeconfig: Path) -> None:
    with KubeEmulator() as emulator:
        api = config.new_client_from_config(config_file=str(emulator.write_kubeconfig(kubeconfig)))
        client.CoreV1Api(api).list_namespace()  # leaves a kept-alive connection open
    threads = [t for t in threading.enumerate() if t.name == f"kube-emulator-{emulator.port}"]
    assert not threads
    with pytest.raises(Exception):  # noqa: B017 - connection refused, however urllib3 wraps it
        client.CoreV1Api(api).list_namespace(_request_timeout=2)
    api.close()
    with pytest.raises(RuntimeError, match="not started"):
        _ = emulator.url


# --- seeding and the command line ------------------------------------------------------------------------


def test_seed_application_looks_like_what_discovery_expects(
        kube_emulator: KubeEmulator, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    seed_application(kube_emulator, "shop", "cart", ["v1", "v2"], image="example/cart:2")
    ns = core.read_namespace("shop")
    assert ns.metadata.labels == {"kubernetes.io/metadata.name": "shop"} and ns.status.phase == "Active"
    svc = core.read_namespaced_service("cart", "shop")
    assert svc.spec.selector == {"app": "cart"}
    listed = apps.list_namespaced_deployment("shop", label_selector="app=cart").items
    assert [d.metadata.name for d in listed] == ["cart-v1", "cart-v2"]
    for d, v in zip(listed, ["v1", "v2"], strict=True):
        want = {"app": "cart", "version": v, "deployment": f"cart-{v}"}
        assert d.metadata.labels == want and d.spec.template.metadata.labels == want
        assert d.spec.selector.match_labels.items() <= want.items()
        assert d.spec.template.spec.containers[0].image == "example/cart:2"
    # Seeding again keeps the namespace as labelled since.
    core.patch_namespace("shop", {"metadata": {"labels": {"istio-injection": "enabled"}}})
    seed_application(kube_emulator, "shop", "cart", ["v1", "v2"])
    assert core.read_namespace("shop").metadata.labels["istio-injection"] == "enabled"


def test_seed_application_can_leave_labels_off(kube_emulator: KubeEmulator, apps: client.AppsV1Api) -> None:
    seed_application(kube_emulator, "shop", "cart", ["v1", "v2", "v3"],
                     labels_missing={"v2": "deployment", "v3": ["version", "deployment"]})
    labels = {d.metadata.name: d.metadata.labels for d in apps.list_namespaced_deployment("shop").items}
    assert labels == {"cart-v1": {"app": "cart", "version": "v1", "deployment": "cart-v1"},
                      "cart-v2": {"app": "cart", "version": "v2"}, "cart-v3": {"app": "cart"}}
    with pytest.raises(ValueError, match="not one of"):
        seed_application(kube_emulator, "shop", "cart", ["v1"], labels_missing={"v9": "app"})


def test_seed_application_over_http(kube_api_client: client.ApiClient, kube_emulator: KubeEmulator) -> None:
    created = seed_application(kube_api_client, "shop", "cart", ["v1"])
    assert [o["kind"] for o in created] == ["Namespace", "Service", "Deployment"]
    stored = kube_emulator.get_object("apps/v1", "Deployment", "shop", "cart-v1")
    # Over HTTP the status is the server's, as on a real cluster.
    assert stored is not None and stored["metadata"]["labels"]["version"] == "v1" and stored["status"] == {}


def test_command_line_serves_a_seeded_app_until_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lamia_sandbox.kube_emulator", "--port", "0", "--seed-app", "shop:cart:v1,v2",
         "--kubeconfig", str(kubeconfig)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Kubernetes emulator serving http://127.0.0.1:"), (
            proc.stderr.read() if proc.stderr else "")
        api = config.new_client_from_config(config_file=str(kubeconfig), context=CONTEXT)
        names = [d.metadata.name for d in client.AppsV1Api(api).list_namespaced_deployment("shop").items]
        api.close()
        assert names == ["cart-v1", "cart-v2"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_command_line_rejects_a_bad_seed(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "lamia_sandbox.kube_emulator", "--seed-app", "shop:cart"],
                            cwd=ROOT, capture_output=True, text=True, timeout=30,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and "NAMESPACE:APP:VERSION" in result.stderr


# --- older Istio, Ingresses, pods with sidecars, access reviews ----------------------------------


def test_an_older_istio_serves_no_v1(kube_emulator: KubeEmulator, kube_api_client: client.ApiClient,
                                     custom: client.CustomObjectsApi) -> None:
    create_vs(custom, vs_body("cart"))
    kube_emulator.serve_versions(G, ("v1beta1", "v1alpha3"))
    groups = {g.name: [v.version for v in g.versions]
              for g in client.ApisApi(kube_api_client).get_api_versions().groups}
    assert groups[G] == ["v1beta1", "v1alpha3"]
    assert api_error(lambda: get_vs(custom))[0] == 404
    old = custom.get_namespaced_custom_object(G, "v1beta1", "default", VS, "cart")
    assert old["apiVersion"] == f"{G}/v1beta1" and old["spec"]["hosts"] == ["cart"]
    assert raw(kube_emulator, "GET", f"/apis/{G}/v1")[0] == 404
    kube_emulator.serve_versions(G, None)
    assert get_vs(custom)["metadata"]["name"] == "cart"
    with pytest.raises(ValueError, match="cannot serve"):
        kube_emulator.serve_versions(G, ("v2",))


def test_ingresses_are_served_as_a_built_in_kind(kube_api_client: client.ApiClient) -> None:
    net = client.NetworkingV1Api(kube_api_client)
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "shop", "namespace": "default"},
            "spec": {"ingressClassName": "istio", "rules": [{"host": "shop.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "cart", "port": {"number": 80}}}}]}}]}}
    created = net.create_namespaced_ingress("default", body)
    assert created.metadata.generation == 1 and created.spec.ingress_class_name == "istio"
    listed = net.list_namespaced_ingress("default").items
    assert [i.spec.rules[0].host for i in listed] == ["shop.example.com"]
    net.delete_namespaced_ingress("shop", "default")
    assert api_error(lambda: net.read_namespaced_ingress("shop", "default"))[0] == 404


def test_seeded_pods_carry_the_sidecar_only_when_the_namespace_injects(
        kube_emulator: KubeEmulator, core: client.CoreV1Api) -> None:
    from lamia_sandbox.seed import restart_deployment

    seed_application(kube_emulator, "shop", "cart", ["stable", "canary"])

    def containers() -> dict[str, list[str]]:
        return {p.metadata.labels["version"]: [c.name for c in p.spec.containers]
                for p in core.list_namespaced_pod("shop", label_selector="app=cart").items}

    assert containers() == {"stable": ["cart"], "canary": ["cart"]}
    pod = core.list_namespaced_pod("shop", label_selector="version=stable").items[0]
    assert pod.metadata.name.startswith("cart-stable-") and pod.status.phase == "Running"
    assert pod.metadata.labels["deployment"] == "cart-stable" and "pod-template-hash" in pod.metadata.labels
    # Injection enabled afterwards changes nothing until a restart, as with Istio's webhook.
    core.patch_namespace("shop", {"metadata": {"labels": {"istio-injection": "enabled"}}})
    assert containers() == {"stable": ["cart"], "canary": ["cart"]}
    restart_deployment(kube_emulator, "shop", "cart-canary")
    assert containers() == {"stable": ["cart"], "canary": ["cart", "istio-proxy"]}
    assert len(core.list_namespaced_pod("shop").items) == 2, "the old pod is gone"
    seed_application(kube_emulator, "shop", "ratings", ["v9"])
    assert [c.name for c in core.list_namespaced_pod("shop", label_selector="app=ratings").items[0]
            .spec.containers] == ["ratings", "istio-proxy"]
    seed_application(kube_emulator, "shop", "ratings", ["v9"], sidecar=False)
    assert [c.name for c in core.list_namespaced_pod("shop", label_selector="app=ratings").items[0]
            .spec.containers] == ["ratings"]


def ssar(kube_api_client: client.ApiClient, verb: str, resource: str, group: str = "",
         namespace: str = "shop", **kwargs: Any) -> Any:
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": namespace, "verb": verb, "group": group,
                                            "resource": resource}}}
    return client.AuthorizationV1Api(kube_api_client).create_self_subject_access_review(
        body, _preload_content=False, **kwargs)


def test_access_reviews_and_refusals_follow_the_rules_a_test_sets(
        shop: KubeEmulator, kube_api_client: client.ApiClient, apps: client.AppsV1Api) -> None:
    def allowed(verb: str, resource: str, group: str = "", **kwargs: Any) -> bool:
        answer = json.loads(ssar(kube_api_client, verb, resource, group, **kwargs).data)
        assert answer["kind"] == "SelfSubjectAccessReview"
        return bool(answer["status"]["allowed"])

    assert allowed("delete", "deployments", "apps"), "everything is allowed by default"
    shop.set_access([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]},
                     {"apiGroups": [G], "resources": ["*"], "verbs": ["get"], "namespace": "shop"}])
    assert allowed("list", "deployments", "apps") and not allowed("delete", "deployments", "apps")
    assert allowed("get", "virtualservices", G) and not allowed("get", "virtualservices", G, namespace="db")
    assert [d.metadata.name for d in apps.list_namespaced_deployment("shop").items][:1] == ["cart-v1"]
    status, body = api_error(lambda: apps.delete_namespaced_deployment("cart-v1", "shop"))
    assert status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == ('deployments.apps "cart-v1" is forbidden: User "lamia-emulator" cannot delete '
                               'resource "deployments" in API group "apps" in the namespace "shop"')
    assert shop.get_object("apps/v1", "Deployment", "shop", "cart-v1") is not None
    # Another user, impersonated as `kubectl --as` does; impersonation itself needs a grant.
    shop.set_access(None)
    assert allowed("delete", "deployments", "apps")
    worker = "system:serviceaccount:lamia-system:lamia"
    shop.set_access([], user=worker)
    assert not allowed("list", "deployments", "apps", _headers={"Impersonate-User": worker})
    shop.set_access([{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"],
                      "resourceNames": ["someone-else"], "namespace": "lamia-system"}])
    with pytest.raises(ApiException) as refused:
        ssar(kube_api_client, "list", "deployments", "apps", _headers={"Impersonate-User": worker})
    assert refused.value.status == 403
    assert 'cannot impersonate resource "serviceaccounts"' in json.loads(refused.value.body)["message"]


def test_access_review_needs_resource_attributes(kube_emulator: KubeEmulator) -> None:
    path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    assert raw(kube_emulator, "POST", path, b'{"kind": "SelfSubjectAccessReview", "spec": {}}')[0] == 422
    assert raw(kube_emulator, "GET", path)[0] == 405
    with pytest.raises(ValueError, match="needs verbs"):
        kube_emulator.set_access([{"apiGroups": [""], "resources": ["pods"]}])
