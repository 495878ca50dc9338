"""The expression language: metric expressions and custom policy programs.

A program is zero or more statements followed by one expression, its result::

    external_upstream_rq_2xx / upstream_rq_total

    if (metric "v1" "external_upstream_rq_2xx" / metric "v1" "upstream_rq_total")
         > (metric "v2" "external_upstream_rq_2xx" / metric "v2" "upstream_rq_total") {
      best = v1;
    } else {
      best = v2;
    }
    best

Syntax
    Numbers (``2``, ``0.95``, ``1e-3``), ``+ - * /``, unary ``-``, parentheses,
    comparisons ``< <= > >= == !=`` (they do not chain: ``a < b < c`` is an
    error), ``and``, ``or``, ``not``, ``true``, ``false``, ``nil``. Statements are
    ``NAME = EXPR;`` and ``if EXPR { ... } else if EXPR { ... } else { ... }``.
    ``metric "VERSION" "NAME"`` is a metric of a named version (the quotes may be
    left out for plain identifiers). ``"v1"`` is always a version. ``#`` starts a
    comment to the end of the line; a final ``;`` after the result is allowed.
    Keywords (``if else and or not nil true false metric``) are case-insensitive;
    names are case-sensitive. Precedence, loosest first: ``or``, ``and``,
    ``not``, comparisons, ``+ -``, ``* /``, unary ``-``.

Names
    A bare identifier is, in this order: a variable if the program assigns it
    anywhere; else a metric of the version being scored if it is a metric name;
    else a version name. A name that is both a metric and a version is an error
    (quote the version or use ``metric``); so is assigning to a metric or
    version name. A variable must be assigned on every path before it is read,
    where an ``if`` with an ``else`` counts as covering all paths. Without a
    list of versions, any other name is taken as a version, but a name used as
    a number is reported as an unknown metric.

Values and types
    number, condition (true/false), version, nil. Arithmetic and ordering take
    numbers; ``and or not`` and ``if`` take conditions; ``==``/``!=`` compare
    values of one type. The result must be a number, a version or nil. Type
    errors are reported before evaluation when an operand can never have the
    right type, otherwise when evaluation meets them.

Missing data never favours a version
    A metric without data, not finite (nan, ±inf) or for a version absent from
    the values is nil. Arithmetic with nil gives nil, ``x / 0`` is nil, any
    result that is not finite is nil. A comparison with a nil operand is nil,
    neither true nor false. ``and``/``or``/``not`` follow three-valued (Kleene)
    logic: ``false and nil`` is false, ``true or nil`` true, otherwise nil
    stays nil. An ``if`` whose condition is nil takes no branch at all, not
    even ``else``; variables assigned only inside it stay unassigned and read
    as nil. So a program that picks a version by comparing ratios gives nil,
    not the ``else`` choice, when either version has no data; a policy treats a
    nil score as "this version cannot win".

Limits
    At most 10 000 characters of text, syntax trees at most 200 levels deep, and
    ``max_steps`` evaluated nodes (there are no loops, so work is linear in the
    program's size anyway). Exceeding one is a LanguageError, never a crash.

Every syntax or semantic error is a LanguageError (line, column, the line with
a caret, what was expected); nothing here uses Python's eval.
"""

from __future__ import annotations

from lamia_core.expressions._analyse import Kind, Requirements, analyse
from lamia_core.expressions._ast import (
    KEYWORDS,
    MAX_DEPTH,
    MAX_TEXT,
    Assign,
    Binary,
    Bool,
    Branch,
    Expr,
    If,
    MetricRef,
    Name,
    Nil,
    Node,
    Number,
    Program,
    Statement,
    Unary,
    VersionLit,
    format_number,
)
from lamia_core.expressions._eval import Result, evaluate
from lamia_core.expressions._parse import format_expr, format_program, parse_expression

__all__ = [
    "KEYWORDS",
    "MAX_DEPTH",
    "MAX_TEXT",
    "Assign",
    "Binary",
    "Bool",
    "Branch",
    "Expr",
    "If",
    "Kind",
    "MetricRef",
    "Name",
    "Nil",
    "Node",
    "Number",
    "Program",
    "Requirements",
    "Result",
    "Statement",
    "Unary",
    "VersionLit",
    "analyse",
    "evaluate",
    "format_expr",
    "format_number",
    "format_program",
    "parse_expression",
]
