"""Exposure as pure functions: the Gateway and Ingress rendered, adoption, binding the
VirtualService and undoing exactly that."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lamia_core.errors import InvalidInput
from lamia_core.exposure import (
    EXPOSURE_ANNOTATION,
    OWNER_ANNOTATION,
    ExposeRequest,
    Exposure,
    bind_virtual_service,
    exposure_of,
    find_adoptable,
    find_adoptable_ingress,
    gateway_refs,
    parse_selector,
    render_gateway,
    render_ingress,
    serves,
    service_port,
    unbind_virtual_service,
)
from lamia_core.istio import render_virtual_service
from lamia_core.models import Application, Gateway, Route, Version, Weights
from tests.plugins.istio_schema import IstioValidator, kubernetes_errors

APP = Application(namespace="shop", name="reviews", versions=(
    Version(name="stable", deployment="reviews-stable"), Version(name="canary", deployment="reviews-canary")))
HOST = "shop.example.com"


def vs(**spec: Any) -> dict[str, Any]:
    gateway = Gateway(application=APP, routes=(Route(weights=Weights({"stable": 90, "canary": 10})),))
    out = render_virtual_service(gateway)
    out["spec"].update(spec)
    return out


def helm_gateway(name: str, namespace: str, hosts: list[str], *, protocol: str = "HTTP",
                 selector: dict[str, str] | None = None) -> dict[str, Any]:
    """A Gateway as a Helm chart installs it, not Lamia's."""
    return {"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "edge-1.4.2"}},
            "spec": {"selector": selector or {"istio": "ingressgateway"},
                     "servers": [{"port": {"number": 80, "name": "http", "protocol": protocol},
                                  "hosts": hosts}]}}


def created(**kw: Any) -> Exposure:
    return Exposure(host=HOST, kind="Gateway", namespace="shop", name="reviews-gateway", created=True, **kw)


# --- the request -------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["Shop.example.com", "*.example.com", "localhost", "10.0.0.1",
                                  "https://shop.example.com", "shop.example.com:443", "shop_.example.com"])
def test_a_host_must_be_a_public_dns_name(host: str) -> None:
    with pytest.raises(InvalidInput, match="is not a public DNS name"):
        ExposeRequest(host=host)


def test_request_checks_names_and_selector() -> None:
    with pytest.raises(InvalidInput, match="TLS secret name 'Shop_TLS'"):
        ExposeRequest(host=HOST, tls_secret="Shop_TLS")
    with pytest.raises(InvalidInput, match="Gateway name"):
        ExposeRequest(host=HOST, name="public/gateway")
    with pytest.raises(InvalidInput, match="not LABEL=VALUE"):
        parse_selector("istio")
    with pytest.raises(InvalidInput, match="selector label"):
        ExposeRequest(host=HOST, selector={"istio": "ingress gateway"})
    assert parse_selector("istio=ingressgateway, app=edge") == {"istio": "ingressgateway", "app": "edge"}
    assert ExposeRequest(host=HOST).selector == {"istio": "ingressgateway"}


# --- the Gateway -------------------------------------------------------------------------------


