"""One release per (namespace, app) at a time.

Two locks, because each covers what the other cannot see:
- a Prefect global concurrency limit named after the app, created on demand with
  one slot, keeps Lamia's flows on one Prefect server apart, and its slot lease
  expires by itself if a worker dies;
- a lease annotation on the VirtualService names the flow run holding the app,
  so a second attempt can say who is running, and writers outside this Prefect
  server can see it too.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from lamia_core.errors import ReleaseLocked
from lamia_core.kube import KubeConfig
from lamia_core.lease import Lease, abort_hint
from lamia_core.models import Application
from tasks.kubernetes import acquire_lease, read_lease, release_lease


def limit_name(namespace: str, app: str) -> str:
    # Prefect refuses '/', '%', '&', '<' and '>' in limit names; namespaces
    # cannot contain '.', so "namespace.app" is unambiguous.
    return "lamia-release:" + re.sub(r"[^A-Za-z0-9._-]", "-", f"{namespace}.{app}")


def ensure_limit(name: str) -> None:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run created it first
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def is_finished_run(flow_run_id: str) -> bool:
    """True when the run exists on this server and is in a final state (its lease is stale)."""
    try:
        run_id = UUID(flow_run_id)
    except ValueError:
        return False
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            return False  # perhaps another Prefect server's run: never steal it
    return bool(run.state and run.state.is_final())


def _refusal(application: Application, holder: Lease | None) -> ReleaseLocked:
    who = holder.describe() if holder else "another Lamia flow run (see the Prefect UI)"
    return ReleaseLocked(
        f"a release of application {application.name!r} in namespace {application.namespace!r} "
        f"is already running: {who}; wait for it, or end it with "
        f"{abort_hint(application.name, application.namespace)}"
    )


@contextlib.contextmanager
def exclusive_release(
    kube: KubeConfig, application: Application, lease: Lease, *, wait_seconds: float = 30.0,
    forget_routes: tuple[str, ...] = (),
) -> Iterator[None]:
    """Hold both locks for the body; ReleaseLocked names the run that holds them otherwise.

    A lease held by a live run refuses at once. Without one, the slot may still
    be busy for a moment (a run that has not written its lease yet, or one
    whose slot the server is still giving back), so the slot is waited for up
    to ``wait_seconds`` before refusing. When the body ends, the condition texts of
    ``forget_routes`` whose route is gone are dropped with the lease.
    """
    current = read_lease(kube, application)
    stale: frozenset[str] = frozenset()
    if current is not None and current.holder != lease.holder:
        if not is_finished_run(current.holder):
            raise _refusal(application, current)
        stale = frozenset({current.holder})
    name = limit_name(application.namespace, application.name)
    ensure_limit(name)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(concurrency(name, occupy=1, timeout_seconds=wait_seconds, strict=True))
        except TimeoutError:
            raise _refusal(application, read_lease(kube, application)) from None
        acquire_lease(kube, application, lease, stale)
        try:
            yield
        finally:
            release_lease(kube, application, lease.holder, forget_routes)
