"""The `lamia-reconcile` flow: put right every release whose worker died, without a person.

Deployed on a 30 s schedule (prefect.yaml), and run at once when a worker
reports a flow run Crashed. For every lease on the cluster it asks
:func:`lamia_core.recovery.assess` what to do, given the holder's heartbeat and
what Prefect says of its run:

- **rollback** (the default when a worker dies): the baseline recorded in the
  lease goes back on its route and the lease goes, in one write; the dead run
  is marked Crashed with "the worker died at step N"; its slot is freed; the
  app's history gets a ``lamia.release.rolled-back`` event;
- **resume** (``on_worker_loss: resume``): a new run of the dead run's
  deployment is created with the same parameters, the lease (with the
  engine's state in it) is handed to it, and the dead run is marked Crashed;
  the new run continues from the last recorded step;
- **drop**: the release had ended; only the lease goes.

It also frees app slots that a gone run left busy, and marks Crashed the
Lamia runs still shown Running long after their process let go of the lease.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import State, StateType
from prefect.events import emit_event
from prefect.states import Completed, Crashed, Scheduled
from pydantic import BaseModel, Field

from flows._guard import free_slot, limit_name, run_info
from flows._history import app_resource, reconcile_run_name
from flows.clusters import cluster_tag
from flows.clusters import kube_config as saved_cluster
from flows.clusters import names as cluster_names
from lamia_core.errors import LamiaError
from lamia_core.kube import KubeConfig
from lamia_core.lease import Lease
from lamia_core.outcome import Outcome
from lamia_core.recovery import Recovery, assess
from tasks.kubernetes import (
    abort_release,
    discover_application,
    hand_over_lease,
    managed_gateways,
    release_lease,
)

#: A Lamia run still Running this long after it started, holding no lease, has lost its process.
STUCK_AFTER_SECONDS = 120.0
#: A resumed run is scheduled this far ahead, so that the lease is its before it starts.
RESUME_DELAY_SECONDS = 5.0
LAMIA_FLOWS = ("canary-release", "set-weights", "apply-route", "expose")


class ReconcileParameters(BaseModel):
    """Which clusters (and namespace) to look after."""

    cluster: str | None = Field(
        None, description="A saved cluster (lamia cluster add); empty: every saved cluster, or the "
        "'kubernetes' setting when none is saved or it is set")
    kubernetes: KubeConfig | None = Field(
        None, description="How to reach the cluster when no saved cluster is named; empty: the pod's "
        "service account in a cluster, the default kubeconfig elsewhere")
    namespace: str | None = Field(None, description="Only this namespace; empty: every namespace")

    def clusters(self) -> list[KubeConfig]:
        """Every cluster to look after: the named one, the given config, or every saved one."""
        if self.cluster is not None:
            return [saved_cluster(self.cluster)]
        if self.kubernetes is not None:
            return [self.kubernetes]
        saved = cluster_names()
        return [saved_cluster(name) for name in saved] if saved else [KubeConfig()]


def _mark(run_id: str, message: str) -> bool:
    """Mark a run Crashed with ``message`` (a run a worker saw crash gets it added to the worker's
    words); whether it was changed. Runs that ended otherwise keep their state."""
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(run_id))
            state = run.state
            if state is not None and state.is_final():
                if not state.is_crashed() or "lamia-reconcile" in (state.message or ""):
                    return False
                message = f"{state.message}; {message}" if state.message else message
            client.set_flow_run_state(UUID(run_id), Crashed(message=message), force=True)
    except Exception as exc:  # another server's run, or a run id that is no UUID
        get_run_logger().info("could not mark flow run %s: %s", run_id, exc)
        return False
    return True


def _emit(
    namespace: str, app: str, lease: Lease, outcome: Outcome, reason: str, weights: dict[str, int]
) -> None:
    emit_event(
        event=outcome.event, resource=app_resource(namespace, app),
        related=[{"prefect.resource.id": f"prefect.flow-run.{lease.holder}",
                  "prefect.resource.role": "flow-run", "prefect.resource.name": lease.name}],
        payload={"kind": lease.kind, "baseline": lease.baseline, "target": lease.target,
                 "outcome": outcome.value, "reason": reason, "weights": weights, "by": "lamia-reconcile"},
    )


def _resume(kube: KubeConfig, application: Any, lease: Lease, recovery: Recovery) -> str:
    """Start a new run of the dead run's deployment and hand it the lease; its name."""
    assert lease.deployment is not None
    with get_client(sync_client=True) as client:
        dead = client.read_flow_run(UUID(lease.holder))
        run = client.create_flow_run_from_deployment(
            UUID(lease.deployment), parameters=dead.parameters, tags=sorted({*dead.tags, "lamia/resumed"}),
            state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(seconds=RESUME_DELAY_SECONDS)),
        )
    successor = lease.renewed(time.time(), holder=str(run.id), name=run.name, resumes=lease.resumes + 1,
                              slot=None)
    hand_over_lease(kube, application, lease.holder, successor)
    return run.name


