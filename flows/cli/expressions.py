"""`lamia check expression` and `lamia eval expression`: the expression language from the shell.

The text of an expression or program is an argument, or ``-`` to read it from
stdin (programs are often several lines long).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli._app import check_app, eval_app
from flows.cli._common import handle_errors, read_source
from lamia_core.errors import InvalidInput
from lamia_core.expressions import analyse, evaluate, format_number, parse_expression
from lamia_core.metrics import metric_names
from lamia_core.models import check_label_value

#: How `check expression` writes the version being scored (a bare metric name).
SCORED = "*"

TextArg = Annotated[str, typer.Argument(help="The expression or program; '-' reads it from stdin.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _parse_versions(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    names = [part.strip() for part in raw.split(",") if part.strip()]
    return [check_label_value("version", name) for name in names]


@check_app.command("expression")
@handle_errors
def check_expression(
    text: TextArg,
    versions: Annotated[
        str | None,
        typer.Option("--versions", help="Comma-separated versions of the application; names are checked."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check an expression and print the metrics it reads, one 'VERSION<TAB>METRIC' a line.

    VERSION is '*' for a bare metric name: the version being scored.
    """
    requirements = analyse(
        parse_expression(read_source(text)), metrics=metric_names(), versions=_parse_versions(versions)
    )
    pairs = sorted(requirements.pairs, key=lambda p: (p[0] is not None, p[0] or "", p[1]))
    if as_json:
        out: dict[str, Any] = {
            "pairs": [{"version": v, "metric": m} for v, m in pairs],
            "metric_names": sorted(requirements.metric_names),
            "versions": sorted(requirements.versions),
            "uses_scored_version": requirements.uses_scored_version,
        }
        typer.echo(json.dumps(out, indent=2))
        return
    for version, metric in pairs:
        typer.echo(f"{SCORED if version is None else version}\t{metric}")


def load_values(path: Path) -> dict[str, dict[str, float | None]]:
    """Read a JSON file mapping version -> metric name -> number or null."""
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read metric values from {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise InvalidInput(f"{path}: invalid JSON at {where}: {exc.msg}") from None
    except RecursionError:
        raise InvalidInput(f"{path}: JSON nested too deeply") from None
    shape = "an object mapping version -> {metric name: number or null}"
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: expected {shape}, got {_json_type(data)}")
    values: dict[str, dict[str, float | None]] = {}
    for version, metrics in data.items():
        if not isinstance(metrics, dict):
            raise InvalidInput(f"{path}: version {version!r}: expected {shape}, got {_json_type(metrics)}")
        per_version: dict[str, float | None] = {}
        for name, value in metrics.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise InvalidInput(
                    f"{path}: version {version!r}, metric {name!r}: expected a number or null, "
                    f"got {_json_type(value)}"
                )
            per_version[name] = value if value is None or isinstance(value, float) else _to_float(value)
        values[version] = per_version
    return values


def _to_float(value: int) -> float | None:
    try:
        return float(value)
    except OverflowError:  # beyond float range: no usable data
        return None


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


@eval_app.command("expression")
@handle_errors
def eval_expression(
    text: TextArg,
    metrics: Annotated[
        Path,
        typer.Option("--metrics", help="JSON file mapping version -> metric name -> number or null."),
    ],
    version: Annotated[
        str | None, typer.Option("--version", help="The version being scored, read by bare metric names.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate an expression on metric values; print a number, a version name or 'nil'."""
    program = parse_expression(read_source(text))
    values = load_values(metrics)
    versions = set(values)
    if version is not None:
        versions.add(check_label_value("version", version))
    result = evaluate(program, values, version=version, versions=versions, metrics=metric_names())
    if as_json:
        kind = "nil" if result is None else "version" if isinstance(result, str) else "number"
        typer.echo(json.dumps({"result": result, "type": kind}))
    elif result is None:
        typer.echo("nil")
    elif isinstance(result, str):
        typer.echo(result)
    else:
        typer.echo(format_number(result))
