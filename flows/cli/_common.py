"""What every CLI command shares: turning Lamia's errors into one clear line and an exit code."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from lamia_core.errors import LamiaError

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 2) -> typer.Exit:
    print(f"lamia: error: {message}", file=sys.stderr)
    return typer.Exit(code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Print a LamiaError as ``lamia: error: ...`` on stderr and exit with its code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except LamiaError as exc:
            raise fail(str(exc), exc.exit_code) from None

    return wrapper
