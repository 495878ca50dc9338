"""Static analysis of an expression program: names, definite assignment, types, metrics needed.

Types are tracked as sets of what a value may be (number, condition, version);
nil is possible everywhere (missing data) and is never a static error. A static
type error is reported only when an operand can never have a type the
operator accepts; anything less certain is checked again at evaluation.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from lamia_core._language import did_you_mean
from lamia_core.expressions._ast import (
    ARITHMETIC,
    EQUALITY,
    LOGICAL,
    ORDERING,
    Assign,
    Binary,
    Bool,
    Expr,
    If,
    MetricRef,
    Name,
    Nil,
    Number,
    Program,
    Statement,
    Unary,
    VersionLit,
    check_depth,
    language_error,
)

NUM, BOOL, VER = "number", "condition", "version"
Types = frozenset[str]
ANY: Types = frozenset({NUM, BOOL, VER})
_NUM: Types = frozenset({NUM})
_BOOL: Types = frozenset({BOOL})
_VER: Types = frozenset({VER})
_DESCRIBE = {NUM: "a number", BOOL: "a condition (true or false)", VER: "a version"}
_MAX_LISTED = 10


class Kind(enum.Enum):
    """What a bare identifier stands for; the same everywhere in one program."""

    VARIABLE = "variable"
    METRIC = "metric of the scored version"
    VERSION = "version"


@dataclass(frozen=True)
class Requirements:
    """What a program reads, known before any query is made.

    ``pairs`` holds (version, metric); version None is the version being scored
    (a bare metric name). ``versions`` are the versions the program names, in
    ``metric "V" "M"`` or as values.
    """

    pairs: frozenset[tuple[str | None, str]]
    metric_names: frozenset[str]
    uses_scored_version: bool
    versions: frozenset[str]


@dataclass(frozen=True)
class Analysis:
    requirements: Requirements
    kinds: Mapping[str, Kind]
    #: The first bare metric name, to point at when no version is being scored.
    first_bare_metric: Name | None


def describe(types: Iterable[str]) -> str:
    return " or ".join(_DESCRIBE[t] for t in sorted(types)) or "nil"


def analyse(
    program: Program, *, metrics: Collection[str], versions: Collection[str] | None = None
) -> Requirements:
    """The (version, metric) pairs ``program`` needs; LanguageError for every mistake found statically.

    ``metrics`` are the metric names that exist; ``versions`` the application's
    versions, or None when unknown (then any bare name that is neither a variable
    nor a metric is taken as a version name, and quoted versions are not checked).
    All errors are found; the exception points at the first and lists the others.
    """
    return run_analysis(program, metrics, versions).requirements


def run_analysis(
    program: Program, metrics: Collection[str] | None, versions: Collection[str] | None
) -> Analysis:
    """As analyse; ``metrics`` None means every name that is not a variable or a version is a metric."""
    check_depth(program)
    return _Analyser(program, metrics, versions).run()


def _assigned_names(statements: Iterable[Statement], out: dict[str, Assign]) -> dict[str, Assign]:
    for stmt in statements:
        if isinstance(stmt, Assign):
            out.setdefault(stmt.name, stmt)
        else:
            for branch in stmt.branches:
                _assigned_names(branch.body, out)
            if stmt.orelse is not None:
                _assigned_names(stmt.orelse, out)
    return out


class _Analyser:
    def __init__(
        self, program: Program, metrics: Collection[str] | None, versions: Collection[str] | None
    ) -> None:
        self.program = program
        self.metrics = None if metrics is None else frozenset(metrics)
        self.versions = None if versions is None else frozenset(versions)
        self.errors: dict[tuple[int, int, str], None] = {}
        self.assigned = _assigned_names(program.statements, {})
        self.pairs: set[tuple[str | None, str]] = set()
        self.version_refs: set[str] = set()
        self.kinds: dict[str, Kind] = {}
        self.first_bare: Name | None = None

    def run(self) -> Analysis:
        for stmt in self._all_assignments(self.program.statements):
            self._check_target(stmt)
        env, maybe = self._block(self.program.statements, {}, set())
        result = self._expr(self.program.result, env, maybe)
        if result and result <= _BOOL:
            self._error(
                self.program.result,
                "the result must be a number, a version or nil, not a condition; "
                "use it in 'if' to choose a value",
            )
        if self.errors:
            raise self._exception()
        return Analysis(
            Requirements(
                pairs=frozenset(self.pairs),
                metric_names=frozenset(m for _, m in self.pairs),
                uses_scored_version=any(v is None for v, _ in self.pairs),
                versions=frozenset(self.version_refs),
            ),
            self.kinds,
            self.first_bare,
        )

    # -- errors -----------------------------------------------------------------

    def _error_at(self, line: int, column: int, message: str) -> None:
        self.errors[(line, column, message)] = None

    def _error(self, node: Expr | Statement, message: str) -> None:
        self._error_at(node.line, node.column, message)

    def _exception(self) -> Exception:
        found = sorted(self.errors)
        line, column, message = found[0]
        rest = found[1:]
        if rest:
            listed = "; ".join(f"line {ln}, column {col}: {msg}" for ln, col, msg in rest[:_MAX_LISTED])
            more = f"; ... and {len(rest) - _MAX_LISTED} more" if len(rest) > _MAX_LISTED else ""
            message += f" [{len(rest)} more error{'s' if len(rest) > 1 else ''}: {listed}{more}]"
        return language_error(self.program.text, line, column, message)

    def _suggest(self, name: str, candidates: Iterable[str]) -> str:
        return did_you_mean(name, set(candidates), n=3, cutoff=0.75)

    # -- names ------------------------------------------------------------------

    def _all_assignments(self, statements: Iterable[Statement]) -> Iterable[Assign]:
        for stmt in statements:
            if isinstance(stmt, Assign):
                yield stmt
            else:
                for branch in stmt.branches:
                    yield from self._all_assignments(branch.body)
                if stmt.orelse is not None:
                    yield from self._all_assignments(stmt.orelse)

    def _check_target(self, stmt: Assign) -> None:
        if self.metrics is not None and stmt.name in self.metrics:
            self._error(stmt, f"cannot assign to {stmt.name!r}: it is a metric name; choose another name")
        elif self.versions is not None and stmt.name in self.versions:
            self._error(stmt, f"cannot assign to {stmt.name!r}: it is a version name; choose another name")

    def _kind(self, node: Name) -> Kind | None:
        name = node.name
        if name in self.assigned:
            return Kind.VARIABLE
        if self.metrics is None:
            # Open set of metrics (evaluation without a catalog): versions must be known.
            return Kind.VERSION if self.versions is not None and name in self.versions else Kind.METRIC
        if name in self.metrics:
            if self.versions is not None and name in self.versions:
                self._error(
                    node,
                    f"{name!r} is both a metric and a version; write "
                    f'metric "VERSION" "{name}" for the metric or "{name}" (quoted) for the version',
                )
                return None
            return Kind.METRIC
        if self.versions is None or name in self.versions:
            return Kind.VERSION
        hint = self._suggest(name, [*self.metrics, *self.versions, *self.assigned])
        self._error(node, f"undefined name {name!r}: not a variable, a metric or a version{hint}")
        return None

    def _assumed_version(self, expr: Expr) -> bool:
        """A bare name taken as a version only because the versions are not known."""
        return isinstance(expr, Name) and self.versions is None and self.kinds.get(expr.name) is Kind.VERSION

    # -- types ------------------------------------------------------------------

    def _require(self, expr: Expr, types: Types, want: Types, what: str) -> None:
        if not types or types & want:
            return
        if want == _NUM and self._assumed_version(expr):
            assert isinstance(expr, Name)
            self._error(expr, f"unknown metric {expr.name!r}{self._suggest(expr.name, self.metrics or ())}")
            return
        self._error(expr, f"{what} must be {describe(want)}, not {describe(types)}")

    def _block(
        self, statements: Iterable[Statement], env: dict[str, Types], maybe: set[str]
    ) -> tuple[dict[str, Types], set[str]]:
        for stmt in statements:
            if isinstance(stmt, Assign):
                env[stmt.name] = self._expr(stmt.value, env, maybe)
                maybe.add(stmt.name)
            else:
                env, maybe = self._if(stmt, env, maybe)
        return env, maybe

    def _if(self, stmt: If, env: dict[str, Types], maybe: set[str]) -> tuple[dict[str, Types], set[str]]:
        # A later condition is only evaluated when earlier bodies did not run, so
        # every condition sees the variables as they were before the statement.
        paths: list[tuple[dict[str, Types], set[str]]] = []
        for branch in stmt.branches:
            cond = self._expr(branch.condition, env, maybe)
            self._require(branch.condition, cond, _BOOL, "the condition of 'if'")
            paths.append(self._block(branch.body, dict(env), set(maybe)))
        if stmt.orelse is not None:
            paths.append(self._block(stmt.orelse, dict(env), set(maybe)))
        else:
            paths.append((env, maybe))
        # A nil condition takes no branch at runtime; that path is deliberately not
        # counted here (reading such a variable then gives nil, see expressions.py).
        definite = set.intersection(*(set(e) for e, _ in paths))
        joined = {name: frozenset().union(*(e[name] for e, _ in paths)) for name in definite}
        return joined, set().union(*(m for _, m in paths))

    def _expr(self, expr: Expr, env: dict[str, Types], maybe: set[str]) -> Types:
        if isinstance(expr, Number):
            return _NUM
        if isinstance(expr, Bool):
            return _BOOL
        if isinstance(expr, Nil):
            return frozenset()
        if isinstance(expr, VersionLit):
            self._version(expr.name, expr.line, expr.column)
            return _VER
        if isinstance(expr, MetricRef):
            if self.metrics is not None and expr.metric not in self.metrics:
                hint = self._suggest(expr.metric, self.metrics)
                self._error_at(*expr.metric_pos, f"unknown metric {expr.metric!r}{hint}")
            self._version(expr.version, *expr.version_pos)
            self.pairs.add((expr.version, expr.metric))
            return _NUM
        if isinstance(expr, Name):
            return self._name(expr, env, maybe)
        if isinstance(expr, Unary):
            types = self._expr(expr.operand, env, maybe)
            want = _NUM if expr.op == "-" else _BOOL
            self._require(expr.operand, types, want, f"the operand of '{expr.op}'")
            return want
        return self._binary(expr, env, maybe)

    def _version(self, name: str, line: int, column: int) -> None:
        self.version_refs.add(name)
        if self.versions is not None and name not in self.versions:
            known = ", ".join(sorted(self.versions)) or "none"
            self._error_at(line, column, f"unknown version {name!r} (known versions: {known})")

    def _name(self, expr: Name, env: dict[str, Types], maybe: set[str]) -> Types:
        kind = self._kind(expr)
        if kind is None:
            return ANY
        self.kinds[expr.name] = kind
        if kind is Kind.METRIC:
            self.pairs.add((None, expr.name))
            if self.first_bare is None:
                self.first_bare = expr
            return _NUM
        if kind is Kind.VERSION:
            self.version_refs.add(expr.name)
            return _VER
        if expr.name in env:
            return env[expr.name]
        if expr.name in maybe:
            self._error(
                expr,
                f"variable {expr.name!r} is not assigned on every path that reaches here "
                "(assign it before the 'if' or in every branch, including 'else')",
            )
        else:
            self._error(expr, f"variable {expr.name!r} is used before it is assigned")
        return ANY

    def _binary(self, expr: Binary, env: dict[str, Types], maybe: set[str]) -> Types:
        left = self._expr(expr.left, env, maybe)
        right = self._expr(expr.right, env, maybe)
        op = expr.op
        if op in ARITHMETIC or op in ORDERING:
            self._require(expr.left, left, _NUM, f"the left operand of '{op}'")
            self._require(expr.right, right, _NUM, f"the right operand of '{op}'")
            return _NUM if op in ARITHMETIC else _BOOL
        if op in LOGICAL:
            self._require(expr.left, left, _BOOL, f"the left operand of '{op}'")
            self._require(expr.right, right, _BOOL, f"the right operand of '{op}'")
            return _BOOL
        assert op in EQUALITY
        if left and right and not left & right:
            for side, other in ((expr.left, right), (expr.right, left)):
                if NUM in other and self._assumed_version(side):
                    self._require(side, _VER, _NUM, "")
                    return _BOOL
            self._error_at(*expr.op_pos, f"'{op}' compares {describe(left)} with {describe(right)}")
        return _BOOL
