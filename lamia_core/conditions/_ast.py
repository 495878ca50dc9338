"""The condition language's syntax tree and its canonical printer.

Positions (``line``, ``column`` of a term's first word, ``name_at`` and
``value_at`` of its strings) are for error messages only: they take no part in
equality, so a parsed condition equals the one built by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Final, TypeAlias

from lamia_core.errors import InvalidInput

#: Tests that take a name: ``header "User-Agent" ...``.
NAMED_FIELDS: Final = ("header", "cookie", "query")
#: Tests on the request line or authority: ``uri prefix "/x"``.
PLAIN_FIELDS: Final = ("uri", "method", "authority")
FIELDS: Final = NAMED_FIELDS + PLAIN_FIELDS
VALUE_OPS: Final = ("exact", "prefix", "regex")
#: ``present`` tests that a header, cookie or query parameter is there at all.
PRESENT: Final = "present"

#: Longest condition text accepted.
MAX_TEXT: Final = 10_000
#: Deepest nesting of not/and/or accepted (parentheses around a single test do not count).
MAX_DEPTH: Final = 64

Pos: TypeAlias = tuple[int, int]


@dataclass(frozen=True)
class Term:
    """One test, e.g. ``header "User-Agent" regex "^.*Chrome.*$"`` or ``uri prefix "/a"``.

    ``name`` is None for uri, method and authority; ``value`` is None for ``present``.
    """

    field: str
    name: str | None
    op: str
    value: str | None
    line: int = dc_field(default=1, compare=False)
    column: int = dc_field(default=1, compare=False)
    name_at: Pos = dc_field(default=(1, 1), compare=False, repr=False)
    value_at: Pos = dc_field(default=(1, 1), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.field not in FIELDS:
            raise ValueError(f"unknown field {self.field!r}")
        if (self.name is None) != (self.field in PLAIN_FIELDS):
            need = "take no" if self.field in PLAIN_FIELDS else "need a"
            raise ValueError(f"{self.field} tests {need} name")
        allowed = VALUE_OPS + ((PRESENT,) if self.field in NAMED_FIELDS else ())
        if self.op not in allowed:
            raise ValueError(f"{self.field} tests take one of {allowed}, not {self.op!r}")
        if (self.value is None) != (self.op == PRESENT):
            raise ValueError("present takes no value; exact, prefix and regex need one")


@dataclass(frozen=True)
class Not:
    item: Condition


@dataclass(frozen=True)
class And:
    items: tuple[Condition, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))
        if len(self.items) < 2:
            raise ValueError("And needs at least two items")


@dataclass(frozen=True)
class Or:
    items: tuple[Condition, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))
        if len(self.items) < 2:
            raise ValueError("Or needs at least two items")


Condition: TypeAlias = Term | Not | And | Or


def depth(cond: Condition) -> int:
    """Nesting depth of not/and/or (a lone term is 0), computed without recursion."""
    deepest = 0
    stack: list[tuple[Condition, int]] = [(cond, 0)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(node, Not):
            stack.append((node.item, d + 1))
        elif isinstance(node, And | Or):
            stack.extend((item, d + 1) for item in node.items)
    return deepest


def first_term(cond: Condition) -> Term:
    """The leftmost term: where errors about a whole sub-condition point."""
    node = cond
    while not isinstance(node, Term):
        node = node.item if isinstance(node, Not) else node.items[0]
    return node


def quote(s: str) -> str:
    """A string literal of the language: only ``"`` and ``\\`` are escaped."""
    if "\n" in s or "\r" in s:
        raise InvalidInput(f"a condition string cannot contain a line break: {s!r}")
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _format_term(t: Term) -> str:
    parts = [t.field]
    if t.name is not None:
        parts.append(quote(t.name))
    parts.append(t.op)
    if t.value is not None:
        parts.append(quote(t.value))
    return " ".join(parts)


def _format(cond: Condition) -> str:
    if isinstance(cond, Term):
        return _format_term(cond)
    if isinstance(cond, Not):
        inner = _format(cond.item)
        return f"not {inner}" if isinstance(cond.item, Term | Not) else f"not ({inner})"
    if isinstance(cond, And):
        # A nested And or an Or inside And needs parentheses to keep its shape.
        return " and ".join(
            f"({_format(i)})" if isinstance(i, And | Or) else _format(i) for i in cond.items
        )
    return " or ".join(f"({_format(i)})" if isinstance(i, Or) else _format(i) for i in cond.items)


def write_condition(cond: Condition) -> str:
    """The canonical text of ``cond``, unchecked: see ``format_condition``, which refuses a tree
    the parser would refuse.

    Keywords are lower case, one space apart; parentheses appear only where the
    tree's shape needs them.
    """
    if depth(cond) > MAX_DEPTH:
        raise InvalidInput(f"the condition nests deeper than {MAX_DEPTH} levels of not/and/or")
    return _format(cond)
