"""The supervisor's decision (lamia_core.recovery) and the lease's sense of time, in virtual time."""

from __future__ import annotations

import json

import pytest

from lamia_core.lease import (
    LEASE_ANNOTATION,
    MIN_WORKER_LOSS_SECONDS,
    Lease,
    lease_of,
    put_lease,
    worker_loss_bound,
)
from lamia_core.recovery import MAX_RESUMES, RunInfo, assess

T0 = 1_800_000_000.0
RUNNING = RunInfo(found=True, state_type="RUNNING", state_name="Running")
CRASHED = RunInfo(found=True, state_type="CRASHED", state_name="Crashed")
UNKNOWN = RunInfo(found=False)


def release_lease(**fields: object) -> Lease:
    base: dict[str, object] = {"baseline": "stable", "route": "default", "timeout": 30.0, "step": 3,
                               "state": {"phase": "progressing", "steps": 3}}
    base.update(fields)
    return Lease.new("8c1d1e7e-9a5b-4f57-8f0e-5b2d6a1c3e44", "cart stable→canary", target="canary", now=T0,
                     **base)


def test_the_bound_is_three_intervals_and_at_least_thirty_seconds() -> None:
    assert worker_loss_bound(10) == MIN_WORKER_LOSS_SECONDS == 30
    assert worker_loss_bound(60) == 180


def test_a_heartbeat_keeps_a_holder_alive_and_its_absence_makes_it_dead() -> None:
    lease = release_lease()
    assert lease.silent_for(T0 + 12) == pytest.approx(12, abs=0.01)
    assert not lease.is_stale(T0 + 29)
    assert lease.is_stale(T0 + 31)
    assert not lease.renewed(T0 + 25).is_stale(T0 + 31), "a renewal restarts the clock"
    assert not release_lease(timeout=None).is_stale(T0 + 10_000), "no timeout: a manual change's lease"


def test_the_lease_round_trips_through_its_annotation_and_stays_small() -> None:
    lease = release_lease(state={"phase": "progressing", "weights": {"stable": 60, "canary": 40}, "steps": 2},
                          slot="0f4e0d59-56e2-4e4a-9e1b-4bbf1b1f1b1f", deployment="3c6e",
                          on_worker_loss="resume")
    vs = put_lease({"metadata": {"name": "cart"}}, lease)
    raw = vs["metadata"]["annotations"][LEASE_ANNOTATION]
    assert json.loads(raw)["v"] == 2 and len(raw) < 1024
    assert lease_of(vs) == lease


def test_a_newer_format_is_held_by_someone_lamia_cannot_read() -> None:
    vs = {"metadata": {"annotations": {LEASE_ANNOTATION: json.dumps({"v": 3, "holder": "x"})}}}
    lease = lease_of(vs)
    assert lease is not None and lease.name == "unreadable lease annotation" and lease.timeout is None


def test_a_live_holder_is_left_alone() -> None:
    assert assess(release_lease(), T0 + 10, RUNNING).action == "none"
    assert assess(release_lease(), T0 + 10, UNKNOWN).action == "none", "another server's live run"


def test_a_dead_worker_is_rolled_back_saying_at_which_step() -> None:
    recovery = assess(release_lease(), T0 + 45, RUNNING)
    assert recovery.action == "rollback"
    assert "the worker died at step 3 (no heartbeat for 45 s, more than its 30 s)" in recovery.reason
    assert assess(release_lease(), T0 + 45, UNKNOWN).action == "rollback", "the heartbeat is the cluster's"


def test_a_run_that_ended_without_ending_its_release_is_rolled_back_at_once() -> None:
    recovery = assess(release_lease(), T0 + 1, CRASHED)
    assert recovery.action == "rollback" and "died at step 3 (its flow run is Crashed" in recovery.reason
    failed = assess(release_lease(), T0 + 1, RunInfo(found=True, state_type="FAILED", state_name="Failed"))
    assert failed.action == "rollback" and "ended (Failed) at step 3" in failed.reason
    wants = release_lease(on_worker_loss="resume", deployment="7d1f0f2b-5a1e-4d4a-9a40-3f0f1c2d3e4f")
    assert assess(wants, T0 + 1, CRASHED).action == "resume", "a crashed worker is resumed when asked"


def test_an_ended_release_only_loses_its_lease() -> None:
    promoted = release_lease(state={"phase": "promoted", "steps": 6})
    assert assess(promoted, T0 + 1, CRASHED).action == "drop"
    assert assess(promoted, T0 + 60, RUNNING).action == "drop", "killed between the last write and the drop"
    assert assess(promoted, T0 + 5, RUNNING).action == "none", "it is still finishing"
    manual = Lease.new("4f0c", "by hand", kind="set-weights", now=T0)
    assert assess(manual, T0 + 999, RUNNING).action == "none"
    assert assess(manual, T0 + 1, CRASHED).action == "drop"


def test_resume_is_asked_for_and_bounded() -> None:
    wants = release_lease(on_worker_loss="resume", deployment="7d1f0f2b-5a1e-4d4a-9a40-3f0f1c2d3e4f")
    assert assess(wants, T0 + 45, RUNNING).action == "resume"
    assert assess(wants.model_copy(update={"resumes": MAX_RESUMES}), T0 + 45, RUNNING).action == "rollback"
    local = assess(wants.model_copy(update={"deployment": None}), T0 + 45, RUNNING)
    assert local.action == "rollback" and "not started from a deployment" in local.reason
    assert assess(wants.model_copy(update={"state": None}), T0 + 45, RUNNING).action == "rollback"
