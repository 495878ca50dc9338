"""Parsing the condition language (lark, LALR), checking each test on its own, and printing.

The tree is built by an inline transformer while LALR parses, so nothing
recurses over the input; the nesting depth is checked afterwards, before any
recursive pass (printing, compiling) sees the tree.
"""

from __future__ import annotations

import re
from typing import Final, cast

from lark import Token, Transformer

from lamia_core import _language
from lamia_core.conditions import _regex as rx
from lamia_core.conditions._ast import (
    MAX_DEPTH,
    MAX_TEXT,
    And,
    Condition,
    Not,
    Or,
    Pos,
    Term,
    depth,
    write_condition,
)
from lamia_core.errors import LanguageError

LANGUAGE: Final = "condition"

# RFC 9110 token characters: what Istio accepts in a header name (and RFC 6265 in a cookie name).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Istio ignores these keys in `headers`; the language has tests of its own for them.
_RESERVED_HEADERS: Final = {
    "uri": "uri", "method": "method", "authority": "authority", "host": "authority", "scheme": None,
}
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})


def unquote(raw: str) -> str:
    """The value of a string literal: ``\\"`` is a quote, ``\\\\`` a backslash, any other
    backslash stays as written (so ``"^\\d+$"`` needs no doubling)."""
    body = raw[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body) and body[i + 1] in '"\\':
            out.append(body[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _pos(tok: Token) -> Pos:
    return (tok.line or 1, tok.column or 1)


class _Build(Transformer[Token, Condition]):
    """Callbacks run by the LALR parser as it reduces; each builds one node."""

    def term(self, children: list[Token]) -> Term:
        head = children[0]
        fld = head.lower()
        name_tok: Token | None
        value_tok: Token | None
        if fld in ("header", "cookie", "query"):
            name_tok = children[1]
            op_tok = children[2]
            value_tok = children[3] if len(children) > 3 else None
        else:
            name_tok = None
            op_tok = children[1]
            value_tok = children[2]
        return Term(
            field=fld,
            name=unquote(name_tok) if name_tok is not None else None,
            op=op_tok.lower(),
            value=unquote(value_tok) if value_tok is not None else None,
            line=head.line or 1,
            column=head.column or 1,
            name_at=_pos(name_tok) if name_tok is not None else _pos(head),
            value_at=_pos(value_tok) if value_tok is not None else _pos(op_tok),
        )

    def negation(self, children: list[Condition]) -> Not:
        return Not(children[0])

    def conj(self, children: list[Condition]) -> And:
        return And(tuple(children))

    def disj(self, children: list[Condition]) -> Or:
        return Or(tuple(children))


_PARSER: Final = _language.load_grammar("lamia_core.conditions", "condition.lark", lexer="contextual",
                                        transformer=_Build())
VOCABULARY: Final = _language.vocabulary(
    _PARSER, LANGUAGE, max_text=MAX_TEXT, names={"STRING": "a string in double quotes"},
    nouns={"STRING": "string"},
)


def _error(text: str, at: Pos, reason: str) -> LanguageError:
    return _language.error_at(text, at[0], at[1], reason, LANGUAGE)


def check_term(t: Term, text: str) -> None:
    """Refuse a test that no request could meet the way the user means it, or Istio would refuse."""
    if t.name is not None:
        _check_name(t, text)
    if t.value is None:
        return
    v, at = t.value, t.value_at
    if t.op == "regex":
        why = rx.problem(v)
        if why:
            raise _error(text, at, why)
        if t.field == "cookie" and rx.has_anchor(rx.strip_outer_anchors(v)):
            raise _error(text, at, "a cookie regex may only have ^ at its start and $ at its end: it is "
                         "matched against the whole cookie value")
    if t.op == "prefix" and not v and t.field in ("header", "method", "authority"):
        hint = (f'; to test that the header is there, write header "{_language.clip(t.name)}" present'
                if t.name else "")
        raise _error(text, at, "an empty prefix matches every value and Istio refuses it" + hint)
    if t.field == "uri" and t.op != "regex" and "?" in v:
        raise _error(text, at, "uri tests the path without the query string; "
                     'test the query with query "NAME" ...')
    if t.field == "cookie" and t.op != "regex" and ";" in v:
        raise _error(text, at, 'a cookie value cannot contain ";" (it separates cookies)')
    if t.field == "method" and t.op == "exact" and v.upper() in _METHODS and v != v.upper():
        raise _error(text, at, f'HTTP methods are case-sensitive; did you mean "{v.upper()}"?')


def _check_name(t: Term, text: str) -> None:
    name, at = t.name or "", t.name_at
    if t.field == "query":
        if not name:
            raise _error(text, at, "a query parameter name cannot be empty")
        return
    what = "header" if t.field == "header" else "cookie"
    if not _TOKEN.fullmatch(name):
        raise _error(text, at, f'"{_language.clip(name)}" is not a valid {what} name (letters, digits and '
                     "!#$%&'*+-.^_`|~ only, at least one)")
    if t.field == "header" and name.lower() in _RESERVED_HEADERS:
        instead = _RESERVED_HEADERS[name.lower()]
        hint = f'; use {instead} tests, e.g. {instead} exact "..."' if instead else ""
        raise _error(text, at, f'Istio ignores a header match on "{name.lower()}"{hint}')


def parse_condition(text: str) -> Condition:
    """Parse ``text`` into a condition tree; every error is a :class:`LanguageError`."""
    # The inline transformer returns our nodes.
    cond = cast(Condition, _language.parse(_PARSER, text, VOCABULARY))
    if depth(cond) > MAX_DEPTH:
        raise _error(text, _deepest(cond), f"the condition nests deeper than {MAX_DEPTH} levels of "
                     "not/and/or")
    for t in terms(cond):
        check_term(t, text)
    return cond


def format_condition(cond: Condition) -> str:
    """The canonical text of ``cond``: ``parse_condition(format_condition(c)) == c``.

    Keywords are lower case, one space apart; parentheses appear only where the
    tree's shape needs them. A tree whose text the parser would refuse (a
    header name that is not a token, ``uri exact "?"``, a control character,
    text beyond the length limit...) is refused here too, with the parser's
    own LanguageError on the canonical text: the printer never writes what
    cannot be read back.
    """
    text = write_condition(cond)
    parse_condition(text)
    return text


def _deepest(cond: Condition) -> Pos:
    best: tuple[int, Pos] = (-1, (1, 1))
    stack: list[tuple[Condition, int]] = [(cond, 0)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, Term):
            if d > best[0]:
                best = (d, (node.line, node.column))
        elif isinstance(node, Not):
            stack.append((node.item, d + 1))
        else:
            stack.extend((i, d + 1) for i in node.items)
    return best[1]


def terms(cond: Condition) -> list[Term]:
    """The terms of ``cond`` from left to right, without recursion."""
    out: list[Term] = []
    stack: list[Condition] = [cond]
    while stack:
        node = stack.pop()
        if isinstance(node, Term):
            out.append(node)
        elif isinstance(node, Not):
            stack.append(node.item)
        else:
            stack.extend(reversed(node.items))
    return out
