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
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from lamia_core.errors import ReleaseLocked

LEASE_ANNOTATION = "lamia.io/release"


class Lease(BaseModel):
    """Who holds an application's release, and since when."""

    model_config = ConfigDict(frozen=True)

    holder: str
    """The flow run id."""
    name: str = ""
    """The flow run's name, for people."""
    kind: str = "canary-release"
    since: str = ""
    target: str | None = None
    baseline: str | None = None
    """What to put back at 100% if the holder dies without doing it (``lamia release abort``)."""
    route: str | None = None

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
    ) -> Lease:
        return cls(
            holder=holder,
            name=name,
            kind=kind,
            target=target,
            baseline=baseline,
            route=route,
            since=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

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
        return Lease.model_validate_json(raw)
    except ValidationError:
        # Someone wrote garbage by hand: treat it as held by an unknown run so
        # that we never steal it silently.
        return Lease(holder=str(raw)[:100], name="unreadable lease annotation")


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
    out = copy.deepcopy(obj)
    annotations = out.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[LEASE_ANNOTATION] = json.dumps(lease.model_dump(), separators=(",", ":"))
    return out


def drop_lease(obj: dict[str, Any], holder: str) -> dict[str, Any] | None:
    """A copy of ``obj`` without ``holder``'s lease, or None when it holds none (nothing to write)."""
    current = lease_of(obj)
    if current is None or current.holder != holder:
        return None
    out = copy.deepcopy(obj)
    del out["metadata"]["annotations"][LEASE_ANNOTATION]
    return out
