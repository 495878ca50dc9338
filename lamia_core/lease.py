"""The release lease: an annotation on the VirtualService that names the run holding it.

Prefect's global concurrency limit keeps two Lamia flows of one application
apart while both talk to the same Prefect server; the lease keeps them apart
on the cluster itself, where every writer can see it (a second Prefect
server, a person with kubectl reading ``lamia.io/release``). It lives on the
VirtualService because that is the object a release changes: the lease is
written, checked and dropped with the same optimistic-concurrency loop as the
weights.
"""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from lamia_core.errors import ReleaseLocked

LEASE_ANNOTATION = "lamia.io/release"


#: Version of the annotation's JSON: a reader of another version treats it as held by someone.
LEASE_FORMAT = 2
#: The least time without a heartbeat after which a holder counts as dead, whatever its interval:
#: a worker can stall that long on a busy node, or while the API server is slow.
MIN_WORKER_LOSS_SECONDS = 30.0
WorkerLoss = Literal["rollback", "resume"]


def worker_loss_bound(interval: float) -> float:
    """How long a holder may go without a heartbeat: three of its intervals, at least 30 s."""
    return max(3.0 * interval, MIN_WORKER_LOSS_SECONDS)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def parse_time(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 time as the lease writes it; None when it is not one."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        return None


class Lease(BaseModel):
    """Who holds an application's release, since when, whether it is alive, and where it stands.

    The holder proves it is alive by renewing ``heartbeat`` every few seconds;
    a holder silent for longer than ``timeout`` is dead, and ``lamia-reconcile``
    then puts the release right (``on_worker_loss``): restore ``baseline`` on
    ``route``, or hand the lease to a new run that continues from ``state``,
    the engine's state after the last step, written with that step's weights.
    """

    model_config = ConfigDict(frozen=True)

    v: int = LEASE_FORMAT
    holder: str
    """The flow run id."""
    name: str = ""
    """The flow run's name, for people."""
    kind: str = "canary-release"
    since: str = ""
    app: str | None = None
    service: str | None = None
    target: str | None = None
    baseline: str | None = None
    """What to put back at 100% if the holder dies without doing it."""
    route: str | None = None
    heartbeat: str = ""
    """When the holder last proved it was alive (ISO 8601, UTC)."""
    timeout: float | None = None
    """Seconds without a heartbeat after which the holder counts as dead; None: never (a manual change)."""
    on_worker_loss: WorkerLoss = "rollback"
    step: int = 0
    state: dict[str, Any] | None = None
    """The engine's ReleaseState (JSON) after the last step, for a run that resumes this release."""
    slot: str | None = None
    """The Prefect concurrency lease holding the app's slot, so that whoever clears up can free it."""
    deployment: str | None = None
    """The Prefect deployment the holder runs from; a resumed run is started from it."""
    resumes: int = 0
    """How many times this release has been resumed on a new worker."""

    @classmethod
    def new(
        cls,
        holder: str,
        name: str = "",
        kind: str = "canary-release",
        target: str | None = None,
        *,
        baseline: str | None = None,
        route: str | None = None,
        now: float | None = None,
        **fields: Any,
    ) -> Lease:
        t = time.time() if now is None else now
        return cls(holder=holder, name=name, kind=kind, target=target, baseline=baseline, route=route,
                   since=_iso(t), heartbeat=_iso(t), **fields)

    def renewed(self, now: float, **updates: Any) -> Lease:
        """A copy with a heartbeat at ``now`` (and ``updates``)."""
        return self.model_copy(update={"heartbeat": _iso(now), **updates})

    def silent_for(self, now: float) -> float | None:
        """Seconds since the last heartbeat; None when the lease has none (an old or hand-written one)."""
        t = parse_time(self.heartbeat) if self.heartbeat else None
        return None if t is None else max(0.0, now - t)

    def is_stale(self, now: float) -> bool:
        """Whether the holder has been silent for longer than its timeout (it is dead)."""
        silent = self.silent_for(now)
        return self.timeout is not None and silent is not None and silent > self.timeout

    def describe(self) -> str:
        who = f"flow run {self.name!r} ({self.holder})" if self.name else f"flow run {self.holder}"
        what = f"{self.kind} to {self.target}" if self.target else self.kind
        return f"{what} by {who}, since {self.since or 'unknown'}"


def lease_of(obj: dict[str, Any] | None) -> Lease | None:
    """The lease recorded on a VirtualService, if any (an unreadable one counts as held)."""
    if not obj:
        return None
    raw = (obj.get("metadata", {}).get("annotations") or {}).get(LEASE_ANNOTATION)
    if not raw:
        return None
    try:
        lease = Lease.model_validate_json(raw)
    except ValidationError:
        lease = None
    if lease is None or lease.v > LEASE_FORMAT:
        # Garbage written by hand, or a newer Lamia's format: held by someone we cannot read, so
        # that it is never stolen silently (only `lamia release abort` overrides it).
        return Lease(holder=str(raw)[:100], name="unreadable lease annotation")
    return lease


def abort_hint(app: str, namespace: str) -> str:
    return f"`lamia release abort {app} --namespace {namespace}`"


def check_lease(obj: dict[str, Any] | None, holder: str | None, *, app: str, namespace: str) -> None:
    """Refuse a write of the gateway ``obj`` by ``holder`` (None: a person, no release) while someone
    else holds its lease. The one rule every gateway write passes, whatever its path."""
    current = lease_of(obj)
    if current is None or current.holder == holder:
        return
    raise ReleaseLocked(
        f"the gateway of application {app!r} in namespace {namespace!r} is held by a running release "
        f"({current.describe()}); only it may change the gateway until it ends: wait for it, or end it "
        f"with {abort_hint(app, namespace)}"
    )


def take_lease(
    obj: dict[str, Any], lease: Lease, *, app: str, stale: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """A copy of ``obj`` holding ``lease``.

    Raises ReleaseLocked when another run holds it, unless that run's id is in
    ``stale`` (runs known to have ended without letting go).
    """
    current = lease_of(obj)
    if current is not None and current.holder != lease.holder and current.holder not in stale:
        raise ReleaseLocked(f"a release of application {app!r} is already running: {current.describe()}")
    return put_lease(obj, lease)


def put_lease(obj: dict[str, Any], lease: Lease) -> dict[str, Any]:
    """A copy of ``obj`` carrying ``lease`` (no check: the caller holds it)."""
    out = copy.deepcopy(obj)
    annotations = out.setdefault("metadata", {}).setdefault("annotations", {})
    # Small, and always carrying its format's version.
    data = {"v": lease.v, **lease.model_dump(exclude_defaults=True)}
    annotations[LEASE_ANNOTATION] = json.dumps(data, separators=(",", ":"))
    return out


def drop_lease(obj: dict[str, Any], holder: str) -> dict[str, Any] | None:
    """A copy of ``obj`` without ``holder``'s lease, or None when it holds none (nothing to write)."""
    current = lease_of(obj)
    if current is None or current.holder != holder:
        return None
    out = copy.deepcopy(obj)
    del out["metadata"]["annotations"][LEASE_ANNOTATION]
    return out
