"""What every CLI command shares: turning Lamia's errors into one clear line and an exit code."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import httpx
import typer
from prefect.exceptions import PrefectHTTPStatusError
from pydantic import ValidationError

from lamia_core.errors import ConflictError, ForeignChange, InvalidInput, LamiaError, TemporaryError

#: What every command's exit code means.
DONE, FAILED, BAD_INPUT, UNREACHABLE = 0, 1, 2, 3

P = ParamSpec("P")
R = TypeVar("R")


#: The longest line an error prints: a message may quote a value given on the command line, which
#: can be megabytes long.
MAX_LINE = 1500


def fail(message: str, code: int = 2) -> typer.Exit:
    lines = [line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…" for line in message.split("\n")]
    print("lamia: error: " + "\n".join(lines), file=sys.stderr)
    return typer.Exit(code)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Print a LamiaError as ``lamia: error: ...`` on stderr and exit with its code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except LamiaError as exc:
            raise fail(str(exc), exit_code(exc)) from None
        except ValidationError as exc:
            raise fail(validation_message(exc), BAD_INPUT) from None
        except Exception as exc:
            if not _talking_to_prefect_failed(exc):
                raise
            raise fail(prefect_unreachable(exc), UNREACHABLE) from None

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


def exit_code(exc: LamiaError) -> int:
    """The exit code of a command that failed with ``exc``: 3 when trying again may help (a service
    could not be reached, another writer kept winning), 1 when another writer changed a release's
    route, 2 for everything else (the input, or what it names, is wrong)."""
    if isinstance(exc, TemporaryError | ConflictError):
        return UNREACHABLE
    if isinstance(exc, ForeignChange):
        return FAILED
    return BAD_INPUT


def _talking_to_prefect_failed(exc: Exception) -> bool:
    # Imported only once something failed: most commands never load Prefect at all.

    return isinstance(exc, httpx.HTTPError | PrefectHTTPStatusError)


def prefect_unreachable(exc: Exception) -> str:
    from prefect.settings import PREFECT_API_URL

    where = PREFECT_API_URL.value() or "(no PREFECT_API_URL: a temporary local server)"
    detail = " ".join(str(exc).split())[:200] or type(exc).__name__
    return f"cannot reach the Prefect API at {where}: {detail}"
