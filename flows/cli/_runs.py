"""What the release commands share: finding an app's runs in Prefect, reading their step tables, and
printing what they find as a table, JSON or YAML."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import typer
import yaml

from lamia_core.errors import InvalidInput, NotFound

NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the application.")]
AppOpt = Annotated[str, typer.Option("--app", "-a", help="The application: the value of the `app` label.")]
ClusterOpt = Annotated[str | None, typer.Option("--cluster", help="A saved cluster: lamia cluster add.")]
KubeconfigOpt = Annotated[str | None,
                          typer.Option("--kubeconfig", envvar="KUBECONFIG", help="kubeconfig file.")]
ContextOpt = Annotated[str | None, typer.Option("--context", help="kubeconfig context.")]
ByOpt = Annotated[str | None,
                  typer.Option("--by", help="Who does this, for the history (default user@host).")]
#: Flows whose runs are an app's history.
KINDS = ("canary-release", "set-weights", "apply-route", "expose", "unexpose")


class Output(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="table, json or yaml.")]


def emit(data: Any, output: Output, table: Callable[[], str]) -> None:
    """``data`` as JSON or YAML, else the table ``table()`` draws."""
    if output is Output.json:
        typer.echo(json.dumps(data, indent=2, default=str))
    elif output is Output.yaml:
        typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
    else:
        typer.echo(table(), nl=False)


def columns(rows: list[dict[str, Any]], keys: list[str], headers: list[str] | None = None) -> str:
    """A plain text table of ``rows``, one column per key; the last column is not padded."""
    cells = [headers or [k.upper() for k in keys]] + [["" if r.get(k) is None else str(r[k]) for k in keys]
                                                         for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(keys) - 1)]
    return "".join("  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
                   + "\n" for row in cells)


def require_prefect() -> None:
    """InvalidInput when no Prefect server is configured: the history lives there, and a temporary
    server would start empty (and print a database-locked traceback when two commands race)."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise InvalidInput("no Prefect server is configured: set PREFECT_API_URL (e.g. "
                           "http://127.0.0.1:4200/api) to the server the releases run on")


def runs(namespace: str | None, app_name: str | None, limit: int = 20, *, running_only: bool = False,
         cluster: str | None = None) -> list[Any]:
    """Lamia's flow runs, newest first: of one app, or of every app (``app_name`` None)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    from flows._history import app_tag
    from flows.clusters import cluster_tag

    require_prefect()
    tags = ["lamia"]
    if app_name is not None and namespace is not None:
        tags.append(app_tag(namespace, app_name))
    if cluster:
        tags.append(cluster_tag(cluster))
    state_filter = None
    if running_only:
        state_filter = FlowRunFilterState(type=FlowRunFilterStateType(any_=[
            StateType.RUNNING, StateType.PAUSED, StateType.PENDING, StateType.SCHEDULED,
            StateType.CANCELLING]))
    with get_client(sync_client=True) as client:
        found = list(client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=tags), state=state_filter),
            sort=FlowRunSort.START_TIME_DESC, limit=limit))
    if namespace is not None and app_name is None:
        found = [r for r in found if app_of(r) and app_of(r).split("/", 1)[0] == namespace]  # type: ignore[union-attr]
    return found


def app_of(run: Any) -> str | None:
    """``namespace/app`` of a Lamia run, from its tags."""
    return next((t.split(":", 1)[1] for t in run.tags if t.startswith("lamia/app:")), None)


def kind_of(run: Any) -> str:
    return next((t.split(":", 1)[1] for t in run.tags if t.startswith("lamia/kind:")), "?")


def running(namespace: str, app_name: str, cluster: str | None = None) -> Any:
    """The app's running release; NotFound when none runs."""
    from flows.clusters import clusters_of

    found = runs(namespace, app_name, 1, running_only=True, cluster=cluster)
    if not found:
        where = f" on cluster {cluster}" if cluster else ""
        raise NotFound(f"no release of application {app_name!r} in namespace {namespace!r}{where} is running")
    # Without --cluster, a run on a saved cluster may be another cluster's release of the same app.
    on = clusters_of(found[0].tags)
    if cluster is None and on:
        raise InvalidInput(f"the running release of {app_name!r} in namespace {namespace!r} is on cluster "
                           f"{on[0]}: say which cluster with --cluster {on[0]}")
    return found[0]


def step_rows(flow_run_id: UUID, namespace: str, app_name: str) -> list[dict[str, Any]]:
    """The rows of a run's step table as the Prefect API has them now ([] before the first step)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from flows._history import artifact_key

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[artifact_key("lamia", namespace, app_name, "steps")]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            sort=ArtifactSort.UPDATED_DESC, limit=1)
    if not found:
        return []
    data = found[0].data
    table = json.loads(data) if isinstance(data, str) else data
    return [r for r in table if isinstance(r, dict)] if isinstance(table, list) else []


def step_line(row: dict[str, Any]) -> str:
    """One step as `release watch` prints it: when, weights, the judged values, decision and reason,
    and when the next check is due."""
    evidence = str(row.get("evidence") or "")
    judged = "" if evidence in ("", "-") else f"  [{evidence}]"
    nxt = f"; next check {row['next_check']}" if row.get("next_check") else ""
    return (f"step {row.get('step', '?'):>2}  {row.get('time', '')}  {row.get('weights', '')}  "
            f"{row.get('decision', '')}: {row.get('reason', '')}{judged}{nxt}")


def say(text: str) -> None:
    print(text, file=sys.stderr)
