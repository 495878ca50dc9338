"""Rendering and reading back Istio manifests, checked against Istio's own CRD schemas."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lamia_core.errors import InvalidInput
from lamia_core.istio import (
    APP_LABEL,
    CONDITIONS_ANNOTATION,
    ISTIO_API,
    MANAGED_BY_LABEL,
    MANAGED_LABEL,
    gateway_from_virtual_service,
    is_delegate_for,
    matches_everything,
    pick_virtual_service,
    render_destination_rule,
    render_virtual_service,
    unadoptable,
)
from lamia_core.models import Application, Gateway, Route, Version, Weights
from tests.plugins.istio_schema import IstioValidator

#: What an object Lamia creates is labelled with.
CREATED_LABELS = {MANAGED_BY_LABEL: "lamia", MANAGED_LABEL: "true", APP_LABEL: "reviews"}
JASON = ({"headers": {"end-user": {"exact": "jason"}}},)
CHROME = ({"headers": {"user-agent": {"regex": ".*Chrome.*"}}},)
A = (JASON, {"v2": 100})
B = (CHROME, {"v2": 100})


def make_app(*versions: str, ns: str = "bookinfo", name: str = "reviews") -> Application:
    return Application(
        namespace=ns, name=name, versions=tuple(Version(name=v, deployment=f"{name}-{v}") for v in versions)
    )


def gateway(app: Application, default: dict[str, int], **conditional: tuple[tuple[dict[str, Any], ...],
                                                                                dict[str, int]]) -> Gateway:
    routes = [Route(name=n, condition=f"text of {n}", match=m, weights=Weights(w))
              for n, (m, w) in conditional.items()]
    return Gateway(application=app, routes=(*routes, Route(weights=Weights(default))))


def hand_written_vs(http: list[dict[str, Any]]) -> dict[str, Any]:
    """A VirtualService as a person writes it (the Istio bookinfo samples), as read from the cluster."""
    return {
        "apiVersion": ISTIO_API,
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "bookinfo", "resourceVersion": "41",
                     "annotations": {"owner": "team-books"}},
        "spec": {"hosts": ["reviews"], "gateways": ["mesh"], "http": http},
    }


SPLIT_90_10 = {
    "route": [
        {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10},
    ],
    "timeout": "10s",
}
JASON_TO_V2 = {
    "match": [{"headers": {"end-user": {"exact": "jason"}}}],
    "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
}


def names(vs: dict[str, Any]) -> list[str | None]:
    return [r.get("name") for r in vs["spec"]["http"]]


def split(route: dict[str, Any]) -> dict[str, int]:
    return {d["destination"]["subset"]: d["weight"] for d in route["route"]}


# --- the validator itself -----------------------------------------------------------------------


def test_validator_rejects_what_istio_rejects(istio_validator: IstioValidator) -> None:
    good = render_virtual_service(gateway(make_app("v1", "v2"), {"v1": 90, "v2": 10}, c=(JASON, {"v2": 100})))
    istio_validator.validate(good)

    def broken(change: Any) -> list[str]:
        vs = copy.deepcopy(good)
        change(vs)
        return istio_validator.errors(vs)

    def weight_as_string(vs: dict[str, Any]) -> None:
        vs["spec"]["http"][1]["route"][0]["weight"] = "90"

    def unknown_field(vs: dict[str, Any]) -> None:
        vs["spec"]["http"][1]["weights"] = {"v1": 90}

    def weight_beyond_int32(vs: dict[str, Any]) -> None:
        vs["spec"]["http"][1]["route"][0]["weight"] = 2**31

    def two_match_kinds(vs: dict[str, Any]) -> None:
        vs["spec"]["http"][0]["match"][0]["headers"]["end-user"]["prefix"] = "ja"

    def destination_without_host(vs: dict[str, Any]) -> None:
        del vs["spec"]["http"][1]["route"][0]["destination"]["host"]

    def short_timeout(vs: dict[str, Any]) -> None:
        vs["spec"]["http"][1]["timeout"] = "500us"

    def old_api(vs: dict[str, Any]) -> None:
        vs["apiVersion"] = "networking.istio.io/v1alpha2"

    def label_not_string(vs: dict[str, Any]) -> None:
        vs["metadata"]["labels"]["x"] = 1

    assert any("'90' is not of type 'integer'" in e for e in broken(weight_as_string))
    assert any("'weights' was unexpected" in e for e in broken(unknown_field))
    assert any("int32" in e for e in broken(weight_beyond_int32))
    assert any("end-user" in e for e in broken(two_match_kinds))
    assert any("'host' is a required property" in e for e in broken(destination_without_host))
    assert any("greater than 1ms" in e for e in broken(short_timeout))
    assert any(e.startswith("apiVersion") for e in broken(old_api))
    assert any(e.startswith("metadata/labels/x") for e in broken(label_not_string))
    bad = copy.deepcopy(good)
    unknown_field(bad)
    with pytest.raises(AssertionError, match="'weights' was unexpected"):
        istio_validator.validate(bad)


# --- DestinationRule ----------------------------------------------------------------------------


def test_destination_rule_has_one_subset_per_version(istio_validator: IstioValidator) -> None:
    dr = render_destination_rule(make_app("v1", "v2", "v3"))
    istio_validator.validate(dr)
    assert dr["apiVersion"] == "networking.istio.io/v1"
    assert dr["kind"] == "DestinationRule"
    assert dr["metadata"]["name"] == "reviews"
    assert dr["metadata"]["namespace"] == "bookinfo"
    assert dr["metadata"]["labels"] == CREATED_LABELS
    assert dr["spec"] == {
        "host": "reviews",
        "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2", "v3")],
    }


def test_destination_rule_onto_existing_keeps_what_lamia_does_not_own(
    istio_validator: IstioValidator,
) -> None:
    existing = {
        "apiVersion": ISTIO_API,
        "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "bookinfo", "resourceVersion": "7",
                     "labels": {"team": "books"}},
        "spec": {
            "host": "reviews.bookinfo.svc.cluster.local",
            "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}},
            "subsets": [
                {"name": "canary-debug", "labels": {"debug": "true"}},
                {"name": "v1", "labels": {"version": "v1", "tier": "gold"},
                 "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
            ],
        },
    }
    before = copy.deepcopy(existing)
    dr = render_destination_rule(make_app("v1", "v2"), existing)
    istio_validator.validate(dr)
    assert existing == before, "the object passed in is not modified"
    assert dr["metadata"]["resourceVersion"] == "7"
    # Lamia did not create it: its own labels only, no claim of app.kubernetes.io/managed-by.
    assert dr["metadata"]["labels"] == {"team": "books", MANAGED_LABEL: "true", APP_LABEL: "reviews"}
    assert dr["spec"]["host"] == "reviews.bookinfo.svc.cluster.local"
    assert dr["spec"]["trafficPolicy"] == {"loadBalancer": {"simple": "RANDOM"}}
    assert dr["spec"]["subsets"] == [
        {"name": "canary-debug", "labels": {"debug": "true"}},
        {"name": "v1", "labels": {"version": "v1", "tier": "gold"},
         "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
        {"name": "v2", "labels": {"version": "v2"}},
    ]
    assert render_destination_rule(make_app("v1", "v2"), dr) == dr


def test_destination_rule_of_another_host_is_not_taken_over() -> None:
    existing = render_destination_rule(make_app("v1", name="ratings"))
    existing["metadata"]["name"] = "reviews"
    with pytest.raises(InvalidInput, match=r"DestinationRule bookinfo/reviews is for host 'ratings', "
                                           r"not for application 'reviews'"):
        render_destination_rule(make_app("v1"), existing)


# --- VirtualService from scratch ----------------------------------------------------------------


def test_virtual_service_routes_and_weights(istio_validator: IstioValidator) -> None:
    gw = gateway(make_app("v1", "v2", "v3"), {"v1": 90, "v2": 10, "v3": 0},
                 jason=(JASON, {"v2": 100}), chrome=(CHROME, {"v1": 50, "v3": 50}))
    vs = render_virtual_service(gw)
    istio_validator.validate(vs)
    assert vs["metadata"]["name"] == "reviews"
    assert vs["metadata"]["labels"] == CREATED_LABELS
    assert json.loads(vs["metadata"]["annotations"][CONDITIONS_ANNOTATION]) == {
        "jason": "text of jason", "chrome": "text of chrome"}
    assert vs["spec"]["hosts"] == ["reviews"]
    assert vs["spec"]["http"] == [
        {"name": "lamia-jason", "match": list(JASON),
         "route": [{"destination": {"host": "reviews", "subset": "v2"}, "weight": 100}]},
        {"name": "lamia-chrome", "match": list(CHROME),
         "route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
                   {"destination": {"host": "reviews", "subset": "v3"}, "weight": 50}]},
        {"name": "lamia-default",
         "route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                   {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10},
                   {"destination": {"host": "reviews", "subset": "v3"}, "weight": 0}]},
    ]
    assert gateway_from_virtual_service(gw.application, vs) == gw


def test_destinations_follow_version_order_not_weight_order() -> None:
    app = make_app("v1", "v2")
    gw = Gateway(application=app, routes=(Route(weights=Weights({"v2": 30, "v1": 70})),))
    vs = render_virtual_service(gw)
    assert [d["destination"]["subset"] for d in vs["spec"]["http"][0]["route"]] == ["v1", "v2"]


def test_no_conditions_no_annotation() -> None:
    vs = render_virtual_service(gateway(make_app("v1"), {"v1": 100}))
    assert "annotations" not in vs["metadata"]


# --- adopting hand-written VirtualServices ------------------------------------------------------


def test_adopt_plain_split(istio_validator: IstioValidator) -> None:
    app = make_app("v1", "v2")
    existing = hand_written_vs([copy.deepcopy(SPLIT_90_10)])
    adopted = gateway_from_virtual_service(app, existing)
    assert adopted is not None
    assert [r.name for r in adopted.routes] == ["default"]
    assert adopted.default_route.weights.as_dict() == {"v1": 90, "v2": 10}

    vs = render_virtual_service(adopted.with_weights(Weights({"v1": 50, "v2": 50})), existing)
    istio_validator.validate(vs)
    assert names(vs) == ["lamia-default"]
    assert split(vs["spec"]["http"][0]) == {"v1": 50, "v2": 50}
    # The catch-all's own settings, and everything around it, stay.
    assert vs["spec"]["http"][0]["timeout"] == "10s"
    assert vs["spec"]["gateways"] == ["mesh"]
    assert vs["metadata"]["resourceVersion"] == "41"
    assert vs["metadata"]["annotations"]["owner"] == "team-books"
    # Adopting without changing weights changes only names and labels, not the traffic.
    same = render_virtual_service(adopted, existing)
    assert split(same["spec"]["http"][0]) == {"v1": 90, "v2": 10}


def test_adopt_header_match_then_catch_all(istio_validator: IstioValidator) -> None:
    app = make_app("v1", "v2", "v3")
    catch_all = {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}
    existing = hand_written_vs([copy.deepcopy(JASON_TO_V2), catch_all])
    adopted = gateway_from_virtual_service(app, existing)
    assert adopted is not None
    assert adopted.default_route.weights.as_dict() == {"v1": 100}

    canary = gateway(app, {"v1": 80, "v3": 20}, chrome=(CHROME, {"v3": 100}))
    vs = render_virtual_service(canary, existing)
    istio_validator.validate(vs)
    assert names(vs) == [None, "lamia-chrome", "lamia-default"]
    assert vs["spec"]["http"][0] == JASON_TO_V2, "the foreign route survives as it was"
    assert split(vs["spec"]["http"][2]) == {"v1": 80, "v3": 20}
    assert gateway_from_virtual_service(app, vs) == canary.model_copy(
        update={"routes": (canary.routes[0].model_copy(update={"condition": "text of chrome"}),
                           canary.routes[1])})

    # Re-render later: the foreign route is still first and untouched, Lamia's keep their places.
    again = render_virtual_service(canary.with_weights(Weights({"v1": 0, "v3": 100})), vs)
    assert names(again) == [None, "lamia-chrome", "lamia-default"]
    assert again["spec"]["http"][0] == JASON_TO_V2
    assert split(again["spec"]["http"][2]) == {"v1": 0, "v3": 100}


def test_catch_all_to_another_service_blocks_lamia() -> None:
    other = {"route": [{"destination": {"host": "ratings", "subset": "v1"}}]}
    with pytest.raises(InvalidInput,
                       match=r"VirtualService bookinfo/reviews: HTTP route #1 \(unnamed, to ratings/v1\) "
                             r"has no match and comes before Lamia's routes, so they would never be used"):
        render_virtual_service(gateway(make_app("v1"), {"v1": 100}), hand_written_vs([other]))
    assert gateway_from_virtual_service(make_app("v1"), hand_written_vs([other])) is None


def test_named_catch_all_is_not_adopted() -> None:
    named = {"name": "primary", **copy.deepcopy(SPLIT_90_10)}
    assert gateway_from_virtual_service(make_app("v1", "v2"), hand_written_vs([named])) is None
    with pytest.raises(InvalidInput, match="HTTP route 'primary' has no match"):
        render_virtual_service(gateway(make_app("v1", "v2"), {"v1": 100}), hand_written_vs([named]))


def test_unadoptable_catch_all_after_lamia_routes_is_kept() -> None:
    # Behind Lamia's default it can never match; it is someone else's to clean up.
    existing = render_virtual_service(gateway(make_app("v1"), {"v1": 100}))
    leftover = {"route": [{"destination": {"host": "ratings"}}]}
    existing["spec"]["http"].append(leftover)
    vs = render_virtual_service(gateway(make_app("v1", "v2"), {"v1": 50, "v2": 50}), existing)
    assert names(vs) == ["lamia-default", None]
    assert vs["spec"]["http"][1] == leftover


def test_virtual_service_of_another_host_is_not_taken_over() -> None:
    existing = hand_written_vs([copy.deepcopy(SPLIT_90_10)])
    existing["spec"]["hosts"] = ["ratings"]
    with pytest.raises(InvalidInput, match="routes hosts ratings, not application 'reviews'"):
        render_virtual_service(gateway(make_app("v1", "v2"), {"v1": 100}), existing)


# --- re-rendering -------------------------------------------------------------------------------


def test_rerender_keeps_positions_and_fields_lamia_does_not_own(istio_validator: IstioValidator) -> None:
    app = make_app("v1", "v2")
    gw = gateway(app, {"v1": 100}, a=(JASON, {"v2": 100}))
    vs = render_virtual_service(gw)
    foreign = {"name": "mobile", "match": [{"uri": {"prefix": "/m"}}],
               "route": [{"destination": {"host": "reviews", "subset": "v1"}}]}
    vs["spec"]["http"].insert(1, foreign)  # between lamia-a and lamia-default
    vs["spec"]["http"][2]["retries"] = {"attempts": 3}
    vs["spec"]["http"][2]["route"][0]["destination"]["port"] = {"number": 9080}

    out = render_virtual_service(gw.with_weights(Weights({"v1": 60, "v2": 40})), vs)
    istio_validator.validate(out)
    assert names(out) == ["lamia-a", "mobile", "lamia-default"]
    assert out["spec"]["http"][1] == foreign
    default = out["spec"]["http"][2]
    assert default["retries"] == {"attempts": 3}
    assert default["route"] == [
        {"destination": {"host": "reviews", "subset": "v1", "port": {"number": 9080}}, "weight": 60},
        {"destination": {"host": "reviews", "subset": "v2"}, "weight": 40},
    ]
    assert render_virtual_service(gw.with_weights(Weights({"v1": 60, "v2": 40})), out) == out


def test_new_conditional_route_goes_before_the_next_lamia_route() -> None:
    app = make_app("v1", "v2")
    vs = render_virtual_service(gateway(app, {"v1": 100}, a=(JASON, {"v2": 100})))
    vs["spec"]["http"].insert(1, copy.deepcopy(JASON_TO_V2))
    # b after a in the gateway: goes right before the default, after the foreign route.
    after = render_virtual_service(gateway(app, {"v1": 100}, a=A, b=B), vs)
    assert names(after) == ["lamia-a", None, "lamia-b", "lamia-default"]
    # b before a in the gateway: goes right before a.
    before = render_virtual_service(gateway(app, {"v1": 100}, b=B, a=A), vs)
    assert names(before) == ["lamia-b", "lamia-a", None, "lamia-default"]


def test_lamia_routes_in_the_wrong_order_are_moved_before_the_default() -> None:
    app = make_app("v1", "v2")
    vs = render_virtual_service(gateway(app, {"v1": 100}, a=A, b=B))
    vs["spec"]["http"].insert(2, copy.deepcopy(JASON_TO_V2))
    out = render_virtual_service(gateway(app, {"v1": 100}, b=B, a=A), vs)
    assert names(out) == [None, "lamia-b", "lamia-a", "lamia-default"]


def test_routes_no_longer_in_the_gateway_are_removed() -> None:
    app = make_app("v1", "v2")
    vs = render_virtual_service(gateway(app, {"v1": 100}, a=(JASON, {"v2": 100})))
    out = render_virtual_service(gateway(app, {"v1": 100}), vs)
    assert names(out) == ["lamia-default"]
    assert "annotations" not in out["metadata"]


# --- reading back -------------------------------------------------------------------------------


def test_read_back_without_lamia_routes_or_catch_all_is_none() -> None:
    assert gateway_from_virtual_service(make_app("v1"), hand_written_vs([])) is None
    only_jason = hand_written_vs([copy.deepcopy(JASON_TO_V2)])
    assert gateway_from_virtual_service(make_app("v1", "v2"), only_jason) is None


def test_read_back_drops_deleted_versions_without_traffic() -> None:
    vs = render_virtual_service(gateway(make_app("v1", "v2"), {"v1": 0, "v2": 100}))
    gw = gateway_from_virtual_service(make_app("v2"), vs)
    assert gw is not None and gw.default_route.weights.as_dict() == {"v2": 100}


def test_read_back_refuses_traffic_to_a_missing_version() -> None:
    vs = render_virtual_service(gateway(make_app("v1", "v2"), {"v1": 10, "v2": 90}))
    with pytest.raises(InvalidInput, match=r"VirtualService bookinfo/reviews: .*unknown version\(s\) v1"):
        gateway_from_virtual_service(make_app("v2"), vs)


def test_read_back_refuses_weights_not_summing_to_100() -> None:
    vs = render_virtual_service(gateway(make_app("v1", "v2"), {"v1": 10, "v2": 90}))
    vs["spec"]["http"][0]["route"][0]["weight"] = 20
    with pytest.raises(InvalidInput,
                       match=r"bookinfo/reviews: HTTP route 'lamia-default': .*sum to 100, got 110"):
        gateway_from_virtual_service(make_app("v1", "v2"), vs)


def test_read_back_with_unreadable_condition_annotation_keeps_the_match() -> None:
    gw = gateway(make_app("v1", "v2"), {"v1": 100}, a=(JASON, {"v2": 100}))
    vs = render_virtual_service(gw)
    vs["metadata"]["annotations"][CONDITIONS_ANNOTATION] = "{not json"
    back = gateway_from_virtual_service(gw.application, vs)
    assert back is not None
    assert back.routes[0].condition is None
    assert back.routes[0].match == JASON


def test_conditional_routes_without_default_are_refused() -> None:
    vs = render_virtual_service(gateway(make_app("v1", "v2"), {"v1": 100}, a=(JASON, {"v2": 100})))
    del vs["spec"]["http"][1]
    with pytest.raises(InvalidInput, match="conditional routes but no default route"):
        gateway_from_virtual_service(make_app("v1", "v2"), vs)


# --- properties ---------------------------------------------------------------------------------

version_names = st.lists(st.from_regex(r"\A[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4})?\Z"),
                         min_size=1, max_size=6, unique=True)


@st.composite
def weights_over(draw: st.DrawFn, versions: list[str]) -> dict[str, int]:
    named = draw(st.lists(st.sampled_from(versions), min_size=1, max_size=len(versions), unique=True))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=len(named) - 1, max_size=len(named) - 1)))
    bounds = [0, *cuts, 100]
    return {v: bounds[i + 1] - bounds[i] for i, v in enumerate(named)}


@st.composite
def gateways(draw: st.DrawFn) -> Gateway:
    versions = draw(version_names)
    app = make_app(*versions)
    n_conditional = draw(st.integers(0, 3))
    routes = [
        Route(name=f"c{i}", condition=draw(st.text(max_size=30)),
              match=({"headers": {f"h{i}": {"exact": draw(st.text(min_size=1, max_size=10))}}},),
              weights=Weights(draw(weights_over(versions))))
        for i in range(n_conditional)
    ]
    return Gateway(application=app, routes=(*routes, Route(weights=Weights(draw(weights_over(versions))))))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gw=gateways(), new_default=st.data())
def test_random_gateways_render_schema_valid_and_read_back(
    istio_validator: IstioValidator, gw: Gateway, new_default: st.DataObject
) -> None:
    dr = render_destination_rule(gw.application)
    vs = render_virtual_service(gw)
    istio_validator.validate(dr)
    istio_validator.validate(vs)
    assert gateway_from_virtual_service(gw.application, vs) == gw
    assert render_virtual_service(gw, vs) == vs, "re-rendering onto itself changes nothing"
    assert render_destination_rule(gw.application, dr) == dr
    # Changing weights touches nothing but weights.
    weights = Weights(new_default.draw(weights_over(gw.application.version_names)))
    moved = render_virtual_service(gw.with_weights(weights), vs)
    istio_validator.validate(moved)
    assert moved["spec"]["http"][:-1] == vs["spec"]["http"][:-1]
    assert split(moved["spec"]["http"][-1]) == {
        v: weights[v] for v in gw.application.version_names if v in weights.root}


# --- which objects are the gateway, and what is in the way ---------------------------------------


def _vs(name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": ISTIO_API, "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "bookinfo", **meta}, "spec": spec}


TO_REVIEWS = {"route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 100}]}


def test_the_gateway_is_found_by_host_or_as_the_delegate_it_hands_the_host_to() -> None:
    app = make_app("v1", "v2")
    fqdn = _vs("reviews-route", {"hosts": ["reviews.bookinfo.svc.cluster.local"], "http": [TO_REVIEWS]})
    public = _vs("reviews", {"hosts": ["bookinfo.example.com"], "http": [TO_REVIEWS]})
    assert pick_virtual_service(app, [public, fqdn]) is fqdn, "by host, not by name"
    assert pick_virtual_service(app, [public]) is None

    delegate = _vs("reviews-delegate", {"http": [TO_REVIEWS]})
    root = _vs("reviews", {"hosts": ["reviews"], "http": [
        {"match": [{"uri": {"prefix": "/v2"}}], "delegate": {"name": "reviews-delegate"}}]})
    assert pick_virtual_service(app, [root, delegate]) is delegate
    assert pick_virtual_service(app, [public, delegate]) is delegate, "a delegate used from a public root"
    assert is_delegate_for(delegate, app) and not is_delegate_for(public, app)

    with pytest.raises(InvalidInput, match=r"several VirtualServices .* \(reviews, reviews-route\)"):
        pick_virtual_service(app, [_vs("reviews", {"hosts": ["reviews"]}), fqdn])


def test_a_delegate_stays_host_less(istio_validator: IstioValidator) -> None:
    app = make_app("v1", "v2")
    delegate = _vs("reviews", {"http": [copy.deepcopy(TO_REVIEWS)]})
    adopted = gateway_from_virtual_service(app, delegate)
    assert adopted is not None
    vs = render_virtual_service(adopted.with_weights(Weights({"v1": 80, "v2": 20})), delegate)
    istio_validator.validate(vs)
    assert "hosts" not in vs["spec"]
    assert render_virtual_service(adopted)["spec"]["hosts"] == ["reviews"], "a new one gets the host"


@pytest.mark.parametrize("match", [
    None, [{"uri": {"prefix": "/"}}], [{"uri": {"regex": ".*"}}], [{"uri": {"regex": "^/.*$"}}],
    [{"headers": {"x": {"exact": "1"}}}, {"uri": {"prefix": ""}}], [{"name": "all", "ignoreUriCase": True}],
])
def test_a_foreign_route_matching_everything_before_lamias_is_refused_by_name(
    match: list[dict[str, Any]] | None,
) -> None:
    route = {"name": "legacy", "route": [{"destination": {"host": "reviews-legacy"}}]}
    if match is not None:
        route["match"] = match
    assert matches_everything(route)
    with pytest.raises(InvalidInput, match=r"HTTP route 'legacy' (has no match|matches every request)"):
        render_virtual_service(gateway(make_app("v1"), {"v1": 100}), hand_written_vs([route]))


@pytest.mark.parametrize("match", [
    [{"uri": {"prefix": "/api"}}], [{"uri": {"regex": "/api/.*"}}],
    [{"uri": {"prefix": "/"}, "method": {"exact": "GET"}}],
    [{"uri": {"prefix": "/"}, "headers": {"end-user": {"exact": "jason"}}}], [{"port": 9080}],
])
def test_a_foreign_route_matching_some_requests_stays_before_lamias(match: list[dict[str, Any]]) -> None:
    route = {"name": "legacy", "match": match, "route": [{"destination": {"host": "reviews-legacy"}}]}
    assert not matches_everything(route)
    vs = render_virtual_service(gateway(make_app("v1"), {"v1": 100}), hand_written_vs([route]))
    assert names(vs) == ["legacy", "lamia-default"]


def test_refusals_name_the_route_without_cutting_it_short() -> None:
    long = {"route": [{"destination": {"host": f"reviews-{i}.bookinfo.svc.cluster.local"}, "weight": 25}
                      for i in range(4)]}
    with pytest.raises(InvalidInput) as caught:
        render_virtual_service(gateway(make_app("v1"), {"v1": 100}), hand_written_vs([long]))
    text = str(caught.value)
    dests = ", ".join(f"reviews-{i}.bookinfo.svc.cluster.local 25" for i in range(4))
    assert f"#1 (unnamed, to {dests})" in text


def test_objects_another_controller_generates_are_not_taken_over() -> None:
    owned = {"ownerReferences": [{"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "reviews",
                                  "uid": "1", "controller": True}]}
    vs = _vs("reviews", {"hosts": ["reviews"], "http": [TO_REVIEWS]}, **owned)
    with pytest.raises(InvalidInput, match=r"generated by Canary reviews \(flagger.app\)"):
        render_virtual_service(gateway(make_app("v1"), {"v1": 100}), vs)
    dr = render_destination_rule(make_app("v1"))
    dr["metadata"].update(owned)
    with pytest.raises(InvalidInput, match=r"generated by Canary reviews \(flagger.app\)"):
        render_destination_rule(make_app("v1"), dr)


def test_tcp_only_virtual_service_is_refused() -> None:
    tcp = _vs("reviews", {"hosts": ["reviews"], "tcp": [{"route": [
        {"destination": {"host": "reviews", "subset": "v1"}}]}]})
    assert unadoptable(make_app("v1"), tcp) is not None
    with pytest.raises(InvalidInput, match="routes only TCP traffic"):
        render_virtual_service(gateway(make_app("v1"), {"v1": 100}), tcp)
