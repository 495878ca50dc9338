"""Parsing (lark, LALR) and canonical printing of the expression language."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Final

from lark import Token, Transformer, v_args

from lamia_core import _language
from lamia_core.expressions._ast import (
    LANGUAGE,
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
    Number,
    Program,
    Statement,
    Unary,
    VersionLit,
    check_depth,
    format_number,
    is_version_name,
)


@v_args(inline=True)
class _Build(Transformer[Token, Any]):
    """Builds the AST inside the LALR parser's reductions: no recursion, whatever the depth."""

    def program(self, *items: Any) -> Program:
        return Program(tuple(items[:-1]), items[-1], line=1, column=1)

    def assign(self, name: Token, value: Expr) -> Assign:
        return Assign(str(name), value, line=name.line or 0, column=name.column or 0)

    def block(self, *statements: Statement) -> tuple[Statement, ...]:
        return statements

    def if_stmt(self, *items: Any) -> If:
        branches: list[Branch] = []
        orelse: tuple[Statement, ...] | None = None
        i = 0
        while i < len(items):
            if isinstance(items[i], Token):
                kw, cond, body = items[i : i + 3]
                branches.append(Branch(cond, body, line=kw.line or 0, column=kw.column or 0))
                i += 3
            else:
                orelse = items[i]
                i += 1
        first = branches[0]
        return If(tuple(branches), orelse, line=first.line, column=first.column)

    def binary(self, left: Expr, op: Token, right: Expr) -> Binary:
        return Binary(
            str(op).lower(), left, right, line=left.line, column=left.column,
            op_pos=(op.line or 0, op.column or 0),
        )

    def unary(self, op: Token, operand: Expr) -> Unary:
        return Unary(str(op).lower(), operand, line=op.line or 0, column=op.column or 0)

    def number(self, tok: Token) -> Number:
        value = float(tok)
        if not math.isfinite(value):
            raise self._error(tok, f"the number {tok} is too large")
        return Number(value, line=tok.line or 0, column=tok.column or 0)

    def version(self, tok: Token) -> VersionLit:
        return VersionLit(self._version_name(tok), line=tok.line or 0, column=tok.column or 0)

    def name(self, tok: Token) -> Name:
        return Name(str(tok), line=tok.line or 0, column=tok.column or 0)

    def nil(self, tok: Token) -> Nil:
        return Nil(line=tok.line or 0, column=tok.column or 0)

    def true(self, tok: Token) -> Bool:
        return Bool(True, line=tok.line or 0, column=tok.column or 0)

    def false(self, tok: Token) -> Bool:
        return Bool(False, line=tok.line or 0, column=tok.column or 0)

    def metric(self, kw: Token, version: Token, metric: Token) -> MetricRef:
        name = _unquote(metric)
        if not name:
            raise self._error(metric, "a metric name cannot be empty")
        return MetricRef(
            self._version_name(version), name, line=kw.line or 0, column=kw.column or 0,
            version_pos=(version.line or 0, version.column or 0),
            metric_pos=(metric.line or 0, metric.column or 0),
        )

    def _version_name(self, tok: Token) -> str:
        name = _unquote(tok)
        if not is_version_name(name):
            raise self._error(
                tok,
                f"{name!r} is not a valid version name (letters, digits, '-', '_', '.', "
                "at most 63 characters, alphanumeric at both ends)",
            )
        return name

    def _error(self, tok: Token, message: str) -> _language.Located:
        return _language.Located(tok.line or 0, tok.column or 0, message)


def _unquote(tok: Token) -> str:
    s = str(tok)
    return s[1:-1] if tok.type == "STRING" else s


# The basic lexer, not the contextual one: the contextual lexer turns a keyword
# into a NAME in states where the keyword is not expected (`x = if`).
_PARSER: Final = _language.load_grammar("lamia_core.expressions", "expression.lark", start="program",
                                        lexer="basic", transformer=_Build())
