"""The typer application and its command groups, shared by the CLI modules."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer

# typer carries its own copy of click; its exceptions are the ones raised here.
from typer._click import exceptions as click
from typer.core import TyperGroup

#: The longest message a usage error prints: the value it quotes may be megabytes long.
MAX_MESSAGE = 300


def _one_line(text: str) -> str:
    flat = " ".join("".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 0x100 else "\\u"
                            f"{ord(c):04x}" for c in text).split())
    return flat if len(flat) <= MAX_MESSAGE else flat[: MAX_MESSAGE - 1] + "…"


class LamiaGroup(TyperGroup):
    """The top-level command: a usage error (an unknown option, a value that is not a number) is
    one line on stderr and exit code 2, like every other bad input, not click's box of text."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        def run(standalone: bool) -> Any:
            return super(LamiaGroup, self).main(args, prog_name, complete_var, standalone_mode=standalone,
                                                windows_expand_args=windows_expand_args, **extra)

        if not standalone_mode:
            return run(False)
        try:
            rv = run(False)
        except click.NoArgsIsHelpError:
            sys.exit(2)  # the help is printed already: it is the answer
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "lamia"
            print(f"lamia: error: {_one_line(exc.format_message())} (see `{where} --help`)", file=sys.stderr)
            sys.exit(2)
        except click.ClickException as exc:
            print(f"lamia: error: {_one_line(exc.format_message())}", file=sys.stderr)
            sys.exit(exc.exit_code)
        except typer.Abort:
            print("lamia: aborted", file=sys.stderr)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def _version(value: bool) -> None:
    if value:
        from lamia_core import __version__

        typer.echo(f"lamia {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="lamia",
    cls=LamiaGroup,
    help="Lamia: canary releases for services on Kubernetes with Istio, on Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain text: help is prose wrapped in the source (rich mode keeps its line breaks) and names
    # options in brackets, which rich mode would take for markup and drop.
    rich_markup_mode=None,
)


def _group(help: str) -> typer.Typer:
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


render_app = _group("Render manifests without touching a cluster.")
cluster_app = _group(
    "Saved clusters (Prefect blocks) and namespaces prepared for Lamia (virtual clusters)."
)
gateway_app = _group("An application's gateway: DestinationRule and VirtualService.")
weights_app = _group("Set traffic weights by hand (manual canary).")
check_app = _group("Check a condition or an expression.")
eval_app = _group("Evaluate an expression on given metric values.")
release_app = _group("Canary releases run as Prefect flows.")

app.add_typer(render_app, name="render")
app.add_typer(cluster_app, name="cluster")
app.add_typer(gateway_app, name="gateway")
app.add_typer(weights_app, name="weights")
app.add_typer(check_app, name="check")
app.add_typer(eval_app, name="eval")
app.add_typer(release_app, name="release")


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print Lamia's version and exit."),
) -> None:
    """Lamia: canary releases for services on Kubernetes with Istio, on Prefect."""
