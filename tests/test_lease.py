"""The release lease annotation: taking, refusing, dropping, and unreadable leases."""

from __future__ import annotations

import json

import pytest

from lamia_core.errors import ReleaseLocked
from lamia_core.lease import LEASE_ANNOTATION, Lease, drop_lease, lease_of, take_lease

VS = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "reviews", "namespace": "shop", "annotations": {"keep": "me"}},
    "spec": {},
}


def test_take_then_drop_round_trips_and_keeps_other_annotations() -> None:
    lease = Lease.new("run-1", "brave-lion", target="v2", baseline="v1", route="default")
    held = take_lease(VS, lease, app="reviews")
    assert lease_of(held) == lease
    assert held["metadata"]["annotations"]["keep"] == "me"
    assert LEASE_ANNOTATION not in VS["metadata"]["annotations"], "the input is not modified"
    dropped = drop_lease(held, "run-1")
    assert dropped is not None and lease_of(dropped) is None
    assert dropped["metadata"]["annotations"] == {"keep": "me"}


def test_another_holder_is_refused_by_name_unless_known_stale() -> None:
    held = take_lease(VS, Lease.new("run-1", "brave-lion", target="v2"), app="reviews")
    with pytest.raises(ReleaseLocked, match="brave-lion"):
        take_lease(held, Lease.new("run-2"), app="reviews")
    taken = take_lease(held, Lease.new("run-2", "calm-otter"), app="reviews", stale=frozenset({"run-1"}))
    assert lease_of(taken) is not None and lease_of(taken).holder == "run-2"  # type: ignore[union-attr]
    assert take_lease(held, Lease.new("run-1", "brave-lion"), app="reviews"), "the holder may renew"


def test_dropping_someone_elses_lease_writes_nothing() -> None:
    held = take_lease(VS, Lease.new("run-1"), app="reviews")
    assert drop_lease(held, "run-2") is None
    assert drop_lease(VS, "run-1") is None


def test_an_unreadable_lease_counts_as_held() -> None:
    garbage = json.loads(json.dumps(VS))
    garbage["metadata"]["annotations"][LEASE_ANNOTATION] = "{not json"
    lease = lease_of(garbage)
    assert lease is not None and lease.name == "unreadable lease annotation"
    with pytest.raises(ReleaseLocked):
        take_lease(garbage, Lease.new("run-2"), app="reviews")
