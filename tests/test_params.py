"""flows/params.py: the flows' parameters as the Prefect UI's custom-run form gets them (the schema
Prefect derives from each flow), and the run names they give."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prefect.utilities.callables import parameter_schema
from pydantic import SecretStr, ValidationError

from flows.expose import expose
from flows.manual import apply_route_flow, set_weights
from flows.params import ReleaseParameters, RouteParameters, WeightsParameters
from flows.reconcile import reconcile
from flows.release import canary_release
from lamia_core.policies import ComparePolicy, HealthPolicy
from lamia_core.prometheus import PrometheusConfig

FLOWS = (canary_release, set_weights, apply_route_flow, expose, reconcile)
#: Fields that name where a secret is, not the secret: a Kubernetes Secret (expose's certificate).
REFERENCES = {"tls_secret"}


def schema_of(flow: Any) -> dict[str, Any]:
    return parameter_schema(flow.fn).model_dump()


def release_form() -> dict[str, Any]:
    return schema_of(canary_release)["definitions"]["ReleaseParameters"]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def form_order(props: dict[str, Any]) -> list[str]:
    """The order the UI's form shows fields in: by position, ties as listed."""
    return [name for name, _ in sorted(props.items(), key=lambda kv: kv[1].get("position", 0))]


def test_baseline_and_target_come_first_and_every_field_has_its_place() -> None:
    props = release_form()["properties"]
    assert form_order(props)[:5] == ["baseline", "target", "namespace", "app", "policy"]
    assert sorted(p["position"] for p in props.values()) == list(range(len(props)))
    assert set(props) == set(ReleaseParameters.model_fields), "no field lost"
    weights = schema_of(set_weights)["definitions"]["WeightsParameters"]["properties"]
    assert form_order(weights)[:4] == ["namespace", "app", "weights", "route"]
    route = schema_of(apply_route_flow)["definitions"]["RouteParameters"]["properties"]
    assert form_order(route)[:4] == ["namespace", "app", "condition", "weights"]


def test_the_policy_is_a_choice_of_kinds_each_with_its_own_fields() -> None:
    policy = release_form()["properties"]["policy"]
    options = policy["anyOf"]
    assert [o["title"] for o in options] == ["compare", "time", "health", "metric", "custom"], \
        "one button per kind, the default first"
    for option in options:
        assert option["properties"]["kind"]["const"] == option["title"]
        assert option["description"] and "\n" not in option["description"]
    health = next(o for o in options if o["title"] == "health")
    assert {"threshold", "expression", "direction"} <= set(health["properties"])
    compare = options[0]
    assert {"tolerance", "confidence", "latency"} <= set(compare["properties"])
    assert "threshold" not in compare["properties"]
    for flow in FLOWS:
        assert not [p for p, node in walk(schema_of(flow)) if "oneOf" in node], \
            f"{flow.name}: the UI shows a oneOf as raw JSON"


def test_the_choice_still_validates_as_a_discriminated_union() -> None:
    base = {"namespace": "shop", "app": "reviews", "baseline": "stable", "target": "canary"}
    chosen = ReleaseParameters.model_validate({**base, "policy": {"kind": "health", "threshold": 0.95}})
    assert isinstance(chosen.policy, HealthPolicy) and chosen.policy.threshold == 0.95
    assert isinstance(ReleaseParameters.model_validate(base).policy, ComparePolicy)
    with pytest.raises(ValidationError, match="helth"):
        ReleaseParameters.model_validate({**base, "policy": {"kind": "helth"}})
    with pytest.raises(ValidationError, match="threshold"):
        ReleaseParameters.model_validate({**base, "policy": {"kind": "compare", "threshold": 0.9}})


def test_examples_render_as_written_in_markdown() -> None:
    props = release_form()["properties"]
    assert '`header "User-Agent" regex "^.*(Chrome).*$"`' in props["condition"]["description"], \
        "in a code span the asterisks are not emphasis"
    route = schema_of(apply_route_flow)["definitions"]["RouteParameters"]["properties"]
    assert "`lamia-<route>`" in route["route"]["description"], "outside one, <route> is an HTML tag"
    custom = next(o for o in props["policy"]["anyOf"] if o["title"] == "custom")
    program = custom["properties"]["program"]["description"]
    assert r"external\_upstream\_rq\_2xx" in program, "plain text is escaped, not emphasised"


def test_no_secret_is_a_plain_parameter() -> None:
    for flow in FLOWS:
        for path, node in walk(schema_of(flow)):
            for name, prop in (node.get("properties") or {}).items():
                if not any(word in name for word in ("token", "secret", "password")) or name in REFERENCES \
                        or name.endswith(("_block", "_env")):
                    continue
                options = prop.get("anyOf", [prop])
                strings = [o for o in options if o.get("type") == "string"]
                hidden = all(o.get("format") == "password" and o.get("writeOnly") for o in strings)
                assert strings and hidden, f"{flow.name}{path}/{name} is a plain string"
    config = PrometheusConfig(url="http://prometheus:9090", bearer_token=SecretStr("s3cret-token"))
    assert "s3cret" not in str(config.model_dump(mode="json")) and "s3cret" not in repr(config)
    assert config.bearer_token is not None and config.bearer_token.get_secret_value() == "s3cret-token"


def test_run_names_say_what_the_run_does() -> None:
    common: dict[str, Any] = {"namespace": "shop", "app": "reviews"}
    assert ReleaseParameters(baseline="v9", target="v10", **common).run_name == "reviews v9→v10"
    assert WeightsParameters(weights={"stable": 90, "canary": 10}, **common).run_name == \
        "reviews weights stable=90 canary=10"
    assert WeightsParameters(weights={"v1": 50, "v2": 50}, route="mobile", **common).run_name == \
        "reviews weights mobile: v1=50 v2=50"
    route = RouteParameters(condition='header "x" exact "1"', weights={"v1": 0, "v2": 100}, **common)
    assert route.run_name == "reviews route condition: v1=0 v2=100"
