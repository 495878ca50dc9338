"""KubeAdapter.expose and .unexpose against the API-server emulator: created, adopted, removed,
refused before any write, and kept by the gateway's other writers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lamia_core.errors import InvalidInput, NotFound, ReleaseLocked
from lamia_core.exposure import OWNER_ANNOTATION, ExposeRequest, exposure_of
from lamia_core.istio import ISTIO_API
from lamia_core.kube import KubeAdapter, KubeConfig
from lamia_core.lease import Lease, take_lease
from lamia_core.models import Application, Gateway, Route, Weights, parse_weights
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.seed import seed_application
from tests.plugins.istio_schema import IstioValidator, kubernetes_errors
from tests.plugins.kube import CONTEXT

NS, APP, HOST = "shop", "reviews", "shop.example.com"
WRITES = ("POST", "PUT", "PATCH", "DELETE")
Obj = dict[str, Any]


@pytest.fixture
def kube(kube_emulator: KubeEmulator, kubeconfig: Path) -> Any:
    seed_application(kube_emulator, NS, APP, ["stable", "canary"])
    with KubeAdapter(KubeConfig(kubeconfig=str(kubeconfig), context=CONTEXT)) as adapter:
        app = adapter.discover_application(NS, APP)
        adapter.apply_gateway(Gateway(application=app, routes=(Route(weights=parse_weights("stable=100")),)))
        yield adapter, app


def vs(emu: KubeEmulator) -> Obj:
    obj = emu.get_object(ISTIO_API, "VirtualService", NS, APP)
    assert obj is not None
    return obj


def gateway(emu: KubeEmulator, name: str, namespace: str = NS) -> Obj | None:
    return emu.get_object(ISTIO_API, "Gateway", namespace, name)


def writes(emu: KubeEmulator) -> list[tuple[str, str]]:
    return [r for r in emu.requests if r[0] in WRITES]


def helm_gateway(emu: KubeEmulator, name: str, namespace: str, hosts: list[str]) -> Obj:
    if emu.get_object("v1", "Namespace", None, namespace) is None:
        emu.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    return emu.add_object({
        "apiVersion": ISTIO_API, "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "edge-1.4.2"},
                     "annotations": {"meta.helm.sh/release-name": "edge"}},
        "spec": {"selector": {"istio": "ingressgateway"},
                 "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts}]},
    })


def test_expose_creates_a_gateway_and_binds_the_virtual_service(
        kube: Any, kube_emulator: KubeEmulator, istio_validator: IstioValidator) -> None:
    adapter, app = kube
    before = vs(kube_emulator)
    exposure = adapter.expose(app, ExposeRequest(host=HOST, tls_secret="shop-example-com-tls"))
    assert exposure.created and exposure.ref == "shop/reviews-gateway"
    gw = gateway(kube_emulator, "reviews-gateway")
    assert gw is not None
    istio_validator.validate({k: v for k, v in gw.items() if k != "status"} | {
        "metadata": {k: v for k, v in gw["metadata"].items()
                     if k in ("name", "namespace", "labels", "annotations")}})
    assert [s["port"]["number"] for s in gw["spec"]["servers"]] == [80, 443]
    after = vs(kube_emulator)
    assert after["spec"]["gateways"] == ["mesh", "shop/reviews-gateway"]
    assert after["spec"]["hosts"] == ["reviews", HOST]
    assert after["spec"]["http"] == before["spec"]["http"]
    # The same request again writes nothing.
    count = len(writes(kube_emulator))
    assert adapter.expose(app, ExposeRequest(host=HOST, tls_secret="shop-example-com-tls")) == exposure
    assert len(writes(kube_emulator)) == count
    # Without TLS now: Lamia's own Gateway is re-rendered, the binding stays.
    adapter.expose(app, ExposeRequest(host=HOST))
    again = gateway(kube_emulator, "reviews-gateway")
    assert again is not None and [s["port"]["number"] for s in again["spec"]["servers"]] == [80]
    assert vs(kube_emulator)["spec"]["gateways"] == ["mesh", "shop/reviews-gateway"]

    removed = adapter.unexpose(app)
    assert removed is not None and removed.created
    assert gateway(kube_emulator, "reviews-gateway") is None
    restored = vs(kube_emulator)
    assert restored["spec"] == before["spec"]
    assert "lamia.io/exposure" not in (restored["metadata"].get("annotations") or {})
    assert adapter.unexpose(app) is None, "nothing left to remove"


def test_an_existing_gateway_for_the_host_is_adopted_and_left_in_place(
        kube: Any, kube_emulator: KubeEmulator) -> None:
    adapter, app = kube
    edge = helm_gateway(kube_emulator, "public", "istio-system", ["*.example.com"])
    exposure = adapter.expose(app, ExposeRequest(host=HOST))
    assert not exposure.created and exposure.ref == "istio-system/public"
    assert gateway(kube_emulator, "reviews-gateway") is None, "no second Gateway"
    assert vs(kube_emulator)["spec"]["gateways"] == ["mesh", "istio-system/public"]
    assert gateway(kube_emulator, "public", "istio-system") == edge, "the adopted Gateway is not changed"
    with pytest.raises(InvalidInput, match="leave out --tls-secret"):
        adapter.expose(app, ExposeRequest(host=HOST, tls_secret="shop-tls"))
    adapter.unexpose(app)
    assert gateway(kube_emulator, "public", "istio-system") == edge
    assert "gateways" not in vs(kube_emulator)["spec"]


def test_adoption_falls_back_to_the_namespace_without_a_cluster_wide_list(
        kube: Any, kube_emulator: KubeEmulator) -> None:
    adapter, app = kube
    helm_gateway(kube_emulator, "storefront", NS, [HOST])
    kube_emulator.set_access([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"], "namespace": NS}])
    exposure = adapter.expose(app, ExposeRequest(host=HOST))
    assert exposure.ref == "shop/storefront" and not exposure.created


def test_a_gateway_named_but_not_serving_the_host_is_refused_before_any_write(
        kube: Any, kube_emulator: KubeEmulator) -> None:
    adapter, app = kube
    helm_gateway(kube_emulator, "storefront", NS, ["www.example.com"])
    count = len(writes(kube_emulator))
    with pytest.raises(InvalidInput, match=r"Gateway shop/storefront exists and does not serve shop\."):
        adapter.expose(app, ExposeRequest(host=HOST, name="storefront"))
    helm_gateway(kube_emulator, "reviews-gateway", NS, ["www.example.com"])
    with pytest.raises(InvalidInput, match="name another Gateway with --gateway"):
        adapter.expose(app, ExposeRequest(host=HOST))
    assert len(writes(kube_emulator)) == count


def test_another_host_while_exposed_is_refused(kube: Any, kube_emulator: KubeEmulator) -> None:
    adapter, app = kube
    adapter.expose(app, ExposeRequest(host=HOST))
    count = len(writes(kube_emulator))
    with pytest.raises(InvalidInput, match=r"already exposed as shop\.example\.com"):
        adapter.expose(app, ExposeRequest(host="www.example.com"))
    with pytest.raises(InvalidInput, match="already exposed"):
        adapter.expose(app, ExposeRequest(host=HOST, ingress=True))
    assert len(writes(kube_emulator)) == count


def test_an_app_without_a_gateway_cannot_be_exposed(kube_emulator: KubeEmulator, kubeconfig: Path) -> None:
    seed_application(kube_emulator, NS, "ratings", ["v1"])
    with KubeAdapter(KubeConfig(kubeconfig=str(kubeconfig), context=CONTEXT)) as adapter:
        app = adapter.discover_application(NS, "ratings")
        with pytest.raises(NotFound, match="lamia gateway apply"):
            adapter.expose(app, ExposeRequest(host=HOST))
    assert writes(kube_emulator) == []


def test_a_running_release_keeps_expose_out_but_its_holder_may(
        kube: Any, kube_emulator: KubeEmulator) -> None:
    adapter, app = kube
    lease = Lease.new("8f14e45f-ceea-467f-a0e6-0a5d3c1e2b77", "brisk-heron", target="canary",
                      baseline="stable")
    kube_emulator.replace_object(take_lease(vs(kube_emulator), lease, app=APP))
    count = len(writes(kube_emulator))
    with pytest.raises(ReleaseLocked, match="brisk-heron"):
        adapter.expose(app, ExposeRequest(host=HOST))
    assert len(writes(kube_emulator)) == count, "not even the Gateway is written"
    assert adapter.expose(app, ExposeRequest(host=HOST), holder=lease.holder).created
    with pytest.raises(ReleaseLocked):
        adapter.unexpose(app)
    assert adapter.unexpose(app, holder=lease.holder) is not None


def test_unexpose_removes_only_what_expose_added(kube: Any, kube_emulator: KubeEmulator) -> None:
    adapter, app = kube
    adapter.expose(app, ExposeRequest(host=HOST))
    # A person adds a host and a gateway of their own, and takes Lamia's Gateway over.
    current = vs(kube_emulator)
    current["spec"]["hosts"].append("reviews.partners.example.com")
    current["spec"]["gateways"].append("istio-system/partners")
    kube_emulator.replace_object(current)
    gw = gateway(kube_emulator, "reviews-gateway")
    assert gw is not None
    del gw["metadata"]["annotations"][OWNER_ANNOTATION]
    kube_emulator.replace_object(gw)
    adapter.unexpose(app)
    spec = vs(kube_emulator)["spec"]
    assert spec["hosts"] == ["reviews", "reviews.partners.example.com"]
    assert spec["gateways"] == ["istio-system/partners"]
    assert gateway(kube_emulator, "reviews-gateway") is not None, "no longer Lamia's: kept"


def test_releases_and_gateway_applies_keep_the_exposure(kube: Any, kube_emulator: KubeEmulator) -> None:
    adapter, app = kube
    adapter.expose(app, ExposeRequest(host=HOST))
    adapter.set_weights(app, Weights({"stable": 50, "canary": 50}))
    promoted = Route(weights=parse_weights("stable=0,canary=100"))
    adapter.apply_gateway(Gateway(application=app, routes=(promoted,)))
    after = vs(kube_emulator)
    assert after["spec"]["gateways"] == ["mesh", "shop/reviews-gateway"]
    assert HOST in after["spec"]["hosts"]
    assert exposure_of(after) is not None
    gw = adapter.read_gateway(app)
    assert gw is not None and gw.default_route.weights.as_dict() == {"stable": 0, "canary": 100}


def test_ingress_is_created_adopted_and_removed(kube: Any, kube_emulator: KubeEmulator) -> None:
    adapter, app = kube
    before = vs(kube_emulator)["spec"]
    exposure = adapter.expose(app, ExposeRequest(host=HOST, ingress=True, tls_secret="shop-tls"))
    assert exposure.kind == "Ingress" and exposure.created
    ing = kube_emulator.get_object("networking.k8s.io/v1", "Ingress", NS, "reviews-ingress")
    assert ing is not None
    assert kubernetes_errors({k: v for k, v in ing.items() if k != "status"}) == []
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {
        "name": "reviews", "port": {"number": 80}}
    assert vs(kube_emulator)["spec"] == before, "an Ingress does not go through the VirtualService"
    adapter.unexpose(app)
    assert kube_emulator.get_object("networking.k8s.io/v1", "Ingress", NS, "reviews-ingress") is None

    # A hand-made Ingress for the host and the Service is adopted, and kept by unexpose.
    kube_emulator.add_object({**ing, "metadata": {"name": "storefront", "namespace": NS,
                                                  "labels": {"app.kubernetes.io/managed-by": "Helm"}}})
    adopted = adapter.expose(app, ExposeRequest(host=HOST, ingress=True))
    assert adopted.name == "storefront" and not adopted.created
    adapter.unexpose(app)
    assert kube_emulator.get_object("networking.k8s.io/v1", "Ingress", NS, "storefront") is not None


def test_doctor_reads(kube: Any, kube_emulator: KubeEmulator) -> None:
    adapter, app = kube
    assert isinstance(app, Application)
    assert adapter.served_versions("networking.istio.io") == ["v1", "v1beta1", "v1alpha3"]
    assert adapter.served_versions("example.com") == []
    kube_emulator.serve_versions("networking.istio.io", ("v1beta1",))
    assert adapter.served_versions("networking.istio.io") == ["v1beta1"]
    pods = adapter.list_pods(NS, f"app={APP}")
    assert sorted(p["metadata"]["labels"]["version"] for p in pods) == ["canary", "stable"]
    assert [d["metadata"]["name"] for d in adapter.list_deployments(NS, f"app={APP}")] == [
        "reviews-canary", "reviews-stable"]
    assert [s["metadata"]["name"] for s in adapter.list_services(NS)] == ["reviews"]
    assert adapter.get_namespace(NS) is not None and adapter.get_namespace("nowhere") is None
    assert adapter.can_i("update", "networking.istio.io", "virtualservices", NS) == (True, "")
    kube_emulator.set_access([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}])
    allowed, reason = adapter.can_i("update", "networking.istio.io", "virtualservices", NS)
    assert not allowed and "update" in reason
    worker = "system:serviceaccount:lamia-system:lamia"
    kube_emulator.set_access(None)
    kube_emulator.set_access([], user=worker)
    assert adapter.can_i("list", "", "pods", NS, as_user=worker)[0] is False
