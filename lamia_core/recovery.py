"""What to do about a release lease whose holder may be gone: the supervisor's decision, pure.

``lamia-reconcile`` (and a release that finds the lease of an earlier one)
looks at each lease on the cluster with what Prefect says of its run and the
time, and :func:`assess` says what puts it right:

- ``none``: the holder is alive (its heartbeat is recent), or it is not ours
  to judge (another Prefect server's run whose heartbeat is still fresh);
- ``drop``: the release had already ended (its last recorded state is
  terminal) or the lease was a manual change's, so the gateway is as someone
  asked: only the lease goes;
- ``rollback``: the worker died (no heartbeat for longer than the lease's
  timeout, or its run Crashed) or its run ended without ending the release:
  the baseline recorded in the lease goes back on its route, in the same
  write as dropping the lease;
- ``resume``: the worker died and the release asked to be resumed
  (``on_worker_loss: resume``), was started from a deployment, and has not been
  resumed too often already: a new run of that deployment takes the lease over
  and continues from the state recorded in it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from lamia_core.lease import Lease
from lamia_core.outcome import Outcome

Action = Literal["none", "drop", "rollback", "resume"]
#: Prefect state types after which a run cannot write again.
FINAL_STATE_TYPES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})
#: Engine phases in which the gateway is where the release left it on purpose.
TERMINAL_PHASES = frozenset(o.value for o in (Outcome.PROMOTED, Outcome.ROLLED_BACK, Outcome.HELD))
#: A release is resumed on a new worker at most this many times, then rolled back.
MAX_RESUMES = 2


class RunInfo(BaseModel):
    """What the Prefect server knows of the lease holder's flow run."""

    model_config = ConfigDict(frozen=True)

    found: bool
    """Whether this Prefect server has the run at all (a lease may be another server's)."""
    state_type: str | None = None
    state_name: str | None = None

    @property
    def final(self) -> bool:
        return self.found and self.state_type in FINAL_STATE_TYPES


class Recovery(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: Action
    reason: str


def _phase(lease: Lease) -> str | None:
    phase = (lease.state or {}).get("phase")
    return phase if isinstance(phase, str) else None


def assess(lease: Lease, now: float, run: RunInfo, *, max_resumes: int = MAX_RESUMES) -> Recovery:
    """What to do about ``lease`` at time ``now`` (epoch seconds), given its holder's run."""
    silent = lease.silent_for(now)
    quiet = f"no heartbeat for {silent:.0f} s" if silent is not None else "no heartbeat recorded"
    at = f"at step {lease.step}" if lease.step else "before its first step"
    phase = _phase(lease)
    if lease.timeout is None:
        # A manual change (set-weights, apply-route) holds the lease for one write and records no
        # baseline: once its run is over, nothing is half done.
        if run.final:
            return Recovery(action="drop", reason=f"{lease.kind} run ended ({run.state_name}) without "
                                                  "giving its lease back")
        return Recovery(action="none", reason=f"{lease.kind} run still {run.state_name or 'unknown'}")
    if phase in TERMINAL_PHASES:
        if run.final or lease.is_stale(now):
            return Recovery(action="drop", reason=f"the release had ended ({Outcome(phase).words}) but "
                                                  f"its lease was not given back ({quiet})")
        return Recovery(action="none", reason=f"the release is ending ({Outcome(phase).words})")
    crashed = run.found and run.state_type == "CRASHED"
    if run.final and not crashed:
        return Recovery(action="rollback", reason=f"flow run ended ({run.state_name}) {at} without ending "
                                                  "the release")
    if crashed:
        # The worker (or Prefect) saw the process die: no need to wait for the heartbeat.
        died = f"the worker died {at} (its flow run is Crashed, {quiet})"
    elif not lease.is_stale(now):
        return Recovery(action="none", reason=f"the holder is alive ({quiet.replace('no ', 'last ')})")
    else:
        died = f"the worker died {at} ({quiet}, more than its {lease.timeout:g} s)"
    if lease.on_worker_loss == "resume":
        if not lease.deployment:
            return Recovery(action="rollback",
                            reason=f"{died}; it cannot be resumed: it was not started from a deployment")
        if lease.resumes >= max_resumes:
            return Recovery(action="rollback", reason=f"{died}; already resumed {lease.resumes} times")
        if not lease.state:
            return Recovery(action="rollback", reason=f"{died}; it recorded no state to resume from")
        return Recovery(action="resume", reason=died)
    return Recovery(action="rollback", reason=died)
