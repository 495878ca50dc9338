"""`lamia release watch|status|list|history` and `pause|resume|promote|approve|abort`: following and
steering releases through the Prefect API and the lease on the cluster."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import typer

from flows.cli._app import release_app
from flows.cli._common import FAILED, fail, handle_errors
from flows.cli._runs import (
    AppOpt,
    ByOpt,
    ClusterOpt,
    ContextOpt,
    KubeconfigOpt,
    NamespaceOpt,
    Output,
    OutputOpt,
    app_of,
    columns,
    emit,
    kind_of,
    running,
    runs,
    say,
    step_line,
    step_rows,
)
from flows.cli.clusters import kube_config
from lamia_core.errors import InvalidInput
from lamia_core.kube import KubeAdapter
from lamia_core.outcome import Outcome
from lamia_core.text import weights_text

TimeoutOpt = Annotated[float | None, typer.Option(
    "--timeout", help="Give up watching after this many seconds (exit 3); default: until it ends.")]


def exit_code_of(state: Any) -> int:
    """0 promoted (or held as asked, or applied), 1 otherwise: what `prefect deployment run --watch` says."""
    outcome = Outcome.from_state_name(getattr(state, "name", None))
    if outcome is not None:
        return outcome.exit_code
    return 0 if state is not None and state.is_completed() else FAILED


def follow(flow_run_id: UUID, namespace: str, app_name: str, *, timeout: float | None = None,
           poll: float = 1.0) -> int:
    """Print the run's steps as they happen, one line each, then its outcome; the exit code."""
    from prefect.client.orchestration import get_client

    printed = 0
    deadline = None if timeout is None else time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            rows = step_rows(flow_run_id, namespace, app_name)
            for row in rows[printed:]:
                typer.echo(step_line(row))
            printed = max(printed, len(rows))
            state = run.state
            if state is not None and state.is_final():
                for row in step_rows(flow_run_id, namespace, app_name)[printed:]:
                    typer.echo(step_line(row))
                code = exit_code_of(state)
                outcome = Outcome.of_run(run.tags, state.type.value, state.name)
                said = f" - {state.message}" if state.message else ""
                typer.echo(f"{run.name}: {outcome or state.name}{said} (exit {code})")
                return code
            if deadline is not None and time.monotonic() >= deadline:
                now = state.name if state else "?"
                raise fail(f"flow run {run.name} has not ended within {timeout:g} s (it is {now}); it goes "
                           "on: watch it again with `lamia release watch`", 3)
            time.sleep(poll)


@release_app.command("watch")
@handle_errors
def watch(namespace: NamespaceOpt, app_name: AppOpt, cluster: ClusterOpt = None,
          timeout: TimeoutOpt = None) -> None:
    """Follow the running release of an app (or its last one): a line per step as it happens, then the
    outcome. Exit code: 0 promoted (or held as asked), 1 rolled back or failed, 3 --timeout passed."""
    found = runs(namespace, app_name, 1, running_only=True, cluster=cluster) or runs(
        namespace, app_name, 1, cluster=cluster)
    if not found:
        raise InvalidInput(f"no release of application {app_name!r} in namespace {namespace!r} is recorded")
    say(f"watching flow run {found[0].name} ({found[0].id})")
    raise typer.Exit(follow(found[0].id, namespace, app_name, timeout=timeout))


def _ago(iso: str | None) -> str:
    from lamia_core.lease import parse_time

    t = parse_time(iso) if iso else None
    return "-" if t is None else f"{time.time() - t:.0f} s ago"


