"""Istio's HTTP route matching and weighted destinations, as the simulator applies them."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from lamia_core.conditions import compile_condition
from lamia_core.errors import InvalidInput
from lamia_sandbox.routing import (
    Choice,
    NoRoute,
    Request,
    applies,
    choose,
    entry_matches,
    host_covers,
    route_matches,
    string_match,
)
from lamia_sandbox.simulator import NEXUS_6P_CHROME, SAFARI_IPHONE

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36"


def dest(subset: str | None, weight: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"destination": {"host": "shop"}}
    if subset:
        d["destination"]["subset"] = subset
    if weight is not None:
        d["weight"] = weight
    return d


def vs(*routes: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "shop"}, "spec": {"hosts": ["shop"], "http": list(routes)}}


def req(**kw: Any) -> Request:
    return Request(**kw)


# --- StringMatch --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        ({"exact": "v1"}, "v1", True),
        ({"exact": "v1"}, "v10", False),
        ({"prefix": "/api"}, "/api/v1", True),
        ({"prefix": "/api"}, "/ap", False),
        ({"regex": "Chrome"}, CHROME, False),  # RE2 full match, as Envoy's safe_regex
        ({"regex": ".*Chrome.*"}, CHROME, True),
        ({"regex": "^.*(Nexus 6P).*$"}, NEXUS_6P_CHROME, True),
        ({"regex": "^.*(Nexus 6P).*$"}, CHROME, False),
        ({"regex": "v[0-9]+"}, "v12", True),
        ({"regex": "v[0-9]+"}, "v12a", False),
        ({}, "anything", True),  # no value: presence
        ({}, "", True),
        ({"exact": "x"}, None, False),
        ({}, None, False),
    ],
)
def test_string_match(spec: dict[str, str], value: str | None, expected: bool) -> None:
    assert string_match(spec, value) is expected


def test_string_match_errors() -> None:
    with pytest.raises(InvalidInput, match="RE2"):
        string_match({"regex": "(?=lookahead)"}, "x")
    with pytest.raises(InvalidInput, match="exactly one"):
        string_match({"exact": "a", "prefix": "a"}, "a")
    with pytest.raises(InvalidInput, match="unknown StringMatch kind"):
        string_match({"suffix": "a"}, "a")


# --- HTTPMatchRequest ---------------------------------------------------------------------------


def test_header_names_are_case_insensitive_and_values_are_not() -> None:
    m = {"headers": {"end-user": {"exact": "jason"}}}
    assert entry_matches(m, req(headers={"End-User": "jason"}))
    assert not entry_matches(m, req(headers={"end-user": "Jason"}))
    assert not entry_matches(m, req(headers={}))


def test_header_presence_and_absence() -> None:
    present = {"headers": {"x-canary": {}}}
    absent = {"withoutHeaders": {"x-canary": {}}}
    with_header, without = req(headers={"X-Canary": ""}), req(headers={"other": "1"})
    assert entry_matches(present, with_header) and not entry_matches(present, without)
    assert entry_matches(absent, without) and not entry_matches(absent, with_header)


def test_without_headers_negates_the_match_and_a_missing_header_passes() -> None:
    m = {"withoutHeaders": {"user-agent": {"regex": ".*Nexus 6P.*"}}}
    assert not entry_matches(m, req(headers={"user-agent": NEXUS_6P_CHROME}))
    assert entry_matches(m, req(headers={"user-agent": CHROME}))
    assert entry_matches(m, req(headers={}))


def test_uri_method_authority_scheme_and_query_params() -> None:
    r = req(path="/API/v1/items", method="POST", authority="shop.example.com", query={"beta": "yes"})
    assert entry_matches({"uri": {"prefix": "/API"}}, r)
    assert not entry_matches({"uri": {"prefix": "/api"}}, r)
    assert entry_matches({"uri": {"prefix": "/api"}, "ignoreUriCase": True}, r)
    assert entry_matches({"uri": {"exact": "/api/v1/items"}, "ignoreUriCase": True}, r)
    # Istio ignores case only for exact and prefix.
    assert not entry_matches({"uri": {"regex": "/api/.*"}, "ignoreUriCase": True}, r)
    assert entry_matches({"method": {"exact": "POST"}}, r)
    assert not entry_matches({"method": {"exact": "GET"}}, r)
    assert entry_matches({"authority": {"regex": ".*\\.example\\.com"}}, r)
    assert entry_matches({"scheme": {"exact": "http"}}, r)
    assert entry_matches({"queryParams": {"beta": {"exact": "yes"}}}, r)
    assert entry_matches({"queryParams": {"beta": {}}}, r)
    assert not entry_matches({"queryParams": {"alpha": {}}}, r)
    assert not entry_matches({"queryParams": {"beta": {"regex": "y"}}}, r)


def test_source_port_and_gateway_fields() -> None:
    r = req(port=8080, source_labels={"app": "web", "version": "v1"}, source_namespace="front")
    assert entry_matches({"port": 8080, "sourceLabels": {"app": "web"}, "sourceNamespace": "front"}, r)
    assert not entry_matches({"port": 9090}, r)
    assert not entry_matches({"sourceLabels": {"app": "web", "version": "v2"}}, r)
    assert entry_matches({"gateways": ["mesh"]}, r)
    assert not entry_matches({"gateways": ["istio-system/public"]}, r)
    assert entry_matches({"name": "tagged", "statPrefix": "x"}, r)
    with pytest.raises(InvalidInput, match="unsupported field 'sourceIp'"):
        entry_matches({"sourceIp": "1.2.3.4"}, r)


def test_fields_of_an_entry_are_anded_and_entries_are_ored() -> None:
    both = {"headers": {"user-agent": {"regex": ".*iPhone.*"}}, "uri": {"prefix": "/api"}}
    route = {"match": [both, {"headers": {"x-beta": {"exact": "1"}}}]}
    iphone_api = req(headers={"user-agent": SAFARI_IPHONE}, path="/api/x")
    iphone_web = req(headers={"user-agent": SAFARI_IPHONE}, path="/web")
    beta = req(headers={"x-beta": "1"}, path="/web")
    assert route_matches(route, iphone_api)
    assert not route_matches(route, iphone_web)
    assert route_matches(route, beta)
    assert route_matches({"route": []}, iphone_web)  # no match: everything
    assert route_matches({"match": []}, iphone_web)


# --- choosing a route and a destination ---------------------------------------------------------


def test_first_matching_route_wins_and_the_catch_all_takes_the_rest() -> None:
    service = vs(
        {"name": "lamia-android", "match": [{"headers": {"user-agent": {"regex": ".*Android.*"}}}],
         "route": [dest("v2", 100)]},
        {"name": "lamia-mobile", "match": [{"headers": {"user-agent": {"regex": ".*(Android|iPhone).*"}}}],
         "route": [dest("v3", 100)]},
        {"name": "lamia-default", "route": [dest("v1", 100), dest("v2", 0)]},
    )
    rng = random.Random(1)
    assert choose(service, req(headers={"user-agent": NEXUS_6P_CHROME}), rng) == Choice("lamia-android", "v2")
    assert choose(service, req(headers={"user-agent": SAFARI_IPHONE}), rng) == Choice("lamia-mobile", "v3")
    assert choose(service, req(headers={"user-agent": CHROME}), rng) == Choice("lamia-default", "v1")
    # The spec alone works too, and unnamed routes are named by position.
    assert choose({"http": [{"route": [dest("v1")]}]}, req(), rng) == ("http[0]", "v1")


def test_weights_split_traffic_in_proportion() -> None:
    service = vs({"name": "lamia-default",
                  "route": [dest("v1", 70), dest("v2", 20), dest("v3", 10), dest("v4", 0)]})
    rng = random.Random(42)
    n = 20_000
    got = Counter(choose(service, req(), rng).subset for _ in range(n))
    assert "v4" not in got
    for subset, weight in (("v1", 70), ("v2", 20), ("v3", 10)):
        p = weight / 100
        sigma = (n * p * (1 - p)) ** 0.5
        assert abs(got[subset] - n * p) < 5 * sigma, (subset, got)


def test_same_seed_same_choices() -> None:
    service = vs({"route": [dest("v1", 50), dest("v2", 50)]})
    r1, r2 = random.Random(9), random.Random(9)
    first = [choose(service, req(), r1).subset for _ in range(50)]
    assert first == [choose(service, req(), r2).subset for _ in range(50)]
    assert set(first) == {"v1", "v2"}


def test_destination_without_subset_or_weight() -> None:
    rng = random.Random(0)
    assert choose(vs({"name": "all", "route": [dest(None)]}), req(), rng) == Choice("all", None)


def test_nowhere_to_go_is_no_route() -> None:
    rng = random.Random(0)
    only_android = vs({"name": "a", "match": [{"headers": {"user-agent": {"regex": ".*Android.*"}}}],
                       "route": [dest("v2", 100)]})
    with pytest.raises(NoRoute, match="no HTTP route"):
        choose(only_android, req(headers={"user-agent": CHROME}), rng)
    with pytest.raises(NoRoute, match="positive weight"):
        choose(vs({"name": "zero", "route": [dest("v1", 0), dest("v2", 0)]}), req(), rng)
    with pytest.raises(NoRoute):
        choose(vs({"name": "redirect", "redirect": {"uri": "/elsewhere"}}), req(), rng)
    with pytest.raises(NoRoute):
        choose(vs(), req(), rng)


# --- with conditions compiled by Lamia's condition language --------------------------------------


@pytest.mark.parametrize(
    ("condition", "matching", "not_matching"),
    [
        ('header "User-Agent" regex "^.*(Chrome).*$" or header "User-Agent" regex "^.*(Nexus 6P).*$"',
         [req(headers={"user-agent": CHROME}), req(headers={"user-agent": NEXUS_6P_CHROME})],
         [req(headers={"user-agent": SAFARI_IPHONE}), req()]),
        ('cookie "group" exact "beta"',
         [req(headers={"cookie": "session=7; group=beta"}), req(headers={"cookie": "group=beta"})],
         [req(headers={"cookie": "group=betamax"}), req(headers={"cookie": "subgroup=beta"}), req()]),
        ('uri prefix "/api" and not header "user-agent" regex ".*iPhone.*"',
         [req(path="/api/x", headers={"user-agent": CHROME}), req(path="/api")],
         [req(path="/api/x", headers={"user-agent": SAFARI_IPHONE}), req(path="/web")]),
    ],
)
def test_compiled_conditions_route_as_written(
    condition: str, matching: list[Request], not_matching: list[Request]
) -> None:
    service = vs(
        {"name": "lamia-condition", "match": compile_condition(condition), "route": [dest("v2", 100)]},
        {"name": "lamia-default", "route": [dest("v1", 100)]},
    )
    rng = random.Random(0)
    for r in matching:
        assert choose(service, r, rng) == Choice("lamia-condition", "v2"), r
    for r in not_matching:
        assert choose(service, r, rng) == Choice("lamia-default", "v1"), r


def bound(gateways: list[str] | None, hosts: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"hosts": hosts, "http": [{"route": [dest("stable")]}]}
    if gateways is not None:
        spec["gateways"] = gateways
    return {"metadata": {"name": "reviews", "namespace": "shop"}, "spec": spec}


def test_a_virtual_service_applies_where_its_gateways_say() -> None:
    mesh = Request(authority="reviews")
    public = Request(authority="shop.example.com", gateway="shop/reviews-gateway")
    assert applies(bound(None, ["reviews"]), mesh), "no gateways field means the mesh"
    assert not applies(bound(None, ["reviews", "shop.example.com"]), public)
    both = bound(["mesh", "shop/reviews-gateway"], ["reviews", "shop.example.com"])
    assert applies(both, mesh) and applies(both, public)
    short = bound(["mesh", "reviews-gateway"], ["shop.example.com"])
    assert applies(short, public), "a short name is a gateway of the VirtualService's namespace"
    assert not applies(bound(["shop/reviews-gateway"], ["reviews"]), mesh), "bound to a gateway only"
    assert not applies(bound(["mesh", "shop/reviews-gateway"], ["reviews"]), public), "host not in hosts"
    assert not applies(both, Request(authority="shop.example.com", gateway="istio-system/public"))
    assert applies(bound(["shop/reviews-gateway"], ["*.example.com"]),
                   Request(authority="shop.example.com:80", gateway="shop/reviews-gateway"))


@pytest.mark.parametrize(("pattern", "host", "covered"), [
    ("shop.example.com", "shop.example.com", True), ("SHOP.example.com", "shop.example.com", True),
    ("*.example.com", "shop.example.com", True), ("*.example.com", "example.com", False),
    ("*", "anything.example", True), ("shop.example.com", "www.example.com", False),
    ("shop.example.com", "shop.example.com:8080", True),
])
def test_host_covers(pattern: str, host: str, covered: bool) -> None:
    assert host_covers(pattern, host) is covered
