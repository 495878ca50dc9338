"""Turning lark's parse errors into :class:`LanguageError` with friendly token names.

Lark reports what it expected as terminal names (``LPAR``, ``_AND``,
``STRING``...). :func:`to_language_error` maps them to what a user reads
("(", "and", "a string in double quotes"), points at the offending character
(or just past the last token at the end of input), names an unknown word and,
when one of the expected keywords is close, suggests it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping

from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from lamia_core.errors import LanguageError

# Lark's automatic names for punctuation (lark.load_grammar._TERMINAL_NAMES), reversed.
_PUNCTUATION = {
    "LPAR": "(", "RPAR": ")", "LSQB": "[", "RSQB": "]", "LBRACE": "{", "RBRACE": "}",
    "COMMA": ",", "DOT": ".", "COLON": ":", "SEMICOLON": ";", "PLUS": "+", "MINUS": "-",
    "STAR": "*", "SLASH": "/", "BACKSLASH": "\\", "VBAR": "|", "QMARK": "?", "BANG": "!",
    "AT": "@", "HASH": "#", "DOLLAR": "$", "PERCENT": "%", "CIRCUMFLEX": "^",
    "AMPERSAND": "&", "LESSTHAN": "<", "MORETHAN": ">", "EQUAL": "=", "TILDE": "~",
    "DBLQUOTE": '"', "QUOTE": "'", "BACKQUOTE": "`",
}
_COMMON = {
    "$END": "end of input",
    "STRING": "a string in double quotes",
    "ESCAPED_STRING": "a string in double quotes",
    "NUMBER": "a number",
    "SIGNED_NUMBER": "a number",
    "INT": "an integer",
    "NAME": "a name",
    "CNAME": "a name",
}
_KEYWORD_NAME = re.compile(r"_*([A-Z][A-Z0-9]*)")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def friendly_name(terminal: str, names: Mapping[str, str] | None = None) -> str:
    """What a user calls a terminal: its entry in ``names``, else a built-in guess."""
    if names and terminal in names:
        return names[terminal]
    bare = terminal.lstrip("_")
    if terminal in _COMMON:
        return _COMMON[terminal]
    if bare in _PUNCTUATION:
        return _PUNCTUATION[bare]
    m = _KEYWORD_NAME.fullmatch(terminal)
    if m and not terminal.startswith("__ANON"):
        return m.group(1).lower()
    return "a token"


def end_position(text: str) -> tuple[int, int]:
    """Line and column just after the last non-blank character (1, 1 for blank text)."""
    stripped = text.rstrip()
    if not stripped:
        return 1, 1
    lines = stripped.split("\n")
    return len(lines), len(lines[-1]) + 1


def _friendly_set(terminals: Iterable[str], names: Mapping[str, str] | None) -> list[str]:
    return sorted({friendly_name(t, names) for t in terminals})


def _offset(text: str, line: int, column: int) -> int:
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        return len(text)
    return sum(len(s) + 1 for s in lines[: line - 1]) + column - 1


def _suggest(word: str, expected: list[str]) -> str:
    words = [e for e in expected if _WORD.fullmatch(e)]
    close = difflib.get_close_matches(word.lower(), words, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def to_language_error(
    exc: LarkError, text: str, language: str, names: Mapping[str, str] | None = None
) -> LanguageError:
    """The :class:`LanguageError` that explains ``exc`` (raised while parsing ``text``).

    ``names`` maps the grammar's terminal names to what users call them; names
    missing from it get a built-in guess (keywords lower-cased, lark's
    punctuation names turned back into the character).
    """
    if isinstance(exc, VisitError) and isinstance(exc.orig_exc, LanguageError):
        return exc.orig_exc
    if isinstance(exc, UnexpectedCharacters):
        expected = _friendly_set(exc.allowed or (), names)
        pos = exc.pos_in_stream if exc.pos_in_stream is not None else _offset(text, exc.line, exc.column)
        rest = text[pos:]
        word = _WORD.match(rest)
        if word:
            reason = f'unknown word "{word.group()}"' + _suggest(word.group(), expected)
        elif rest.startswith('"'):
            reason = "unterminated string: a double quote opens a string that does not end on this line"
            expected = []
        elif rest.startswith("'"):
            reason = "strings are written in double quotes, not single quotes"
        else:
            reason = f"unexpected character {rest[:1]!r}"
        return LanguageError(reason, text=text, line=exc.line, column=exc.column,
                             expected=expected, language=language)
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        expected = _friendly_set(exc.accepts or exc.expected, names)
        if token.type == "$END":
            line, column = end_position(text)
            reason = f"the {language} is empty" if not text.strip() else "unexpected end of input"
        else:
            line = token.line if token.line is not None else 1
            column = token.column if token.column is not None else 1
            shown = str(token)
            reason = f"unexpected string {shown}" if shown[:1] in ("\"", "'") else f'unexpected "{shown}"'
        return LanguageError(reason, text=text, line=line, column=column,
                             expected=expected, language=language)
    if isinstance(exc, UnexpectedEOF):
        line, column = end_position(text)
        return LanguageError("unexpected end of input", text=text, line=line, column=column,
                             expected=_friendly_set(exc.expected, names), language=language)
    if isinstance(exc, UnexpectedInput):
        return LanguageError("syntax error", text=text, line=max(exc.line, 1),
                             column=max(exc.column, 1), language=language)
    return LanguageError(f"cannot parse: {exc}", text=text, line=1, column=1, language=language)
