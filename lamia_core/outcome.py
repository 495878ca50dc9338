"""How a Lamia run ended: one vocabulary for the flow's state, its events, the CLI and JSON.

The value is the word people see (``rolled-back``, in JSON and the CLI); the
Prefect state, the run's outcome tag, the event name and the exit code derive
from it, so that a held or cancelled release can never be reported under
another outcome's name.

The Prefect state keeps Prefect's own name for its type (``Completed``,
``Failed``, ``Cancelled``): the Prefect UI's deployment page lists a
deployment's runs filtered by state *name*, over Prefect's names only, so a run
ending in a state named ``Promoted`` or ``RolledBack`` was hidden there. What
those names said is in the run's tag ``lamia/outcome:<value>`` (shown beside
the run everywhere in the UI, and what :meth:`Outcome.of_run` reads), in the
state's message, which starts with the outcome, and in the run's summary.
Runs recorded under the former names are still understood.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from enum import StrEnum
from typing import Literal

#: Prefect's state types, named without importing Prefect.
StateType = Literal["COMPLETED", "FAILED", "CANCELLED"]
EVENT_PREFIX = "lamia.release"
#: The tag that names a finished run's outcome: ``lamia/outcome:rolled-back``.
OUTCOME_TAG_PREFIX = "lamia/outcome:"
#: The state names Lamia gave its runs before it used Prefect's own (runs recorded then).
LEGACY_STATE_NAMES = {
    "Promoted": "promoted", "RolledBack": "rolled-back", "Held": "held", "Interrupted": "interrupted",
    "Applied": "applied",
}


class Outcome(StrEnum):
    PROMOTED = "promoted"
    """The target has all the traffic."""
    ROLLED_BACK = "rolled-back"
    """The judge found the target worse (or the release could not progress): the baseline has it all."""
    HELD = "held"
    """The policy's final action is hold: the weights stay where the release stopped."""
    INTERRUPTED = "interrupted"
    """Another writer changed the release's route or lease: Lamia stopped and left their change."""
    FAILED = "failed"
    """The release itself failed (an error, not a verdict); the baseline was put back."""
    CANCELLED = "cancelled"
    """Someone cancelled the run; the baseline was put back."""
    APPLIED = "applied"
    """A manual change (set-weights, apply-route) was written."""

    @property
    def state_name(self) -> str:
        """The Prefect state's name, Prefect's own for its type (``Failed`` for rolled-back): the only
        names the Prefect UI's deployment page lists (see the module's docstring)."""
        return self.state_type.capitalize()

    @property
    def words(self) -> str:
        """The outcome in a sentence: ``rolled back``."""
        return self.value.replace("-", " ")

    @property
    def heading(self) -> str:
        """The outcome as a heading or a badge: ``Rolled back``."""
        return self.words.capitalize()

    @property
    def tag(self) -> str:
        """The run's tag that says how it ended: ``lamia/outcome:rolled-back``."""
        return f"{OUTCOME_TAG_PREFIX}{self.value}"

    @property
    def state_type(self) -> StateType:
        if self in (Outcome.PROMOTED, Outcome.HELD, Outcome.APPLIED):
            return "COMPLETED"
        return "CANCELLED" if self is Outcome.CANCELLED else "FAILED"

    @property
    def event(self) -> str:
        """The Prefect event emitted when a run ends so: ``lamia.release.rolled-back``."""
        return f"{EVENT_PREFIX}.{self.value}"

    @property
    def exit_code(self) -> int:
        """0 when what was asked for happened (promoted, held as asked, applied); 1 otherwise."""
        return 0 if self.state_type == "COMPLETED" else 1

    @classmethod
    def from_state_name(cls, name: str | None) -> Outcome | None:
        """The outcome a state name alone says: only the names of runs recorded before Lamia used
        Prefect's own (``Promoted``); ``Completed`` or ``Failed`` say no outcome (see :meth:`of_run`)."""
        value = LEGACY_STATE_NAMES.get(name or "")
        return cls(value) if value else None

    @classmethod
    def from_tags(cls, tags: Iterable[str]) -> Outcome | None:
        for tag in tags:
            if tag.startswith(OUTCOME_TAG_PREFIX):
                with contextlib.suppress(ValueError):
                    return cls(tag.removeprefix(OUTCOME_TAG_PREFIX))
        return None

    @classmethod
    def of_run(cls, tags: Iterable[str], state_type: str | None, state_name: str | None) -> Outcome | None:
        """How a run ended, from what Prefect keeps of it: its outcome tag, else a former state name,
        else its state type for runs that ended before Lamia could say (failed, crashed, cancelled);
        None while it runs, or for a run that completed without an outcome."""
        found = cls.from_tags(tags) or cls.from_state_name(state_name)
        if found is not None:
            return found
        kind = (state_type or "").upper()
        if kind in ("FAILED", "CRASHED"):
            return Outcome.FAILED
        return Outcome.CANCELLED if kind == "CANCELLED" else None
