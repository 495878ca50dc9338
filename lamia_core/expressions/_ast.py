"""The expression language's syntax tree, limits and error helper (see ``lamia_core.expressions``).

Nodes are frozen dataclasses. ``line`` and ``column`` (1-based; 0 when a node
was built by hand) are excluded from equality, so two programs that differ
only in layout compare equal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeAlias

from lamia_core._language import error_at
from lamia_core.errors import InvalidInput, LanguageError

LANGUAGE = "expression"

#: Longest program text accepted, in characters.
MAX_TEXT = 10_000
#: Deepest syntax tree accepted; the walkers recurse, so this bounds the Python stack.
MAX_DEPTH = 200

#: Keywords are case-insensitive: ``IF``, ``If`` and ``if`` are the same keyword.
KEYWORDS = frozenset({"if", "else", "and", "or", "not", "nil", "true", "false", "metric"})

ARITHMETIC = ("+", "-", "*", "/")
ORDERING = ("<", "<=", ">", ">=")
EQUALITY = ("==", "!=")
LOGICAL = ("and", "or")
BINARY_OPS = frozenset(ARITHMETIC + ORDERING + EQUALITY + LOGICAL)
UNARY_OPS = frozenset({"-", "not"})

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A Kubernetes label value, which is what a version name is (see lamia_core.models).
_LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def language_error(
    text: str, line: int, column: int, message: str, expected: list[str] | None = None
) -> LanguageError:
    return error_at(text, line, column, message, LANGUAGE, expected)


def is_identifier(name: str) -> bool:
    return bool(_IDENT.fullmatch(name)) and name.lower() not in KEYWORDS


def is_version_name(name: str) -> bool:
    return bool(_LABEL_VALUE.fullmatch(name))


def format_number(value: float) -> str:
    """Shortest text that reads back as the same float; integral values without ``.0``."""
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _bad(message: str) -> InvalidInput:
    return InvalidInput(f"invalid expression node: {message}")


@dataclass(frozen=True)
class Node:
    line: int = field(default=0, compare=False, repr=False, kw_only=True)
    column: int = field(default=0, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Number(Node):
    """A literal: always finite and non-negative (``-1`` is unary minus applied to ``1``)."""

    value: float

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise _bad(f"number {self.value!r} is not a float")
        if not math.isfinite(self.value) or self.value < 0:
            raise _bad(f"number literal {self.value!r} must be finite and non-negative")


@dataclass(frozen=True)
class Bool(Node):
    value: bool


@dataclass(frozen=True)
class Nil(Node):
    pass


@dataclass(frozen=True)
class VersionLit(Node):
    """A quoted version name, ``"v1"``: always a version, never a metric or variable."""

    name: str

    def __post_init__(self) -> None:
        if not is_version_name(self.name):
            raise _bad(f"{self.name!r} is not a valid version name")


@dataclass(frozen=True)
class Name(Node):
    """A bare identifier: a variable, a metric of the scored version or a version (resolved later)."""

    name: str

    def __post_init__(self) -> None:
        if not is_identifier(self.name):
            raise _bad(f"{self.name!r} is not an identifier")


@dataclass(frozen=True)
class MetricRef(Node):
    """``metric "VERSION" "NAME"``: a named metric of a named version."""

    version: str
    metric: str
    version_pos: tuple[int, int] = field(default=(0, 0), compare=False, repr=False, kw_only=True)
    metric_pos: tuple[int, int] = field(default=(0, 0), compare=False, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        if not is_version_name(self.version):
            raise _bad(f"{self.version!r} is not a valid version name")
        if not self.metric or any(c in self.metric for c in '"\n\r'):
            raise _bad(f"{self.metric!r} cannot be written as a quoted metric name")


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Expr

    def __post_init__(self) -> None:
        if self.op not in UNARY_OPS:
            raise _bad(f"unknown unary operator {self.op!r}")


@dataclass(frozen=True)
class Binary(Node):
    """``line``/``column`` is where the left operand starts; ``op_pos`` where the operator is."""

    op: str
    left: Expr
    right: Expr
    op_pos: tuple[int, int] = field(default=(0, 0), compare=False, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        if self.op not in BINARY_OPS:
            raise _bad(f"unknown binary operator {self.op!r}")


@dataclass(frozen=True)
class Assign(Node):
    name: str
    value: Expr

    def __post_init__(self) -> None:
        if not is_identifier(self.name):
            raise _bad(f"cannot assign to {self.name!r}: not an identifier")


@dataclass(frozen=True)
class Branch(Node):
    """``if CONDITION { BODY }`` or one ``else if``; the position is its ``if`` keyword."""

    condition: Expr
    body: tuple[Statement, ...]


@dataclass(frozen=True)
class If(Node):
    branches: tuple[Branch, ...]
    orelse: tuple[Statement, ...] | None = None

    def __post_init__(self) -> None:
        if not self.branches:
            raise _bad("an if statement needs at least one branch")


@dataclass(frozen=True)
class Program(Node):
    """Statements, then the expression whose value is the program's result.

    ``text`` is the source, kept to show the offending line in errors found
    after parsing (static analysis, evaluation).
    """

    statements: tuple[Statement, ...]
    result: Expr
    text: str = field(default="", compare=False, repr=False, kw_only=True)


Expr: TypeAlias = Number | Bool | Nil | VersionLit | Name | MetricRef | Unary | Binary
Statement: TypeAlias = Assign | If


def children(node: Node) -> Iterator[Node]:
    """Direct sub-nodes, in source order."""
    if isinstance(node, Unary):
        yield node.operand
    elif isinstance(node, Binary):
        yield node.left
        yield node.right
    elif isinstance(node, Assign):
        yield node.value
    elif isinstance(node, Branch):
        yield node.condition
        yield from node.body
    elif isinstance(node, If):
        yield from node.branches
        if node.orelse is not None:
            yield from node.orelse
    elif isinstance(node, Program):
        yield from node.statements
        yield node.result


def check_depth(program: Program) -> None:
    """Reject trees deeper than MAX_DEPTH before anything walks them recursively.

    Iterative on purpose: it must work on trees far deeper than the Python stack.
    """
    stack: list[tuple[Node, int]] = [(program, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise language_error(
                program.text,
                node.line,
                node.column,
                f"the expression is nested too deeply (more than {MAX_DEPTH} levels of operators and blocks)",
            )
        stack.extend((child, depth + 1) for child in children(node))
