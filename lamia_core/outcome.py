"""How a Lamia run ended: one vocabulary for the flow's state, its events, the CLI and JSON.

The value is the word people see (``rolled-back``, in JSON and the CLI); the
Prefect state name, the event name and the exit code derive from it, so that a
held or cancelled release can never be reported under another outcome's name.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

#: Prefect's state types, named without importing Prefect.
StateType = Literal["COMPLETED", "FAILED", "CANCELLED"]
EVENT_PREFIX = "lamia.release"


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
        """The Prefect state's name: ``RolledBack``."""
        return "".join(part.capitalize() for part in self.value.split("-"))

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
        for outcome in cls:
            if outcome.state_name == name:
                return outcome
        return None
