"""What the condition and the expression languages share: checking source text, positions, and
turning lark's parse errors into :class:`LanguageError`.

Both languages report an error the same way: line and column (1-based, lines
broken at ``\\n`` only, as lark counts them), the line with a caret, what was
expected written as users write it (``'('``, ``'and'``, ``a number``), and
for a misspelt keyword, ``(did you mean 'header'?)``.

Source text is refused before lark sees it when it is longer than the
language's limit, or holds a control character (other than tab and line
breaks) or a lone surrogate, which is what undecodable bytes become on a
command line and which cannot be written to Kubernetes, YAML or a terminal.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from lark import Lark, Token
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.lexer import Pattern, PatternStr

from lamia_core.errors import LanguageError

_WORD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD_CHAR: Final = re.compile(r"[A-Za-z0-9_]")
# A keyword written as a regex so that it ends at a word boundary (``/header\b/i``).
_KEYWORD_RE: Final = re.compile(r"([a-z]+)\\b")
# C0 and C1 controls but tab, LF and CR; and the surrogate range, which a str holds only as lone halves.
_FORBIDDEN: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
#: Longest piece of user text quoted inside an error message.
MAX_QUOTED: Final = 40


class Located(Exception):
    """Raised by a parser callback for a semantic error at a position; the parse turns it into a
    :class:`LanguageError` with the source text."""

    def __init__(self, line: int, column: int, reason: str) -> None:
        super().__init__(reason)
        self.line, self.column, self.reason = line, column, reason


@dataclass(frozen=True)
class Vocabulary:
    """How a language names its tokens to users, and its limits.

    ``names`` maps a terminal to what "expected one of" lists (``a number``);
    ``nouns`` maps a terminal that stands for user text to what "unexpected"
    calls it (``unexpected name 'x'``). Keywords and punctuation need neither:
    they are shown quoted, as written.
    """

    language: str
    names: Mapping[str, str]
    nouns: Mapping[str, str]
    keywords: frozenset[str]
    max_text: int
    terminals: frozenset[str]

    def name(self, terminal: str) -> str:
        return self.names.get(terminal, terminal.lstrip("_").lower())

    def noun(self, terminal: str) -> str | None:
        return self.nouns.get(terminal)


def load_grammar(package: str, resource: str, **options: Any) -> Lark:
    """The LALR parser of a grammar file shipped inside ``package``."""
    text = resources.files(package).joinpath(resource).read_text(encoding="utf-8")
    return Lark(text, parser="lalr", **options)


def vocabulary(
    parser: Lark, language: str, *, max_text: int, names: Mapping[str, str], nouns: Mapping[str, str]
) -> Vocabulary:
    """The vocabulary of ``parser``'s grammar: its keywords and punctuation quoted as written,
    ``names`` for the terminals that stand for user text."""
    shown = {"$END": "end of input"}
    keywords: set[str] = set()
    for terminal in parser.terminals:
        literal = _literal(terminal.pattern)
        if literal is not None:
            shown[terminal.name] = f"'{literal}'"
            if _WORD.fullmatch(literal):
                keywords.add(literal)
    shown.update(names)
    terminals = frozenset(t.name for t in parser.terminals) | {"$END"}
    return Vocabulary(language, shown, dict(nouns), frozenset(keywords), max_text, terminals)


def _literal(pattern: Pattern) -> str | None:
    if isinstance(pattern, PatternStr):
        return pattern.value
    m = _KEYWORD_RE.fullmatch(pattern.value)
    return m.group(1) if m else None


# --- positions -----------------------------------------------------------------------------------


def position_of(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def end_position(text: str) -> tuple[int, int]:
    """Line and column just after the last non-blank character (1, 1 for blank text)."""
    return position_of(text, len(text.rstrip())) if text.strip() else (1, 1)


def error_at(
    text: str, line: int, column: int, reason: str, language: str, expected: Iterable[str] | None = None
) -> LanguageError:
    return LanguageError(reason, text=text, line=max(line, 1), column=max(column, 1),
                         expected=list(expected or ()), language=language)


def clip(text: str, limit: int = MAX_QUOTED) -> str:
    """``text`` cut to ``limit`` characters for quoting in a message."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: str, candidates: Collection[str], *, n: int = 1, cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the candidates close to ``word``, or an empty string."""
    if len(word) < 2 or len(word) > MAX_QUOTED:
        return ""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=n, cutoff=cutoff)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


# --- checking and parsing ------------------------------------------------------------------------


def check_source(text: str, vocab: Vocabulary) -> None:
    """Refuse text that is too long or holds characters no token of either language may hold."""
    if len(text) > vocab.max_text:
        line, column = position_of(text, vocab.max_text)
        raise error_at(text, line, column, f"the {vocab.language} is {len(text)} characters long; at most "
                       f"{vocab.max_text} are accepted", vocab.language)
    bad = _FORBIDDEN.search(text)
    if bad is None:
        return
    c = bad.group()
    if "\ud800" <= c <= "\udfff":
        reason = (f"invalid text: a lone surrogate (U+{ord(c):04X}) is not a character; was the input "
                  "UTF-8?")
    else:
        reason = f"control character U+{ord(c):04X} is not allowed (tab and line breaks are)"
    raise error_at(text, *position_of(text, bad.start()), reason, vocab.language)


