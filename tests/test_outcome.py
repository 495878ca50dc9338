"""lamia_core/outcome.py: one vocabulary of outcomes, and what each says to Prefect and to people."""

from __future__ import annotations

import pytest
from prefect.states import Cancelled, Completed, Crashed, Failed

from lamia_core.outcome import Outcome

#: Prefect's own state names, one per type a run can end in: the names the UI lists runs by.
PREFECT_NAMES = {s().type.value: s().name for s in (Completed, Failed, Cancelled, Crashed)}


@pytest.mark.parametrize("outcome", list(Outcome))
def test_each_outcome_ends_in_prefects_own_state_name_for_its_type(outcome: Outcome) -> None:
    assert outcome.state_name == PREFECT_NAMES[outcome.state_type]
    assert outcome.exit_code == (0 if outcome.state_type == "COMPLETED" else 1)
    assert Outcome.from_tags(["lamia", outcome.tag, "lamia/app:shop/reviews"]) is outcome
    assert Outcome.of_run([outcome.tag], outcome.state_type, outcome.state_name) is outcome


def test_what_each_outcome_says() -> None:
    assert Outcome.ROLLED_BACK.tag == "lamia/outcome:rolled-back"
    assert Outcome.ROLLED_BACK.heading == "Rolled back" and Outcome.PROMOTED.heading == "Promoted"
    assert Outcome.ROLLED_BACK.event == "lamia.release.rolled-back"
    assert {o.state_type for o in (Outcome.PROMOTED, Outcome.HELD, Outcome.APPLIED)} == {"COMPLETED"}
    assert Outcome.CANCELLED.state_type == "CANCELLED" and Outcome.INTERRUPTED.state_type == "FAILED"


def test_runs_recorded_under_the_former_state_names_are_still_understood() -> None:
    assert Outcome.from_state_name("RolledBack") is Outcome.ROLLED_BACK
    assert Outcome.of_run([], "COMPLETED", "Promoted") is Outcome.PROMOTED
    assert Outcome.of_run([], "COMPLETED", "Held") is Outcome.HELD
    assert Outcome.from_state_name("Completed") is None, "Completed alone says promoted, held or applied"


def test_a_run_without_an_outcome_tag_is_judged_by_its_state_type() -> None:
    assert Outcome.of_run(["lamia"], "CRASHED", "Crashed") is Outcome.FAILED
    assert Outcome.of_run([], "FAILED", "Failed") is Outcome.FAILED
    assert Outcome.of_run([], "CANCELLED", "Cancelled") is Outcome.CANCELLED
    assert Outcome.of_run([], "RUNNING", "Running") is None
    assert Outcome.of_run(["lamia/outcome:exploded"], "COMPLETED", "Completed") is None, "an unknown tag"
