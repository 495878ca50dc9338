"""The condition language: which requests a conditional route takes, compiled to Istio.

Examples::

    header "User-Agent" regex "^.*(Chrome).*$" or header "User-Agent" regex "^.*(Nexus 6P).*$"
    uri prefix "/service1"
    ( cookie "shop-experiment" exact "subset1" )

Tests (keywords are case-insensitive)::

    header "NAME" exact|prefix|regex "VALUE"    header "NAME" present
    cookie "NAME" exact|prefix|regex "VALUE"    cookie "NAME" present
    query  "NAME" exact|prefix|regex "VALUE"    query  "NAME" present
    uri | method | authority  exact|prefix|regex "VALUE"

combined with ``not``, ``and``, ``or`` (binding in that order, tightest first)
and parentheses; ``#`` starts a comment that runs to the end of the line.

Strings are in double quotes on one line. Inside, ``\\"`` is a double quote and
``\\\\`` a backslash; any other backslash stays as written, so a regex such as
``"^\\d+$"`` needs no doubling.

Meaning, as Istio (Envoy) matches: ``exact`` is equality, ``prefix`` tests the
start, ``regex`` is RE2 and must match the *whole* value. Header names are
case-insensitive (compiled lower-case); a test on a missing header, cookie or
query parameter is false, so ``not header "x" exact "a"`` holds when the header
is missing. ``uri`` is the path without the query string. A cookie test holds
when the Cookie header has a cookie of exactly that name whose value passes;
it compiles to a regex on the Cookie header, which the value regex of
``cookie ... regex`` becomes part of: it should not match ``;`` (write
``[^;]*`` rather than ``.*``), and may have ``^``/``$`` only at its ends.

What Istio can express (see :mod:`lamia_core.conditions._istio`): ``not`` only on
header and cookie tests; in each alternative of the condition written as an OR
of ANDs, at most one test of the uri, the method, the authority, each query
parameter, and each header (cookies included: they share the Cookie header)
unless logic combines them. Anything else is a :class:`LanguageError` saying
why, with line and column. Limits: 10 000 characters, 64 levels of nesting, 64
entries in the compiled ``match`` list.
"""

from __future__ import annotations

from lamia_core.conditions._ast import (
    MAX_DEPTH,
    MAX_TEXT,
    And,
    Condition,
    Not,
    Or,
    Term,
)
from lamia_core.conditions._istio import MAX_MATCHES, compile_condition, cookie_regex
from lamia_core.conditions._parse import format_condition, parse_condition, terms

__all__ = [
    "MAX_DEPTH",
    "MAX_MATCHES",
    "MAX_TEXT",
    "And",
    "Condition",
    "Not",
    "Or",
    "Term",
    "compile_condition",
    "cookie_regex",
    "format_condition",
    "parse_condition",
    "terms",
]
