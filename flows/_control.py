"""Control of a running release by hand: pause, resume, promote now, and approval.

`lamia release pause|resume|promote` send a :class:`Control` to the release's
flow run as a flow-run input (Prefect's key-value store of a run, keyed
``lamia-control-…``); the release reads them while it waits between checks,
within a second. Approval uses Prefect's own pause with a form
(:class:`Approval`), so that the Prefect UI's Resume button answers it too;
while the run waits for it the checks go on in a thread and are recorded,
and a failing check ends the wait with a rollback.
"""

from __future__ import annotations

import getpass
import socket
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal, cast
from uuid import UUID

from prefect.input import RunInput
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONTROL_PREFIX = "lamia-control-"
Action = Literal["pause", "resume", "promote"]


def who() -> str:
    """Who runs this command, for the history: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "someone"
    return f"{user}@{socket.gethostname()}"


class Control(BaseModel):
    """One request of a person to a running release."""

    model_config = ConfigDict(frozen=True)

    action: Action
    by: str = Field(max_length=200)
    why: str = Field("", max_length=2000)
    at: str = ""

    def credit(self) -> str:
        """``by ann@laptop (flaky dashboard)``: who, and why when said."""
        return f"by {self.by}" + (f" ({self.why})" if self.why else "")

    def describe(self) -> str:
        return f"{self.action} {self.credit()}"


def send(flow_run_id: UUID, control: Control) -> None:
    """Hand ``control`` to the running release ``flow_run_id``."""
    from prefect.input.actions import create_flow_run_input

    stamped = control.model_copy(update={"at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")})
    create_flow_run_input(key=f"{CONTROL_PREFIX}{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}",
                          value=stamped.model_dump(), flow_run_id=flow_run_id, sender=control.by)


class Controls:
    """The controls a release has received, read as it waits; the flags they leave."""

    def __init__(self, flow_run_id: str) -> None:
        self.flow_run_id = UUID(flow_run_id)
        self.seen: set[str] = set()
        self.paused: Control | None = None
        self.promote: Control | None = None

    def poll(self) -> list[Control]:
        """The controls sent since the last poll, in order; a Prefect server away reads as none."""
        from prefect.input.actions import filter_flow_run_input

        try:
            found = filter_flow_run_input(key_prefix=CONTROL_PREFIX, limit=50, exclude_keys=self.seen,
                                          flow_run_id=self.flow_run_id)
        except Exception:  # Prefect away: nobody can send one through it either
            return []
        new: list[Control] = []
        for item in sorted(cast("list[Any]", found), key=lambda i: str(i.key)):
            self.seen.add(item.key)
            try:
                control = Control.model_validate_json(item.value)
            except ValidationError:
                continue
            new.append(control)
            if control.action == "pause":
                self.paused = control
            elif control.action == "resume":
                self.paused = None
            elif control.action == "promote":
                self.promote = control
        return new


class Approval(RunInput):
    """What a person answers when a release waits for approval. There is no default: a form submitted
    untouched is refused instead of rolling the release back."""

    decision: Literal["go on", "roll back"] = Field(
        description="'go on': the release continues toward the target; 'roll back': the baseline gets all "
        "the traffic back")
    comment: str = Field("", max_length=2000, description="Why, for the history")
    by: str = Field("", max_length=200, description="Who answers (the CLI fills it in)")
