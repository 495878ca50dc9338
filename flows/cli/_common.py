"""What every CLI command shares: turning Lamia's errors into one clear line and an exit code."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from pydantic import ValidationError

from lamia_core.errors import InvalidInput, LamiaError

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
        except ValidationError as exc:
            raise fail(validation_message(exc), 2) from None

    return wrapper


def validation_message(exc: ValidationError) -> str:
    """A pydantic error as Lamia says it: each field as an option name, and what is wrong with it."""
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"] if not isinstance(p, int)) or "input"
        msg = e["msg"].removeprefix("Value error, ")
        # A LamiaError raised inside a validator already says what and where.
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, LamiaError):
            msg = str(cause)
        parts.append(f"--{where.replace('_', '-')}: {msg}")
    return "; ".join(parts)


def read_source(text: str) -> str:
    """A command's text argument, or all of stdin when it is ``-``; stdin must be UTF-8."""
    if text != "-":
        return text
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # a text-only stdin (an embedding program): already decoded
        return sys.stdin.read()
    data: bytes = buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"stdin is not UTF-8 text: byte {exc.start} (0x{data[exc.start]:02x}) "
                           "cannot be decoded") from None
