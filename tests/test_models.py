"""The domain model: weights, names, gateways and their edits."""

from __future__ import annotations

import pytest

from lamia_core.errors import InvalidInput, WeightsError
from lamia_core.models import Application, Gateway, Route, Version, Weights, parse_weights

APP = Application(
    namespace="shop",
    name="reviews",
    versions=(Version(name="v1", deployment="reviews-v1"), Version(name="v2", deployment="reviews-v2")),
)
MATCH = ({"headers": {"user-agent": {"regex": ".*Chrome.*"}}},)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("v1=90,v2=20", "must sum to 100, got 110 (v1=90, v2=20)"),
        ("v1=-10,v2=110", "between 0 and 100: v1=-10, v2=110"),
        ("v1=90,v2", "'v2' is not of the form VERSION=WEIGHT"),
        ("v1=ninety", "weight of version 'v1' must be an integer, got 'ninety'"),
        ("v1=50,v1=50", "version 'v1' is given more than one weight"),
        ("", "no weights given"),
        ("v 1=100", "'v 1' is not a valid Kubernetes label value"),
    ],
)
def test_bad_weights_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises((WeightsError, InvalidInput)) as err:
        parse_weights(spec)
    assert message in str(err.value)


def test_weights_parse_from_one_string_or_several() -> None:
    assert parse_weights("v1=90,v2=10") == parse_weights(["v1=90", "v2=10"])
    assert parse_weights(["v1=80", "v2=20"]).as_dict() == {"v1": 80, "v2": 20}
    assert Weights.all_on("v2", ["v1", "v3"]).as_dict() == {"v1": 0, "v3": 0, "v2": 100}
    assert Weights({"v1": "100"})["v1"] == 100 and Weights({"v1": 100})["absent"] == 0


def test_names_are_checked_as_kubernetes_does() -> None:
    with pytest.raises(InvalidInput, match="namespace 'Shop'"):
        Application(namespace="Shop", name="reviews")
    with pytest.raises(InvalidInput, match="version '-v1'"):
        Version(name="-v1", deployment="d")
    with pytest.raises(InvalidInput, match="route name 'Canary'"):
        Route(name="Canary", match=MATCH, weights=Weights({"v1": 100}))


def test_gateway_shape_is_checked() -> None:
    default = Route(weights=Weights({"v1": 100}))
    canary = Route(name="canary", match=MATCH, weights=Weights({"v2": 100}))
    with pytest.raises(InvalidInput, match="has no condition but is not the last route"):
        Gateway(application=APP, routes=(default, canary))
    with pytest.raises(InvalidInput, match="last route must be the default"):
        Gateway(application=APP, routes=(canary,))
    with pytest.raises(InvalidInput, match="unique"):
        Gateway(application=APP, routes=(canary, canary, default))
    with pytest.raises(InvalidInput, match="unknown version"):
        Gateway(application=APP, routes=(Route(weights=Weights({"v9": 100})),))


def test_routes_are_added_before_the_default_replaced_in_place_and_removed() -> None:
    gateway = Gateway(application=APP, routes=(Route(weights=Weights({"v1": 100})),))
    canary = Route(name="canary", condition="header ...", match=MATCH, weights=Weights({"v1": 50, "v2": 50}))
    added = gateway.with_route(canary)
    assert [r.name for r in added.routes] == ["canary", "default"]
    moved = added.with_weights(Weights({"v2": 100}), route="canary")
    assert moved.route("canary").weights.as_dict() == {"v2": 100}
    assert moved.default_route.weights.as_dict() == {"v1": 100}
    assert [r.name for r in moved.without_route("canary").routes] == ["default"]
    with pytest.raises(InvalidInput, match="default route cannot be removed"):
        moved.without_route("default")
    with pytest.raises(InvalidInput, match="has no route 'nope'"):
        moved.with_weights(Weights({"v1": 100}), route="nope")
