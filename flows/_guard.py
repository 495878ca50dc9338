"""One release per (namespace, app) at a time, and proof that it is alive.

The lease annotation on the VirtualService is the lock: it is taken and given
back in the gateway's own optimistic-concurrency loop, so it holds across
Prefect servers and against every other writer, and it survives a Prefect
outage. While it holds the lease, a run renews the lease's heartbeat every few
seconds from a thread of its own (sleep, approval pause and slow tasks
included); a holder silent for longer than its timeout is dead, and
``lamia-reconcile`` puts its release right (:mod:`lamia_core.recovery`).

A Prefect global concurrency limit named after the app, one slot, shows the
release in Prefect (and queues runs on one server). It is only a queue: it is
taken after the lease, so a slot still busy once the lease is ours belongs to
a run that is gone, and is freed instead of blocking the release.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound, PrefectHTTPStatusError

from lamia_core.errors import ForeignChange, LamiaError, ReleaseLocked
from lamia_core.kube import KubeConfig
from lamia_core.lease import Lease, abort_hint
from lamia_core.models import Application
from lamia_core.recovery import RunInfo, assess
from tasks.kubernetes import acquire_lease, beat, read_lease, release_lease, renew_lease

log = logging.getLogger(__name__)

#: The slot's own lease at Prefect, renewed in the background; a gone run's expires after it.
SLOT_LEASE_SECONDS = 60.0


def limit_name(namespace: str, app: str, cluster: str | None = None) -> str:
    # Prefect refuses '/', '%', '&', '<' and '>' in limit names; namespaces
    # cannot contain '.', so "namespace.app" is unambiguous, and saved clusters' names hold no ':'.
    # The same app on two saved clusters is two releases, with a slot each.
    where = f"{cluster}:" if cluster else ""
    return f"lamia-release:{where}" + re.sub(r"[^A-Za-z0-9._-]", "-", f"{namespace}.{app}")


def ensure_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run created it first
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def run_info(flow_run_id: str) -> RunInfo:
    """What this Prefect server says of a lease holder's run."""
    try:
        run_id = UUID(flow_run_id)
    except ValueError:
        return RunInfo(found=False)
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            return RunInfo(found=False)  # perhaps another Prefect server's run
    state = run.state
    return RunInfo(found=True, state_type=state.type.value if state else None,
                   state_name=state.name if state else None)


def free_slot(name: str, slot: str | None) -> None:
    """Give back a gone run's slot: by its lease when known, else by emptying the limit (the caller
    holds the app's lease, so whoever holds the slot is no release of this app)."""
    with get_client(sync_client=True) as client:
        if slot:
            with contextlib.suppress(Exception):
                client.release_concurrency_slots_with_lease(UUID(slot))
        limit = client.read_global_concurrency_limit_by_name(name)
        if limit.active_slots >= limit.limit:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))


def _refusal(application: Application, holder: Lease | None, why: str = "") -> ReleaseLocked:
    who = holder.describe() if holder else "another Lamia flow run (see the Prefect UI)"
    hint = abort_hint(application.name, application.namespace)
    return ReleaseLocked(
        f"a release of application {application.name!r} in namespace {application.namespace!r} "
        f"is already running: {who}{why}; wait for it, or end it with {hint}"
    )


