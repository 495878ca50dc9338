"""``lamia check condition``: compile a routing condition and show Istio's ``match`` list."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml

from flows.cli._app import check_app
from flows.cli._common import handle_errors, read_source
from lamia_core.conditions import compile_condition


@check_app.command("condition")
@handle_errors
def check_condition(
    text: Annotated[str, typer.Argument(
        metavar="CONDITION", help='The condition, e.g. \'uri prefix "/service1"\'; "-" reads stdin.')],
) -> None:
    """Print the Istio HTTPMatchRequest list (YAML) a condition compiles to; exit 2 if it is invalid."""
    match = compile_condition(read_source(text))
    typer.echo(yaml.safe_dump(match, sort_keys=False, allow_unicode=True), nl=False)