def _put_right(
    kube: KubeConfig, namespace: str, app: str, lease: Lease, recovery: Recovery
) -> dict[str, Any]:
    logger = get_run_logger()
    application = discover_application(kube, namespace, app, lease.service)
    row: dict[str, Any] = {"app": f"{namespace}/{app}", "run": lease.name or lease.holder,
                           "action": recovery.action, "reason": recovery.reason}
    if recovery.action == "drop":
        release_lease(kube, application, lease.holder, ("canary",) if lease.route == "canary" else ())
        _mark(lease.holder, f"{recovery.reason}; its process is gone: lamia-reconcile gave the lease back")
        row["weights"] = "-"
    elif recovery.action == "rollback":
        weights = abort_release(kube, application, lease)
        text = "no baseline recorded: the lease was dropped" if weights is None else (
            f"rolled back: baseline {lease.baseline} is at 100% again on route {lease.route or 'default'}")
        if weights is None:
            release_lease(kube, application, lease.holder)
        message = f"{recovery.reason}; {text} (lamia-reconcile)"
        _mark(lease.holder, message)
        _emit(namespace, app, lease, Outcome.ROLLED_BACK, message, weights.as_dict() if weights else {})
        row["weights"] = str(weights) if weights else "-"
    elif recovery.action == "resume":
        name = _resume(kube, application, lease, recovery)
        _mark(lease.holder, f"{recovery.reason}; resumed by flow run {name} (lamia-reconcile)")
        row["weights"] = "as recorded"
        row["reason"] += f"; resumed by {name}"
    if recovery.action in ("rollback", "resume", "drop"):
        try:
            free_slot(limit_name(namespace, app, kube.name), lease.slot)
        except Exception as exc:
            logger.warning("could not free the release slot of %s/%s: %s", namespace, app, exc)
    logger.info("%s/%s: %s: %s", namespace, app, recovery.action, row["reason"])
    return row


def _free_leftover_slots(kube: KubeConfig, apps: set[str], held: set[str]) -> list[dict[str, Any]]:
    """Slots of this cluster's apps whose lease nobody holds: a run that is gone took them with it.
    Only apps whose gateway was seen here: another cluster's releases use the same Prefect server."""
    rows = []
    ours = {limit_name(ns, app, kube.name) for ns, app in (a.split("/", 1) for a in apps)}
    with get_client(sync_client=True) as client:
        limits = client.read_global_concurrency_limits(limit=200)
    for limit in limits:
        if limit.name in ours and limit.active_slots > 0 and limit.name not in held:
            free_slot(limit.name, None)
            rows.append({"app": limit.name.removeprefix("lamia-release:"), "run": "-", "action": "free slot",
                         "reason": "slot busy but no release holds the app's lease", "weights": "-"})
    return rows