@release_app.command("status")
@handle_errors
def status(namespace: NamespaceOpt, app_name: AppOpt, cluster: ClusterOpt = None,
           kubeconfig: KubeconfigOpt = None, context: ContextOpt = None,
           output: OutputOpt = Output.table) -> None:
    """The release of an app now: who holds it, whether its process is alive, its step, the last
    decision with its evidence, the next check, and the weights on the cluster."""
    with KubeAdapter(kube_config(cluster, kubeconfig, context)) as adapter:
        application = adapter.discover_application(namespace, app_name)
        gateway = adapter.read_gateway(application)
        lease = adapter.read_lease(application)
    info: dict[str, Any] = {
        "app": app_name, "namespace": namespace,
        "routes": {r.name: r.weights.as_dict() for r in gateway.routes} if gateway else {},
        "release": None,
    }
    if lease is not None:
        alive = not lease.is_stale(time.time())
        release: dict[str, Any] = {"run": lease.name, "flow_run_id": lease.holder, "kind": lease.kind,
                                   "baseline": lease.baseline, "target": lease.target, "since": lease.since,
                                   "step": lease.step, "heartbeat": lease.heartbeat, "alive": alive}
        if not alive:
            silent = lease.silent_for(time.time()) or 0.0
            release["process"] = (f"gone: no heartbeat for {silent:.0f} s (more than its {lease.timeout:g} "
                                  "s); lamia-reconcile puts the release right")
        try:
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                run = client.read_flow_run(UUID(lease.holder))
            release["state"] = run.state.name if run.state else None
            rows = step_rows(run.id, namespace, app_name)
            if rows:
                last = rows[-1]
                release["last_decision"] = {k: last.get(k) for k in ("step", "time", "decision", "reason",
                                                                     "evidence", "next_check")}
        except Exception as exc:  # the lease may name a run of another Prefect server
            release["state"] = f"unknown ({type(exc).__name__})"
        info["release"] = release

    def table() -> str:
        what = "no release running" if lease is None else lease.describe()
        lines = [f"{app_name} in {namespace}: {what}"]
        r = info["release"]
        if r is not None:
            state = r.get("state") if r["alive"] else f"{r.get('state')} - its process is {r['process']}"
            lines.append(f"  state: {state}; step {r['step']}; heartbeat {_ago(r['heartbeat'])}")
            d = r.get("last_decision")
            if d:
                lines.append(f"  last decision (step {d['step']}, {d['time']}): {d['decision']}: "
                             f"{d['reason']}")
                if d.get("evidence") not in (None, "-"):
                    lines.append(f"  evidence: {d['evidence']}")
                if d.get("next_check"):
                    lines.append(f"  next check: {d['next_check']}")
        for route, weights in info["routes"].items():
            lines.append(f"  route {route}: {weights_text(weights)}")
        return "\n".join(lines) + "\n"

    emit(info, output, table)


def _row(run: Any) -> dict[str, Any]:
    state = run.state
    # The state keeps Prefect's name (Failed); the outcome (rolled-back) is what a person asks for.
    outcome = Outcome.of_run(run.tags, state.type.value if state else None, state.name if state else None)
    return {"flow_run_id": str(run.id), "name": run.name, "app": app_of(run), "kind": kind_of(run),
            "started": run.start_time.isoformat() if run.start_time else None,
            "state": state.name if state else None,
            "outcome": outcome.value if outcome is not None else (state.name.lower() if state else None),
            "message": state.message if state else None}


@release_app.command("list")
@handle_errors
def list_releases(
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="Only this namespace.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=200)] = 20,
    cluster: ClusterOpt = None, output: OutputOpt = Output.table,
) -> None:
    """Running and recent releases (and manual changes) of every app, newest first."""
    live = [_row(r) for r in runs(namespace, None, limit, running_only=True, cluster=cluster)]
    seen = {r["flow_run_id"] for r in live}
    recent = [_row(r) for r in runs(namespace, None, limit, cluster=cluster) if str(r.id) not in seen]
    rows = (live + recent)[:limit]
    emit(rows, output, lambda: columns(rows, ["app", "kind", "outcome", "started", "name", "message"])
         if rows else "no releases recorded\n")


@release_app.command("history")
@handle_errors
def history(namespace: NamespaceOpt, app_name: AppOpt,
            limit: Annotated[int, typer.Option("--limit", min=1, max=200)] = 20,
            cluster: ClusterOpt = None, output: OutputOpt = Output.table) -> None:
    """Past and present releases and manual changes of an app, newest first: flow runs (refused ones
    included) and the changes made from the CLI without a flow."""
    rows = [_row(r) for r in runs(namespace, app_name, limit, cluster=cluster)]
    rows += manual_changes(namespace, app_name, limit)
    rows.sort(key=lambda r: r["started"] or "", reverse=True)
    rows = rows[:limit]
    emit(rows, output, lambda: columns(rows, ["started", "kind", "outcome", "name", "message"])
         if rows else f"no releases of {app_name} in {namespace} recorded\n")


def manual_changes(namespace: str, app_name: str, limit: int) -> list[dict[str, Any]]:
    """The CLI's own changes of the gateway (weights set, gateway apply) recorded as events."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    from flows._history import app_resource
    from flows._manual_events import CHANGE_EVENT

    with get_client(sync_client=True) as client:
        page = client.read_events(EventFilter(
            event=EventNameFilter(prefix=[CHANGE_EVENT]),
            resource=EventResourceFilter(id=[app_resource(namespace, app_name)["prefect.resource.id"]])),
            limit=limit)
    return [{"flow_run_id": None, "name": e.payload.get("command"), "app": f"{namespace}/{app_name}",
             "kind": e.payload.get("kind", "manual"), "started": e.occurred.isoformat(),
             "state": "Completed", "outcome": Outcome.APPLIED.value, "message": e.payload.get("reason")}
            for e in page.events]


# --- steering a running release -------------------------------------------------------------------


def _send(namespace: str, app_name: str, cluster: str | None, action: str, by: str | None, why: str) -> Any:
    from flows._control import Control, send, who

    run = running(namespace, app_name, cluster)
    control = Control(action=action, by=by or who(), why=why)
    send(run.id, control)
    return run, control


WhyOpt = Annotated[str, typer.Option("--reason", help="Why, for the history.")]


@release_app.command("pause")
@handle_errors
def pause(namespace: NamespaceOpt, app_name: AppOpt, cluster: ClusterOpt = None, by: ByOpt = None,
          why: WhyOpt = "") -> None:
    """Hold the running release's weights: checks go on and are recorded, but move nothing."""
    run, control = _send(namespace, app_name, cluster, "pause", by, why)
    typer.echo(f"pausing flow run {run.name}: {control.describe()} (it takes effect within a second)")