VOCABULARY: Final = _language.vocabulary(
    _PARSER, LANGUAGE, max_text=MAX_TEXT,
    names={"NAME": "a name", "NUMBER": "a number", "STRING": 'a quoted name ("v1")'},
    nouns={"NAME": "name", "NUMBER": "number", "STRING": "quoted name"},
)


def parse_expression(text: str) -> Program:
    """Parse a metric expression or a custom policy program into its AST.

    Raises LanguageError (line, column, caret, what was expected) on any error.
    """
    program = _language.parse(_PARSER, text, VOCABULARY)
    assert isinstance(program, Program)
    program = replace(program, text=text)
    check_depth(program)
    return program


# Binding strength, loosest first; atoms bind tightest.
_PREC = {"or": 1, "and": 2, "not": 3, "<": 4, "<=": 4, ">": 4, ">=": 4, "==": 4, "!=": 4,
         "+": 5, "-": 5, "*": 6, "/": 6}
_NEG, _ATOM = 7, 8
_INDENT = "  "


def format_program(program: Program) -> str:
    """The canonical text of a program: one statement per line, minimal parentheses.

    ``parse_expression(format_program(p)) == p`` for every program ``p`` that
    parse_expression can return (equality ignores positions). A program whose
    text the parser would refuse (a control character in a metric name, text
    beyond the length limit...) is refused with the parser's own LanguageError
    on the canonical text: the printer never writes what cannot be read back.
    """
    check_depth(program)
    lines: list[str] = []
    for stmt in program.statements:
        _format_statement(stmt, 0, lines)
    lines.append(_fmt(program.result)[0])
    return _readable("\n".join(lines))


def format_expr(expr: Expr) -> str:
    """The canonical text of one expression; refused like :func:`format_program`."""
    check_depth(Program((), expr))
    return _readable(_fmt(expr)[0])


def _readable(text: str) -> str:
    parse_expression(text)
    return text


def _format_statement(stmt: Statement, level: int, out: list[str]) -> None:
    pad = _INDENT * level
    if isinstance(stmt, Assign):
        out.append(f"{pad}{stmt.name} = {_fmt(stmt.value)[0]};")
        return
    for i, branch in enumerate(stmt.branches):
        head = "if" if i == 0 else "} else if"
        out.append(f"{pad}{head} ({_fmt(branch.condition)[0]}) {{")
        for inner in branch.body:
            _format_statement(inner, level + 1, out)
    if stmt.orelse is not None:
        out.append(f"{pad}}} else {{")
        for inner in stmt.orelse:
            _format_statement(inner, level + 1, out)
    out.append(f"{pad}}}")


def _fmt(expr: Expr) -> tuple[str, int]:
    """Text of ``expr`` and how tightly it binds."""
    if isinstance(expr, Number):
        return format_number(expr.value), _ATOM
    if isinstance(expr, Bool):
        return ("true" if expr.value else "false"), _ATOM
    if isinstance(expr, Nil):
        return "nil", _ATOM
    if isinstance(expr, VersionLit):
        return f'"{expr.name}"', _ATOM
    if isinstance(expr, Name):
        return expr.name, _ATOM
    if isinstance(expr, MetricRef):
        return f'metric "{expr.version}" "{expr.metric}"', _ATOM
    if isinstance(expr, Unary):
        prec = _NEG if expr.op == "-" else _PREC["not"]
        text, inner = _fmt(expr.operand)
        if inner < prec:
            text = f"({text})"
        return (f"-{text}" if expr.op == "-" else f"not {text}"), prec
    prec = _PREC[expr.op]
    left, lp = _fmt(expr.left)
    right, rp = _fmt(expr.right)
    if prec == _PREC["<"]:
        # Comparisons do not chain; arithmetic operands get parentheses only to be easier to read.
        left = f"({left})" if lp <= _PREC["*"] else left
        right = f"({right})" if rp <= _PREC["*"] else right
    else:
        # Left-associative.
        left = f"({left})" if lp < prec else left
        right = f"({right})" if rp <= prec else right
    return f"{left} {expr.op} {right}", prec