def _mark_stuck_runs(kube: KubeConfig, holders: set[str], apps: set[str]) -> list[dict[str, Any]]:
    """Lamia runs Running for long on apps of this cluster while holding no lease: their process is gone
    (killed after it let go of the lease, or before it took one). A run tagged with another saved
    cluster, or a run of a saved cluster when this one is not, is not this cluster's to judge."""
    rows = []
    mine = cluster_tag(kube.name) if kube.name else None
    before = datetime.now(UTC) - timedelta(seconds=STUCK_AFTER_SECONDS)
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=["lamia"]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
            start_time=FlowRunFilterStartTime(before_=before),
        ), limit=200)
    for run in runs:
        app = next((t.split(":", 1)[1] for t in run.tags if t.startswith("lamia/app:")), None)
        tagged = [t for t in run.tags if t.startswith("lamia/cluster:")]
        if app is None or app not in apps or str(run.id) in holders or tagged != ([mine] if mine else []):
            continue
        if _mark(str(run.id), "its process is gone: it has held no lease on the gateway for a while "
                              "(lamia-reconcile)"):
            rows.append({"app": app, "run": run.name, "action": "mark crashed",
                         "reason": "Running without a process", "weights": "-"})
    return rows


@flow(name="lamia-reconcile", flow_run_name=reconcile_run_name, persist_result=False)
def reconcile(params: ReconcileParameters | None = None) -> State:
    """Put right every release whose worker died: roll back (or resume) and free its slot."""
    params = params or ReconcileParameters()
    logger = get_run_logger()
    rows: list[dict[str, Any]] = []
    for kube in params.clusters():
        try:
            rows += _reconcile_cluster(kube, params.namespace)
        except LamiaError as exc:  # one cluster away must not stop the others being looked after
            logger.error("could not look after cluster %s: %s", kube.name or "(default)", exc)
            rows.append({"app": kube.name or "(default cluster)", "run": "-", "action": "FAILED",
                         "reason": str(exc), "weights": "-"})
    summary = f"{len(rows)} release(s) put right" if rows else "nothing to put right"
    if rows:
        create_table_artifact(table=rows, key="lamia-reconcile", description="What lamia-reconcile put right")
        for row in rows:
            logger.info("%s", row)
    failed = [r for r in rows if r["action"] == "FAILED"]
    if failed:
        raise RuntimeError(f"{len(failed)} release(s) could not be put right: "
                           + "; ".join(f"{r['app']}: {r['reason']}" for r in failed))
    return Completed(message=summary, data=rows)


def _reconcile_cluster(kube: KubeConfig, namespace: str | None) -> list[dict[str, Any]]:
    logger = get_run_logger()
    now = time.time()
    rows: list[dict[str, Any]] = []
    held: set[str] = set()
    holders: set[str] = set()
    apps: set[str] = set()
    where = f"{kube.name}: " if kube.name else ""
    for vs, lease in managed_gateways(kube, namespace):
        ns = vs["metadata"]["namespace"]
        app = (lease.app if lease else None) or ((vs["metadata"].get("labels") or {}).get("lamia.io/app"))
        if not app:
            continue
        apps.add(f"{ns}/{app}")
        if lease is None:
            continue
        recovery = assess(lease, now, run_info(lease.holder))
        if recovery.action == "none":
            held.add(limit_name(ns, app, kube.name))
            holders.add(lease.holder)
            continue
        try:
            rows.append(_put_right(kube, ns, app, lease, recovery))
        except LamiaError as exc:
            logger.error("could not put %s%s/%s right (%s): %s", where, ns, app, recovery.reason, exc)
            rows.append({"app": f"{where}{ns}/{app}", "run": lease.name or lease.holder, "action": "FAILED",
                         "reason": f"{recovery.reason}; {exc}", "weights": "-"})
    rows += _free_leftover_slots(kube, apps, held)
    rows += _mark_stuck_runs(kube, holders, apps)
    return rows


__all__ = ["ReconcileParameters", "reconcile"]