def parse(parser: Lark, text: str, vocab: Vocabulary) -> Any:
    """``parser.parse(text)`` with every failure a :class:`LanguageError`."""
    check_source(text, vocab)
    try:
        return parser.parse(text)
    except Located as exc:
        raise error_at(text, exc.line, exc.column, exc.reason, vocab.language) from exc
    except LarkError as exc:
        raise to_language_error(exc, text, vocab) from exc


def to_language_error(exc: LarkError, text: str, vocab: Vocabulary) -> LanguageError:
    """The :class:`LanguageError` that explains ``exc``, raised while parsing ``text``."""
    if isinstance(exc, VisitError) and isinstance(exc.orig_exc, LanguageError):
        return exc.orig_exc
    if isinstance(exc, UnexpectedCharacters):
        return _unexpected_characters(exc, text, vocab)
    if isinstance(exc, UnexpectedToken):
        return _unexpected_token(exc, text, vocab)
    if isinstance(exc, UnexpectedEOF):
        return error_at(text, *end_position(text), "unexpected end of input", vocab.language,
                        _names(exc.expected, vocab))
    if isinstance(exc, UnexpectedInput):
        return error_at(text, exc.line, exc.column, "syntax error", vocab.language)
    return error_at(text, 1, 1, f"cannot parse: {exc}", vocab.language)


def _names(terminals: Iterable[str], vocab: Vocabulary) -> list[str]:
    return sorted({vocab.name(t) for t in terminals if t in vocab.terminals and not t.startswith("__IGNORE")})


def _state_expected(exc: UnexpectedInput) -> set[str]:
    """The terminals the parser could take where the lexer failed.

    The basic lexer's own list (``allowed``) is every terminal of the grammar,
    so the parser's state is asked instead.
    """
    state = getattr(exc, "state", None)
    try:
        return set(state.parse_conf.parse_table.states[state.position])  # type: ignore[union-attr]
    except (AttributeError, KeyError, IndexError, TypeError):
        return set(getattr(exc, "allowed", None) or ())


def _unexpected_characters(exc: UnexpectedCharacters, text: str, vocab: Vocabulary) -> LanguageError:
    pos = exc.pos_in_stream
    rest = text[pos:] if pos is not None else ""
    expected = _names(_state_expected(exc), vocab)
    word = _WORD.match(rest)
    string = vocab.noun("STRING") or "string"
    if word:
        reason = f"unknown word {clip(word.group())!r}" + _suggestion(word.group(), expected, vocab)
    elif rest.startswith('"'):
        reason = f"unterminated {string}: a double quote opens a {string} that does not end on this line"
        expected = []
    elif rest.startswith("'"):
        reason = f"{string}s are written in double quotes, not single quotes"
    else:
        reason = f"unexpected character {rest[:1]!r}"
    return error_at(text, exc.line, exc.column, reason, vocab.language, expected)


def _unexpected_token(exc: UnexpectedToken, text: str, vocab: Vocabulary) -> LanguageError:
    tok: Token = exc.token
    expected = _names(exc.accepts or exc.expected, vocab)
    if tok.type == "$END":
        # Lark puts the end of input on the last token; point just after it instead.
        if tok.end_line is not None and tok.end_column is not None:
            line, column = tok.end_line, tok.end_column
        else:
            line, column = end_position(text)
        reason = f"the {vocab.language} is empty" if not text.strip() else "unexpected end of input"
        return error_at(text, line, column, reason, vocab.language, expected)
    written = str(tok)
    noun = vocab.noun(tok.type)
    if noun is None:
        reason = f"unexpected {clip(written)!r}"
    elif written.startswith('"'):
        reason = f"unexpected {noun} {clip(written)}"
    else:
        reason = f"unexpected {noun} {clip(written)!r}"
    hint = _suggestion(written, expected, vocab) if _WORD.fullmatch(written) else ""
    reason += hint or _misspelt_before(text, tok, vocab)
    return error_at(text, tok.line or 1, tok.column or 1, reason, vocab.language, expected)


def _suggestion(word: str, expected: Iterable[str], vocab: Vocabulary) -> str:
    """A keyword the parser expected here that ``word`` is close to."""
    keywords = {e.strip("'") for e in expected} & vocab.keywords
    return did_you_mean(word.lower(), keywords)


def _misspelt_before(text: str, tok: Token, vocab: Vocabulary) -> str:
    """When the word just before the unexpected token is close to a keyword (``iff x > 1``), that
    word is the likelier mistake."""
    if tok.start_pos is None:
        return ""
    before = text[: tok.start_pos].rstrip()
    start = len(before)
    while start and _WORD_CHAR.fullmatch(before[start - 1]):
        start -= 1
    word = before[start:]
    if not _WORD.fullmatch(word) or word.lower() in vocab.keywords:
        return ""
    hint = did_you_mean(word.lower(), vocab.keywords)
    return hint.replace("?)", f" instead of {word!r}?)") if hint else ""
