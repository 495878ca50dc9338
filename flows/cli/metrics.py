"""``lamia metrics``: an application's metrics per version, as Lamia's policies see them."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from flows.cli._app import app
from flows.cli._common import handle_errors
from flows.cli.clusters import prometheus_for
from lamia_core.errors import InvalidInput
from lamia_core.metrics import check_window, metric_def
from lamia_core.prometheus import PrometheusAdapter, PrometheusConfig
from lamia_core.text import NO_DATA, number_text


def _table(result: dict[str, dict[str, float | None]], names: list[str]) -> str:
    header = ["version", *names]
    rows = [[v, *(number_text(result[v][n]) for n in names)] for v in result]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # Versions left-aligned, numbers right-aligned.
        first, *rest = zip(cells, widths, strict=True)
        padded = [first[0].ljust(first[1]), *(c.rjust(w) for c, w in rest)]
        return "  ".join(padded).rstrip()

    lines = [line(r) for r in [header, *rows]]
    return "\n".join(lines)


def _raw(specs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, promql = spec.partition("=")
        if not sep or not name.strip() or not promql.strip():
            raise InvalidInput(f"--raw {spec!r} is not NAME=PROMQL")
        out[name.strip()] = promql.strip()
    return out


@app.command("metrics")
@handle_errors
def metrics(
    names: Annotated[
        list[str],
        typer.Argument(
            metavar="NAME...",
            help="Metric names, e.g. external_upstream_rq_2xx upstream_rq_total.",
            show_default=False,
        ),
    ],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the application.")],
    app_name: Annotated[
        str, typer.Option("--app", "-a", help="Application: the value of the Deployments' `app` label.")
    ],
    prometheus: Annotated[
        str | None,
        typer.Option(
            "--prometheus", envvar="LAMIA_PROMETHEUS_URL",
            help="Prometheus URL, e.g. http://prometheus:9090; default the --cluster's.",
        ),
    ] = None,
    cluster: Annotated[
        str | None, typer.Option("--cluster", help="A saved cluster whose Prometheus to ask.")
    ] = None,
    window: Annotated[str, typer.Option(help="Window of the counts and rates: 30s, 1m, 5m...")] = "1m",
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON object: version -> metric -> number, null for no data."),
    ] = False,
    versions: Annotated[
        list[str] | None,
        typer.Option("--version", help="Show this version (repeat); default: every version with series."),
    ] = None,
    raw: Annotated[
        list[str] | None,
        typer.Option(
            "--raw",
            help="NAME=PROMQL: use this query for NAME; {namespace}, {app}, {window} are filled in "
            "and the result must be grouped by destination_version.",
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for Prometheus.")] = 10.0,
) -> None:
    """Show metrics per version over a window. No data (no requests) is not 0."""
    raw_queries = _raw(raw or [])
    check_window(window)
    wanted = list(dict.fromkeys(names))
    for n in wanted:
        metric_def(n, raw_queries)  # an unknown name fails before any query
    url = prometheus_for(cluster, prometheus)
    if url is None:
        raise InvalidInput("say which Prometheus: --prometheus URL (or $LAMIA_PROMETHEUS_URL), or "
                           "--cluster NAME of a cluster saved with one")
    adapter = PrometheusAdapter(PrometheusConfig(url=url, timeout=timeout))
    result = adapter.query_metrics(
        namespace, app_name, wanted, window=window, versions=versions or None, raw=raw_queries
    )
    if as_json:
        typer.echo(json.dumps(result))
    elif result:
        typer.echo(_table(result, wanted))
    else:
        typer.echo(
            f"{NO_DATA}: no requests to {app_name!r} in namespace {namespace!r} over the last {window}"
        )
