"""Evaluation of an expression program by walking its AST (semantics: ``lamia_core.expressions``)."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import TypeAlias

from lamia_core.errors import InvalidInput, LanguageError
from lamia_core.expressions._analyse import BOOL, NUM, VER, Kind, describe, run_analysis
from lamia_core.expressions._ast import (
    ARITHMETIC,
    ORDERING,
    Assign,
    Binary,
    Bool,
    Expr,
    MetricRef,
    Name,
    Nil,
    Number,
    Program,
    Statement,
    Unary,
    VersionLit,
    language_error,
)


class _Version(str):
    """A version as a runtime value, so that it cannot be mistaken for anything else."""

    __slots__ = ()


Value: TypeAlias = float | bool | _Version | None
#: What evaluate returns: a number, a version name, or None for nil.
Result: TypeAlias = float | str | None


def evaluate(
    program: Program,
    values: Mapping[str, Mapping[str, float | None]],
    *,
    version: str | None = None,
    versions: Collection[str] | None = None,
    metrics: Collection[str] | None = None,
    max_steps: int = 10_000,
) -> Result:
    """Evaluate ``program`` on metric ``values`` (version -> metric -> number, or None for no data).

    ``version`` is the version being scored, read by bare metric names.
    ``versions`` defaults to the versions in ``values`` plus ``version``.
    ``metrics`` are the metric names a bare identifier may refer to; None means
    any name that is neither a variable nor a version is a metric, so a metric
    absent from ``values`` reads as nil rather than failing (run ``analyse``
    with the catalog first to catch misspelt names). The program is analysed
    before anything is computed, so static errors come first.
    """
    if max_steps < 1:
        raise InvalidInput(f"max_steps must be at least 1, got {max_steps}")
    known_versions = set(values) if versions is None else set(versions)
    if versions is None and version is not None:
        known_versions.add(version)
    if version is not None and version not in known_versions:
        raise InvalidInput(
            f"the scored version {version!r} is not one of the versions {sorted(known_versions)}"
        )
    analysis = run_analysis(program, metrics, known_versions)
    bare = analysis.first_bare_metric
    if version is None and bare is not None:
        raise language_error(
            program.text, bare.line, bare.column,
            f"{bare.name!r} is a metric of the version being scored, but no version is being scored; "
            f'name one (--version) or write metric "VERSION" "{bare.name}"',
        )
    return _Evaluator(program, values, version, analysis.kinds, max_steps).run()


def _as_number(raw: object, version: str, metric: str) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise InvalidInput(
            f"the value of metric {metric!r} for version {version!r} must be a number or None, "
            f"not {type(raw).__name__}"
        )
    try:
        number = float(raw)
    except OverflowError:  # an int beyond float range
        return None
    # No data, in effect: infinities and nan would make comparisons lie.
    return number if math.isfinite(number) else None


def _kind_of(value: Value) -> str:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, _Version):
        return VER
    return NUM


def _finite(number: float) -> float | None:
    return number if math.isfinite(number) else None


class _Evaluator:
    def __init__(
        self,
        program: Program,
        values: Mapping[str, Mapping[str, float | None]],
        version: str | None,
        kinds: Mapping[str, Kind],
        max_steps: int,
    ) -> None:
        self.program = program
        self.values = values
        self.version = version
        self.kinds = kinds
        self.max_steps = max_steps
        self.steps = 0
        self.env: dict[str, Value] = {}

    def run(self) -> Result:
        self._exec(self.program.statements)
        result = self._eval(self.program.result)
        if isinstance(result, bool):
            raise self._error(
                self.program.result, "the result must be a number, a version or nil, not a condition"
            )
        if isinstance(result, _Version):
            return str(result)
        return result

    def _error(
        self, node: Expr | Statement, message: str, pos: tuple[int, int] | None = None
    ) -> LanguageError:
        line, column = pos if pos is not None else (node.line, node.column)
        return language_error(self.program.text, line, column, message)

    def _step(self, node: Expr | Statement) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise self._error(node, f"evaluation needs more than {self.max_steps} steps")

    def _exec(self, statements: Iterable[Statement]) -> None:
        for stmt in statements:
            self._step(stmt)
            if isinstance(stmt, Assign):
                self.env[stmt.name] = self._eval(stmt.value)
                continue
            body: Iterable[Statement] | None = stmt.orelse
            for branch in stmt.branches:
                cond = self._condition(branch.condition, "the condition of 'if'")
                if cond is None:
                    # Missing data decides nothing: no branch, not even 'else'.
                    body = None
                    break
                if cond:
                    body = branch.body
                    break
            if body is not None:
                self._exec(body)

    def _metric(self, node: Expr, version: str, metric: str) -> float | None:
        per_version = self.values.get(version)
        if per_version is None:
            return None
        if not isinstance(per_version, Mapping):
            raise InvalidInput(f"the values of version {version!r} must map metric names to numbers")
        return _as_number(per_version.get(metric), version, metric)

    def _eval(self, expr: Expr) -> Value:
        self._step(expr)
        if isinstance(expr, Number):
            return expr.value
        if isinstance(expr, Bool):
            return expr.value
        if isinstance(expr, Nil):
            return None
        if isinstance(expr, VersionLit):
            return _Version(expr.name)
        if isinstance(expr, MetricRef):
            return self._metric(expr, expr.version, expr.metric)
        if isinstance(expr, Name):
            kind = self.kinds[expr.name]
            if kind is Kind.VARIABLE:
                # Unassigned only when an 'if' took no branch on missing data: nil.
                return self.env.get(expr.name)
            if kind is Kind.METRIC:
                assert self.version is not None
                return self._metric(expr, self.version, expr.name)
            return _Version(expr.name)
        if isinstance(expr, Unary):
            if expr.op == "-":
                number = self._number(expr.operand, "the operand of '-'")
                return None if number is None else -number
            cond = self._condition(expr.operand, "the operand of 'not'")
            return None if cond is None else not cond
        return self._binary(expr)

    def _typed(self, expr: Expr, want: str, what: str) -> Value:
        value = self._eval(expr)
        if value is not None and _kind_of(value) != want:
            raise self._error(expr, f"{what} must be {describe([want])}, not {describe([_kind_of(value)])}")
        return value

    def _number(self, expr: Expr, what: str) -> float | None:
        value = self._typed(expr, NUM, what)
        assert value is None or isinstance(value, float)
        return value

    def _condition(self, expr: Expr, what: str) -> bool | None:
        value = self._typed(expr, BOOL, what)
        assert value is None or isinstance(value, bool)
        return value

    def _binary(self, expr: Binary) -> Value:
        op = expr.op
        if op in ("and", "or"):
            # Kleene logic, short-circuiting only where the other side cannot matter.
            left = self._condition(expr.left, f"the left operand of '{op}'")
            if left is (op == "or"):
                return left
            right = self._condition(expr.right, f"the right operand of '{op}'")
            if right is (op == "or"):
                return right
            return None if left is None or right is None else left
        if op in ARITHMETIC or op in ORDERING:
            a = self._number(expr.left, f"the left operand of '{op}'")
            b = self._number(expr.right, f"the right operand of '{op}'")
            if a is None or b is None:
                return None
            return _arithmetic(op, a, b) if op in ARITHMETIC else _order(op, a, b)
        x, y = self._eval(expr.left), self._eval(expr.right)
        if x is None or y is None:
            return None
        if _kind_of(x) != _kind_of(y):
            raise self._error(
                expr, f"'{op}' compares {describe([_kind_of(x)])} with {describe([_kind_of(y)])}", expr.op_pos
            )
        return (x == y) == (op == "==")


def _arithmetic(op: str, a: float, b: float) -> float | None:
    if op == "/":
        return None if b == 0 else _finite(a / b)
    if op == "+":
        return _finite(a + b)
    if op == "-":
        return _finite(a - b)
    return _finite(a * b)


def _order(op: str, a: float, b: float) -> bool:
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b
