"""What the two languages share (lamia_core._language): one way to report an error, "did you mean",
refusing hostile text, and grammars shipped with the package."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from lamia_core import conditions, expressions
from lamia_core.conditions import parse_condition
from lamia_core.errors import LanguageError
from lamia_core.expressions import parse_expression
from tests.plugins.hostile import hostile_texts, is_forbidden

ROOT = Path(__file__).resolve().parents[1]
Parser = Callable[[str], object]
CONDITION = 'header "User-Agent" regex "^.*(Chrome).*$" or header "User-Agent" regex "^.*(Nexus 6P).*$"'
EXPRESSION = 'if metric "v10" "upstream_rq_total" > 0 { best = "v10"; } else { best = "v9"; } best'


def error(parse: Parser, text: str) -> LanguageError:
    with pytest.raises(LanguageError) as info:
        parse(text)
    return info.value


# --- one way to report an error ------------------------------------------------------------------

SYNTAX_ERRORS = [
    (parse_condition, "condition", 'uri exact "/" and', 1, 18, "unexpected end of input"),
    (parse_condition, "condition", 'uri exact "/" )', 1, 15, "unexpected ')'"),
    (parse_condition, "condition", "header 'x' present", 1, 8, "double quotes, not single quotes"),
    (parse_condition, "condition", 'header "x" exact "/\n', 1, 18, "unterminated string"),
    (parse_condition, "condition", "\n  uri @", 2, 7, "unexpected character '@'"),
    (parse_expression, "expression", "upstream_rq_total /", 1, 20, "unexpected end of input"),
    (parse_expression, "expression", "1 + )", 1, 5, "unexpected ')'"),
    (parse_expression, "expression", "'v1'", 1, 1, "double quotes, not single quotes"),
    (parse_expression, "expression", '"v1\n', 1, 1, "unterminated quoted name"),
    (parse_expression, "expression", "x = 1;\n  x @", 2, 5, "unexpected character '@'"),
]


@pytest.mark.parametrize(("parse", "language", "text", "line", "column", "reason"), SYNTAX_ERRORS)
def test_both_languages_report_position_caret_and_expected_tokens_alike(
    parse: Parser, language: str, text: str, line: int, column: int, reason: str
) -> None:
    err = error(parse, text)
    assert (err.line, err.column) == (line, column), str(err)
    assert reason in err.reason
    head, src, caret = str(err).splitlines()
    assert head.startswith(f"{language} error at line {line}, column {column}: ")
    assert src == "  " + text.split("\n")[line - 1]
    assert caret == "  " + " " * (column - 1) + "^"
    # Tokens as users write them: keywords and punctuation quoted, the rest described.
    assert all(re.fullmatch(r"'[^']+'|an? .+|end of input", e) for e in err.expected), err.expected


def test_the_same_mistake_gets_the_same_words_in_both_languages() -> None:
    cond = error(parse_condition, '(uri exact "/"')
    expr = error(parse_expression, "(1 + 2")
    assert cond.reason == expr.reason == "unexpected end of input"
    assert "')'" in cond.expected and "')'" in expr.expected
    assert error(parse_condition, "").reason == "the condition is empty"
    assert error(parse_expression, "  # nothing yet\n").reason == "unexpected end of input"
    assert error(parse_expression, "").reason == "the expression is empty"


@pytest.mark.parametrize(
    ("parse", "text", "column", "hint"),
    [
        (parse_condition, 'heder "User-Agent" present', 1, "(did you mean 'header'?)"),
        (parse_condition, 'header "x" exac "v9"', 12, "(did you mean 'exact'?)"),
        (parse_condition, 'uri prefix "/shop" annd method exact "GET"', 20, "(did you mean 'and'?)"),
        (parse_condition, 'nott header "x" present', 1, "(did you mean 'not'?)"),
        (parse_expression, "x = 1; y = x adn 2; y", 14, "(did you mean 'and'?)"),
        (parse_expression, "x > 1 orr x < 0", 7, "(did you mean 'or'?)"),
        # The misspelt keyword lexes as a name; the parser stumbles on the word after it.
        (parse_expression, "iff x > 1 { y = 1; } y", 5, "(did you mean 'if' instead of 'iff'?)"),
        (parse_expression, 'metrc "v10" "upstream_rq_total"', 7,
         "(did you mean 'metric' instead of 'metrc'?)"),
        (parse_expression, "if x { y = 1; } els { y = 2; } y", 21, "(did you mean 'else' instead of 'els'?)"),
    ],
)
def test_both_languages_suggest_the_keyword_a_word_is_close_to(
    parse: Parser, text: str, column: int, hint: str
) -> None:
    err = error(parse, text)
    assert err.column == column, str(err)
    assert err.reason.endswith(hint), err.reason


def test_no_suggestion_for_a_word_close_to_nothing_expected() -> None:
    assert "did you mean" not in error(parse_condition, 'header "x" equals "y"').reason
    assert "did you mean" not in error(parse_expression, "total x").reason


# --- hostile text --------------------------------------------------------------------------------


@pytest.mark.parametrize("parse", [parse_condition, parse_expression])
@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("\ud800", "lone surrogate (U+D800)"),
        ("\udcff", "lone surrogate (U+DCFF)"),  # an undecodable byte 0xff on a command line
        ("\x00", "control character U+0000"),
        ("\x1b", "control character U+001B"),
        ("\x7f", "control character U+007F"),
        ("\x85", "control character U+0085"),
    ],
)
def test_lone_surrogates_and_control_characters_are_refused_where_they_are(
    parse: Parser, bad: str, reason: str
) -> None:
    text = f'x = 1;\n  "v{bad}"' if parse is parse_expression else f'uri exact "/"\n  or uri exact "/{bad}"'
    err = error(parse, text)
    assert reason in err.reason
    assert err.line == 2 and text.split("\n")[1][err.column - 1] == bad
    # What a terminal is shown holds neither: the caret still lines up, and stderr can encode it.
    shown = str(err)
    shown.encode("utf-8")
    assert bad not in shown
    src, caret = shown.splitlines()[1:]
    assert src[caret.index("^")] in "\ufffd "


@pytest.mark.parametrize("parse", [parse_condition, parse_expression])
def test_tab_and_line_breaks_are_fine(parse: Parser) -> None:
    text = '\turi exact "/"\r\n\tor uri exact "/a"' if parse is parse_condition else "x = 1;\r\n\tx"
    parse(text)


@pytest.mark.parametrize(("parse", "limit"), [(parse_condition, conditions.MAX_TEXT),
                                              (parse_expression, expressions.MAX_TEXT)])
def test_megabytes_are_refused_by_length_and_shown_cut(parse: Parser, limit: int) -> None:
    text = "(" * 3_000_000
    err = error(parse, text)
    assert err.reason.endswith(f"is 3000000 characters long; at most {limit} are accepted")
    assert (err.line, err.column) == (1, limit + 1)
    _, src, caret = str(err).splitlines()
    assert len(src) < 300 and src.startswith("  ...") and src.endswith("...")
    assert caret.index("^") < len(src)


def test_a_long_line_is_shown_around_the_column() -> None:
    text = 'uri exact "/" or ' * 400 + "@"
    err = error(parse_condition, text)
    src, caret = str(err).splitlines()[1:]
    assert src.startswith("  ...") and not src.endswith("...") and len(src) < 300
    assert src[caret.index("^")] == "@"


def test_quoted_words_are_cut_in_messages() -> None:
    err = error(parse_condition, "x" * 5000)
    assert len(err.reason) < 80
    err = error(parse_condition, f'header "{"é" * 5000}" present')
    assert len(err.reason) < 200


def _check_refusal(parse: Parser, text: str) -> None:
    try:
        parse(text)
    except LanguageError as exc:
        event(f"refused: {exc.reason[:20]}")
        assert exc.line >= 1 and exc.column >= 1
        shown = str(exc)
        shown.encode("utf-8")  # what would reach stderr
        assert len(shown.splitlines()) == 3 and all(len(line) < 2000 for line in shown.splitlines())
        return
    event("accepted")
    assert not any(is_forbidden(c) for c in text) and len(text) <= 10_000


@settings(max_examples=200)
@given(hostile_texts([CONDITION, 'uri prefix "/shop"', 'not cookie "shop-experiment" exact "subset1"'],
                     openers=["(", "not "]))
def test_hostile_conditions_raise_only_language_errors(text: str) -> None:
    _check_refusal(parse_condition, text)


@settings(max_examples=200)
@given(hostile_texts([EXPRESSION, "external_upstream_rq_2xx / upstream_rq_total", '"1.5.0-rc.1"'],
                     openers=["(", "not ", "-"]))
def test_hostile_expressions_raise_only_language_errors(text: str) -> None:
    _check_refusal(parse_expression, text)


@given(st.text(st.characters(codec="utf-8"), max_size=40))
def test_any_text_spliced_into_a_string_is_refused_or_parses(value: str) -> None:
    _check_refusal(parse_condition, f'header "x-shop" exact "{value}"')
    _check_refusal(parse_expression, f'metric "v9" "{value}"')


# --- grammars ------------------------------------------------------------------------------------


def test_every_grammar_ships_with_its_package() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    package_data: dict[str, list[str]] = data["tool"]["setuptools"]["package-data"]
    grammars = sorted((ROOT / "lamia_core").rglob("*.lark"))
    assert {g.parent.name for g in grammars} == {"conditions", "expressions"}
    for grammar in grammars:
        package = ".".join(grammar.parent.relative_to(ROOT).parts)
        assert any(grammar.match(glob) for glob in package_data.get(package, [])), (package, grammar.name)