def test_gateway_for_http_is_schema_valid(istio_validator: IstioValidator) -> None:
    gw = render_gateway(APP, ExposeRequest(host=HOST), "reviews-gateway")
    istio_validator.validate(gw)
    assert gw["metadata"]["annotations"][OWNER_ANNOTATION] == "shop/reviews"
    assert gw["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "lamia"
    assert gw["spec"] == {"selector": {"istio": "ingressgateway"}, "servers": [
        {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [HOST]}]}


def test_gateway_with_tls_redirects_http_and_is_schema_valid(istio_validator: IstioValidator) -> None:
    request = ExposeRequest(host=HOST, tls_secret="shop-example-com-tls", selector={"istio": "edge"})
    gw = render_gateway(APP, request, "reviews-gateway")
    istio_validator.validate(gw)
    http, https = gw["spec"]["servers"]
    assert http["tls"] == {"httpsRedirect": True}
    assert https == {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": [HOST],
                     "tls": {"mode": "SIMPLE", "credentialName": "shop-example-com-tls"}}
    assert gw["spec"]["selector"] == {"istio": "edge"}
    # Re-rendered without TLS, Lamia's own Gateway loses the HTTPS server; other metadata is kept.
    gw["metadata"]["labels"]["team"] = "storefront"
    again = render_gateway(APP, ExposeRequest(host=HOST), "reviews-gateway", gw)
    assert [s["port"]["number"] for s in again["spec"]["servers"]] == [80]
    assert again["metadata"]["labels"]["team"] == "storefront"


def test_validator_refuses_a_broken_gateway(istio_validator: IstioValidator) -> None:
    gw = render_gateway(APP, ExposeRequest(host=HOST, tls_secret="tls"), "reviews-gateway")
    gw["spec"]["servers"][1]["tls"]["credentialNames"] = ["other"]
    del gw["spec"]["servers"][0]["port"]["protocol"]
    errors = istio_validator.errors(gw)
    assert any("only one of credentialName or credentialNames" in e for e in errors)
    assert any("'protocol' is a required property" in e for e in errors)


@pytest.mark.parametrize(("hosts", "quality"), [
    ([HOST], 0), (["*.example.com"], 1), (["*"], 2), (["shop/" + HOST], 0), (["*/" + HOST], 0),
    (["./" + HOST], None), (["payments/" + HOST], None), (["www.example.com"], None),
    (["*.example.com", HOST], 0),
])
def test_serves_tells_how_well_a_gateway_covers_the_host(hosts: list[str], quality: int | None) -> None:
    assert serves(helm_gateway("edge", "istio-system", hosts), HOST, "shop") == quality


def test_a_gateway_of_the_namespace_may_use_dot_and_tcp_servers_do_not_count() -> None:
    assert serves(helm_gateway("edge", "shop", ["./" + HOST]), HOST, "shop") == 0
    assert serves(helm_gateway("edge", "shop", [HOST], protocol="TCP"), HOST, "shop") is None


def test_adoption_prefers_the_closest_host_then_the_app_namespace() -> None:
    request = ExposeRequest(host=HOST)
    wildcard = helm_gateway("public", "istio-system", ["*.example.com"])
    exact_elsewhere = helm_gateway("shop-public", "istio-system", [HOST])
    exact_here = helm_gateway("storefront", "shop", [HOST])
    other_pods = helm_gateway("internal", "shop", [HOST], selector={"istio": "internal-gateway"})
    assert find_adoptable([wildcard], APP, request) is wildcard
    assert find_adoptable([wildcard, exact_elsewhere], APP, request) is exact_elsewhere
    assert find_adoptable([exact_elsewhere, exact_here, wildcard], APP, request) is exact_here
    assert find_adoptable([other_pods], APP, request) is None, "another ingress's pods"
    assert find_adoptable([helm_gateway("x", "shop", ["www.example.com"])], APP, request) is None


def test_a_gateway_lamia_made_for_another_app_is_not_adopted() -> None:
    ratings = APP.model_copy(update={"name": "ratings"})
    theirs = render_gateway(ratings, ExposeRequest(host=HOST), "ratings-gateway")
    with pytest.raises(InvalidInput, match="which Lamia created for application shop/ratings"):
        find_adoptable([theirs], APP, ExposeRequest(host=HOST))
    ours = render_gateway(APP, ExposeRequest(host=HOST), "reviews-gateway")
    assert find_adoptable([ours], APP, ExposeRequest(host=HOST)) is ours


# --- the Ingress -------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [None, "shop-example-com-tls"])
def test_ingress_is_valid_against_kubernetes_own_schema(tls: str | None) -> None:
    ing = render_ingress(APP, ExposeRequest(host=HOST, tls_secret=tls, ingress=True), "reviews-ingress", 9080)
    assert kubernetes_errors(ing) == []
    assert ing["spec"]["ingressClassName"] == "istio"
    [rule] = ing["spec"]["rules"]
    assert rule["host"] == HOST
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": "reviews", "port": {"number": 9080}}}
    assert ("tls" in ing["spec"]) == (tls is not None)
    named = render_ingress(APP, ExposeRequest(host=HOST, ingress=True), "reviews-ingress", "http")
    assert named["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] == {"name": "http"}


def test_the_kubernetes_schema_check_catches_a_misplaced_field() -> None:
    ing = render_ingress(APP, ExposeRequest(host=HOST, ingress=True), "reviews-ingress", 80)
    ing["spec"]["rules"][0]["http"]["paths"][0]["serviceName"] = "reviews"
    assert kubernetes_errors(ing) and "serviceName" in kubernetes_errors(ing)[0]


def test_an_ingress_routing_the_host_elsewhere_is_refused() -> None:
    ours = render_ingress(APP, ExposeRequest(host=HOST, ingress=True), "reviews-ingress", 80)
    assert find_adoptable_ingress([ours], APP, HOST) is ours
    assert find_adoptable_ingress([ours], APP, "www.example.com") is None
    elsewhere = copy.deepcopy(ours)
    elsewhere["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = "legacy-shop"
    with pytest.raises(InvalidInput, match=r"already routes shop\.example\.com to Service legacy-shop"):
        find_adoptable_ingress([elsewhere], APP, HOST)


def test_service_port_prefers_the_one_named_http() -> None:
    svc = {"metadata": {"name": "reviews", "namespace": "shop"},
           "spec": {"ports": [{"name": "grpc", "port": 9090}, {"name": "http", "port": 9080}]}}
    assert service_port(svc) == 9080
    svc["spec"]["ports"] = [{"name": "grpc", "port": 9090}]
    assert service_port(svc) == 9090
    svc["spec"]["ports"] = []
    with pytest.raises(InvalidInput, match="has no ports"):
        service_port(svc)


# --- the VirtualService ------------------------------------------------------------------------


def test_binding_an_unbound_virtual_service_keeps_the_mesh(istio_validator: IstioValidator) -> None:
    before = vs()
    assert "gateways" not in before["spec"] and gateway_refs(before) == ["mesh"]
    after = bind_virtual_service(before, created())
    istio_validator.validate(after)
    assert after["spec"]["gateways"] == ["mesh", "shop/reviews-gateway"]
    assert after["spec"]["hosts"] == ["reviews", HOST]
    assert after["spec"]["http"] == before["spec"]["http"], "the same routes serve both"
    record = exposure_of(after)
    assert record is not None
    assert record.hosts_added == (HOST,) and record.gateways_added == ("mesh", "shop/reviews-gateway")
    assert unbind_virtual_service(after) == before


def test_binding_adds_only_what_is_missing_and_unbinding_removes_only_that() -> None:
    before = vs(gateways=["istio-system/internal"], hosts=["reviews", HOST])
    after = bind_virtual_service(before, created())
    assert after["spec"]["gateways"] == ["istio-system/internal", "shop/reviews-gateway"], "no mesh added"
    record = exposure_of(after)
    assert record is not None and record.hosts_added == ()
    assert record.gateways_added == ("shop/reviews-gateway",)
    # Someone else adds their own host and gateway afterwards: they stay.
    after["spec"]["hosts"].append("reviews.internal.example.com")
    after["spec"]["gateways"].append("istio-system/partners")
    undone = unbind_virtual_service(after)
    assert undone is not None
    assert undone["spec"]["gateways"] == ["istio-system/internal", "istio-system/partners"]
    assert undone["spec"]["hosts"] == ["reviews", HOST, "reviews.internal.example.com"]
    assert EXPOSURE_ANNOTATION not in (undone["metadata"].get("annotations") or {})


def test_binding_again_records_the_first_additions() -> None:
    once = bind_virtual_service(vs(), created())
    twice = bind_virtual_service(once, created(tls_secret="shop-tls"))
    assert twice["spec"] == once["spec"]
    record = exposure_of(twice)
    assert record is not None and record.gateways_added == ("mesh", "shop/reviews-gateway")
    assert record.tls_secret == "shop-tls"
    assert unbind_virtual_service(twice) == vs()


def test_a_gateway_bound_by_its_short_name_is_not_bound_twice() -> None:
    after = bind_virtual_service(vs(gateways=["mesh", "reviews-gateway"]), created())
    assert after["spec"]["gateways"] == ["mesh", "reviews-gateway"]


def test_an_ingress_is_only_recorded() -> None:
    before = vs()
    exposure = Exposure(host=HOST, kind="Ingress", namespace="shop", name="reviews-ingress", created=True)
    after = bind_virtual_service(before, exposure)
    assert after["spec"] == before["spec"]
    assert exposure_of(after) == exposure
    assert unbind_virtual_service(after) == before


def test_unreadable_record_and_nothing_to_undo() -> None:
    assert unbind_virtual_service(vs()) is None
    broken = vs()
    broken["metadata"]["annotations"] = {EXPOSURE_ANNOTATION: json.dumps({"host": HOST})}
    with pytest.raises(InvalidInput, match=r"unreadable lamia\.io/exposure annotation"):
        exposure_of(broken)


_refs = st.lists(
    st.sampled_from(["mesh", "shop/reviews-gateway", "istio-system/internal", "reviews-gateway"]),
    unique=True, max_size=3)
_hosts = st.lists(st.sampled_from([HOST, "reviews.shop.svc.cluster.local", "www.example.com"]), unique=True)


@given(gateways=st.none() | _refs, extra_hosts=_hosts)
def test_unbind_undoes_bind_exactly(gateways: list[str] | None, extra_hosts: list[str]) -> None:
    spec: dict[str, Any] = {"hosts": ["reviews", *extra_hosts]}
    if gateways is not None:
        spec["gateways"] = gateways
    before = vs(**spec)
    after = bind_virtual_service(before, created())
    assert HOST in after["spec"]["hosts"]
    refs = gateway_refs(after)
    assert "shop/reviews-gateway" in refs or "reviews-gateway" in refs
    assert ("mesh" in refs) == ("mesh" in gateway_refs(before))
    undone = unbind_virtual_service(after)
    assert undone is not None
    if before["spec"].get("gateways") == []:
        # Istio reads an empty list as the mesh, as it does an absent field; unbind leaves none.
        del before["spec"]["gateways"]
    assert undone == before
