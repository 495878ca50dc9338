"""Parsing (lark, LALR) and canonical printing of the expression language."""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedToken
from lark.lexer import PatternStr

from lamia_core._expr_ast import (
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
    language_error,
    position_of,
)

# Precedence climbs down the rules; comparisons are not associative (`a < b < c`
# is a syntax error) because chaining them has no obvious meaning with nil.
_GRAMMAR = r"""
program: _stmt* expr _SEMI?
_stmt: assign | if_stmt
assign: NAME _ASSIGN expr _SEMI
if_stmt: IF expr block (_ELSE IF expr block)* (_ELSE block)?
block: _LBRACE _stmt* _RBRACE

?expr: or_expr
?or_expr: and_expr | or_expr OR and_expr -> binary
?and_expr: not_expr | and_expr AND not_expr -> binary
?not_expr: comparison | NOT not_expr -> unary
?comparison: sum | sum (LT | LE | GT | GE | EQ | NE) sum -> binary
?sum: product | sum (PLUS | MINUS) product -> binary
?product: unary | product (STAR | SLASH) unary -> binary
?unary: atom | MINUS unary -> unary
?atom: NUMBER -> number
     | STRING -> version
     | NAME -> name
     | NIL -> nil
     | TRUE -> true
     | FALSE -> false
     | METRIC (STRING | NAME) (STRING | NAME) -> metric
     | _LPAR expr _RPAR

IF: "if"i
_ELSE: "else"i
AND: "and"i
OR: "or"i
NOT: "not"i
NIL: "nil"i
TRUE: "true"i
FALSE: "false"i
METRIC: "metric"i
LE: "<="
GE: ">="
LT: "<"
GT: ">"
EQ: "=="
NE: "!="
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
_ASSIGN: "="
_SEMI: ";"
_LBRACE: "{"
_RBRACE: "}"
_LPAR: "("
_RPAR: ")"
NAME: /[A-Za-z_][A-Za-z0-9_]*/
NUMBER: /(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/
STRING: /"[^"\n\r]*"/
COMMENT: /#[^\n]*/
%ignore /[ \t\r\n]+/
%ignore COMMENT
"""

_REGEX_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": 'a quoted name ("v1")',
    "$END": "end of input",
}


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

    def _error(self, tok: Token, message: str) -> _Located:
        return _Located(tok.line or 0, tok.column or 0, message)


class _Located(Exception):
    """A semantic error found while building a node; parse_expression adds the text."""

    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


def _unquote(tok: Token) -> str:
    s = str(tok)
    return s[1:-1] if tok.type == "STRING" else s


@functools.cache
def _grammar() -> tuple[Lark, dict[str, str]]:
    # The basic lexer, not the contextual one: the contextual lexer turns a keyword
    # into a NAME in states where the keyword is not expected (`x = if`).
    lark = Lark(_GRAMMAR, start="program", parser="lalr", lexer="basic", transformer=_Build())
    names = dict(_REGEX_NAMES)
    for term in lark.terminals:
        if isinstance(term.pattern, PatternStr):
            names[term.name] = f"'{term.pattern.value}'"
    return lark, names


def _describe(tok: Token, names: dict[str, str]) -> str:
    if tok.type == "$END":
        return "end of input"
    if tok.type in ("NAME", "NUMBER"):
        return f"{tok.type.lower()} {str(tok)!r}"
    if tok.type == "STRING":
        return f"quoted name {tok}"
    return names.get(tok.type, repr(str(tok)))


def parse_expression(text: str) -> Program:
    """Parse a metric expression or a custom policy program into its AST.

    Raises LanguageError (line, column, caret, what was expected) on any error.
    """
    if len(text) > MAX_TEXT:
        line, column = position_of(text, MAX_TEXT)
        raise language_error(
            text, line, column, f"the expression is too long ({len(text)} characters, at most {MAX_TEXT})"
        )
    lark, names = _grammar()
    try:
        program = lark.parse(text)
    except _Located as exc:
        raise language_error(text, exc.line, exc.column, exc.message) from None
    except UnexpectedToken as exc:
        expected = sorted(names.get(t, t) for t in (exc.accepts or exc.expected))
        tok = exc.token
        # lark puts the end of input on the last token; point just after it instead.
        at_end = tok.type == "$END" and tok.end_column is not None
        line = (tok.end_line if at_end else tok.line) or 1
        column = (tok.end_column if at_end else tok.column) or 1
        raise language_error(text, line, column, f"unexpected {_describe(tok, names)}", expected) from None
    except UnexpectedCharacters as exc:
        pos = exc.pos_in_stream
        char = text[pos] if pos is not None and 0 <= pos < len(text) else "?"
        reason = "unterminated quoted name" if char == '"' else f"unexpected character {char!r}"
        raise language_error(text, exc.line, exc.column, reason) from None
    except LarkError as exc:  # any other lark failure is still the user's input
        raise language_error(text, 1, 1, f"cannot parse: {exc}") from None
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
    parse_expression can return (equality ignores positions).
    """
    check_depth(program)
    lines: list[str] = []
    for stmt in program.statements:
        _format_statement(stmt, 0, lines)
    lines.append(format_expr(program.result))
    return "\n".join(lines)


def _format_statement(stmt: Statement, level: int, out: list[str]) -> None:
    pad = _INDENT * level
    if isinstance(stmt, Assign):
        out.append(f"{pad}{stmt.name} = {format_expr(stmt.value)};")
        return
    for i, branch in enumerate(stmt.branches):
        head = "if" if i == 0 else "} else if"
        out.append(f"{pad}{head} ({format_expr(branch.condition)}) {{")
        for inner in branch.body:
            _format_statement(inner, level + 1, out)
    if stmt.orelse is not None:
        out.append(f"{pad}}} else {{")
        for inner in stmt.orelse:
            _format_statement(inner, level + 1, out)
    out.append(f"{pad}}}")


def format_expr(expr: Expr) -> str:
    return _fmt(expr)[0]


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