@release_app.command("resume")
@handle_errors
def resume(namespace: NamespaceOpt, app_name: AppOpt, cluster: ClusterOpt = None, by: ByOpt = None,
           why: WhyOpt = "") -> None:
    """Let a paused release move weight again."""
    run, control = _send(namespace, app_name, cluster, "resume", by, why)
    typer.echo(f"resuming flow run {run.name}: {control.describe()}")


@release_app.command("promote")
@handle_errors
def promote(namespace: NamespaceOpt, app_name: AppOpt, cluster: ClusterOpt = None, by: ByOpt = None,
            why: WhyOpt = "") -> None:
    """Give the target all the traffic now and end the release as promoted (recorded with who and why)."""
    run, control = _send(namespace, app_name, cluster, "promote", by, why)
    typer.echo(f"promoting by hand: flow run {run.name} ({control.describe()}); `lamia release watch` "
               "shows it")


@release_app.command("approve")
@handle_errors
def approve(namespace: NamespaceOpt, app_name: AppOpt,
            reject: Annotated[bool, typer.Option(
                "--reject", help="Refuse: roll back instead of going on.")] = False,
            comment: Annotated[str, typer.Option("--comment", help="Why, for the history.")] = "",
            by: ByOpt = None, cluster: ClusterOpt = None) -> None:
    """Answer a release that waits for approval: go on toward the target, or --reject to roll back."""
    from prefect.flow_runs import resume_flow_run

    from flows._control import who

    run = running(namespace, app_name, cluster)
    if not (run.state and run.state.is_paused()):
        raise InvalidInput(f"flow run {run.name} of {app_name!r} is {run.state.name if run.state else '?'}, "
                           "not waiting for approval")
    resume_flow_run(run.id, run_input={"decision": "roll back" if reject else "go on", "comment": comment,
                                       "by": by or who()})
    typer.echo(f"{'rejected' if reject else 'approved'}: flow run {run.name} ({run.id})")


@release_app.command("abort")
@handle_errors
def abort(namespace: NamespaceOpt, app_name: AppOpt,
          timeout: Annotated[float, typer.Option(
              "--timeout", min=0, help="Seconds to wait for the run to restore the baseline itself.")] = 60.0,
          by: ByOpt = None, why: WhyOpt = "", cluster: ClusterOpt = None, kubeconfig: KubeconfigOpt = None,
          context: ContextOpt = None) -> None:
    """Cancel the running release of an app; the baseline goes back to 100%.

    The run restores the baseline itself and gives back its lease. A run whose process is gone (a killed
    worker) cannot: when the lease still names it after --timeout, this command restores the baseline
    recorded in the lease, drops the lease and marks the run cancelled. Who and why are recorded.
    """
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Cancelling

    from flows._control import who

    kube = kube_config(cluster, kubeconfig, context)  # a bad --cluster is refused before cancelling
    run = running(namespace, app_name, cluster)
    by = by or who()
    said = f"aborted by {by}" + (f" ({why})" if why else "")
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling(message=f"{said} with `lamia release abort`"),
                                  force=True)
    typer.echo(f"cancelling flow run {run.name} ({run.id}): {said}")
    with KubeAdapter(kube) as adapter:
        application = adapter.discover_application(namespace, app_name)

        def held() -> Any:
            lease = adapter.read_lease(application)
            return lease if lease is not None and lease.holder == str(run.id) else None

        deadline = time.monotonic() + timeout
        while (lease := held()) is not None and time.monotonic() < deadline:
            time.sleep(0.5)
        if lease is None:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(run.id).state
            typer.echo(f"{run.name}: {state.name if state else '?'}"
                       + (f" - {state.message}" if state and state.message else ""))
            return
        weights = adapter.abort_release(application, lease)
    if weights is None:
        raise fail(f"flow run {run.name} did not stop within {timeout:g} s and its lease names no baseline: "
                   "set the weights by hand (lamia weights set) and try again")
    reason = f"{said}; its process did not answer, so lamia release abort put {lease.baseline} back at 100%"
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelled(message=reason), force=True)
    typer.echo(f"{run.name}: {reason} (route {lease.route or 'default'}: {weights}) at "
               f"{datetime.now(UTC).strftime('%H:%M:%S')}")