@dataclass
class Heartbeat:
    """Renews a lease's heartbeat every ``every`` seconds from a thread, until stopped.

    A heartbeat that finds the lease gone or taken records it in ``lost``; the
    release checks that before every step. Failures to reach the cluster are
    retried at the next beat: the lease's timeout is several beats long.
    """

    kube: KubeConfig
    application: Application
    holder: str
    every: float
    slot: UUID | None = None
    """The Prefect slot's lease, renewed at each beat too."""
    beat_lease: bool = True
    lost: ForeignChange | None = None
    beats: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name=f"lamia-heartbeat-{self.holder[:8]}",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if self.beat_lease:
                try:
                    beat(self.kube, self.application, self.holder)
                    self.beats += 1
                except ForeignChange as exc:
                    self.lost = exc
                    return
                except LamiaError as exc:
                    log.warning("heartbeat of %s not written, trying again in %gs: %s", self.holder,
                                self.every, exc)
            if self.slot is not None:
                try:
                    with get_client(sync_client=True) as client:
                        client.renew_concurrency_lease(self.slot, SLOT_LEASE_SECONDS)
                except Exception as exc:  # Prefect away: the cluster's lease is what protects the app
                    log.debug("could not renew the release slot's lease: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


@dataclass
class Guard:
    """What the body of :func:`exclusive_release` may ask of it."""

    lease: Lease
    heartbeat: Heartbeat | None = None
    keep_lease: bool = False
    """Set when the gateway could not be put in order: the lease stays for lamia-reconcile."""

    def check_alive(self) -> None:
        """ForeignChange when the heartbeat found the lease gone or taken."""
        if self.heartbeat is not None and self.heartbeat.lost is not None:
            raise self.heartbeat.lost


def _clear_way(
    kube: KubeConfig, application: Application, lease: Lease
) -> tuple[frozenset[str], Lease | None]:
    """The run ids whose leases may be taken over; ReleaseLocked when another release holds the app."""
    current = read_lease(kube, application)
    if current is None or current.holder == lease.holder:
        return frozenset(), current
    recovery = assess(current, time.time(), run_info(current.holder))
    if recovery.action == "drop":
        return frozenset({current.holder}), current
    if recovery.action == "none":
        raise _refusal(application, current)
    raise _refusal(application, current, f" — {recovery.reason}: lamia-reconcile puts it right within its "
                                         "period (or run `lamia reconcile` now)")


@contextlib.contextmanager
def exclusive_release(
    kube: KubeConfig, application: Application, lease: Lease, *, forget_routes: tuple[str, ...] = (),
) -> Iterator[Guard]:
    """Hold the app's lease (with a heartbeat when the lease has a timeout) and its Prefect slot for
    the body; ReleaseLocked names the run that holds them otherwise.

    A lease held by a live run refuses at once; one left by a run that is gone
    is taken over when nothing is left half done, else refused until
    lamia-reconcile has put the release right. When the body ends the lease
    is given back (unless the body asks to keep it), with the condition texts
    of ``forget_routes`` whose route is gone, and the slot is freed.
    """
    stale, previous = _clear_way(kube, application, lease)
    acquire_lease(kube, application, lease, stale)
    guard = Guard(lease)
    name = limit_name(application.namespace, application.name, kube.name)
    try:
        slot = _take_slot(name, lease, previous)
        try:
            renew_lease(kube, application, lease.holder, {"slot": str(slot)})
            every = max(1.0, min(10.0, (lease.timeout or 30.0) / 3))
            guard.heartbeat = Heartbeat(kube, application, lease.holder, every, slot=slot,
                                        beat_lease=lease.timeout is not None).start()
            try:
                yield guard
            finally:
                guard.heartbeat.stop()
        finally:
            _give_back_slot(name, slot)
    finally:
        if not guard.keep_lease:
            release_lease(kube, application, lease.holder, forget_routes)


def _take_slot(name: str, lease: Lease, previous: Lease | None) -> UUID:
    """The app's Prefect slot, with a lease of its own at Prefect. The app's lease on the cluster is
    ours already, so a slot still busy is a gone run's: it is freed rather than waited for."""
    ensure_limit(name)
    holder = None
    with contextlib.suppress(ValueError):
        holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(lease.holder))
    with get_client(sync_client=True) as client:
        for attempt in range(3):
            try:
                response = client.increment_concurrency_slots_with_lease(
                    [name], 1, "concurrency", SLOT_LEASE_SECONDS, holder)
                return UUID(response.json()["lease_id"])
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 423 or attempt == 2:
                    raise
            log.warning("the release slot %s is held by a run that no longer holds the lease: freeing it",
                        name)
            free_slot(name, previous.slot if previous else None)
    raise AssertionError("unreachable")


def _give_back_slot(name: str, slot: UUID) -> None:
    try:
        with get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(slot)
    except Exception as exc:  # the Prefect server may be away: the slot's lease expires by itself
        log.warning("could not give back the release slot %s (%s); it expires within %gs, and the next "
                    "release frees it anyway", name, exc, SLOT_LEASE_SECONDS)
