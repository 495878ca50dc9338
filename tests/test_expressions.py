"""The expression language: parsing, printing, static analysis and evaluation."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lamia_core.errors import InvalidInput, LamiaError, LanguageError
from lamia_core.expressions import (
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
    Number,
    Program,
    Statement,
    Unary,
    VersionLit,
    analyse,
    evaluate,
    format_expr,
    format_number,
    format_program,
    parse_expression,
)

METRICS = frozenset({
    "external_upstream_rq_200", "external_upstream_rq_2xx", "upstream_rq_3xx", "external_upstream_rq_3xx",
    "external_upstream_rq_4xx", "external_upstream_rq_500", "external_upstream_rq_503",
    "external_upstream_rq_5xx", "upstream_rq_total", "request_duration_p50", "request_duration_p90",
    "request_duration_p99",
})
RATIO = "external_upstream_rq_2xx / upstream_rq_total"
WEIGHTED = "(external_upstream_rq_2xx + upstream_rq_3xx) / (upstream_rq_total - external_upstream_rq_4xx)"
CUSTOM = (
    'if ( ( metric "version1" "external_upstream_rq_2xx" / metric "version1" "upstream_rq_total" ) > '
    '( metric "version2" "external_upstream_rq_2xx" / metric "version2" "upstream_rq_total" ) ) '
    "{ result = version1; } else if ( ( metric \"version1\" \"external_upstream_rq_2xx\" / "
    'metric "version1" "upstream_rq_total" ) < ( metric "version2" "external_upstream_rq_2xx" / '
    'metric "version2" "upstream_rq_total" ) ) { result = version2; } else { result = nil; } result'
)
VERSIONS = ("version1", "version2")


def ratios(ok1: float | None, total1: float | None, ok2: float | None, total2: float | None) -> dict[
        str, dict[str, float | None]]:
    return {
        "version1": {"external_upstream_rq_2xx": ok1, "upstream_rq_total": total1},
        "version2": {"external_upstream_rq_2xx": ok2, "upstream_rq_total": total2},
    }


def run(text: str, values: Mapping[str, Mapping[str, float | None]] | None = None, **kw: object) -> object:
    values = {"v1": {}, "v2": {}} if values is None else values
    kw.setdefault("metrics", METRICS)
    kw.setdefault("versions", ["v1", "v2"])
    return evaluate(parse_expression(text), values, **kw)  # type: ignore[arg-type]


def language_error(fn: object, *args: object, **kw: object) -> LanguageError:
    with pytest.raises(LanguageError) as info:
        fn(*args, **kw)  # type: ignore[operator]
    return info.value


# --- the three examples users write ----------------------------------------------------------------


def test_ratio_example_reads_bare_metrics_of_the_scored_version() -> None:
    program = parse_expression(RATIO)
    req = analyse(program, metrics=METRICS)
    assert req.pairs == {(None, "external_upstream_rq_2xx"), (None, "upstream_rq_total")}
    assert req.uses_scored_version
    values = {"v1": {"external_upstream_rq_2xx": 95, "upstream_rq_total": 100},
              "v2": {"external_upstream_rq_2xx": 5, "upstream_rq_total": 10}}
    assert evaluate(program, values, version="v1", metrics=METRICS) == pytest.approx(0.95)
    assert evaluate(program, values, version="v2", metrics=METRICS) == pytest.approx(0.5)


def test_weighted_example() -> None:
    values = {"v1": {"external_upstream_rq_2xx": 80, "upstream_rq_3xx": 10, "upstream_rq_total": 100,
                     "external_upstream_rq_4xx": 10}}
    assert run(WEIGHTED, values, version="v1") == pytest.approx(1.0)
    assert analyse(parse_expression(WEIGHTED), metrics=METRICS).metric_names == {
        "external_upstream_rq_2xx", "upstream_rq_3xx", "upstream_rq_total", "external_upstream_rq_4xx"}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (ratios(90, 100, 95, 100), "version2"),
        (ratios(99, 100, 95, 100), "version1"),
        (ratios(95, 100, 19, 20), None),  # the same ratio: a tie
        (ratios(None, 100, 95, 100), None),  # version1 has no data
        (ratios(99, 100, 95, None), None),  # version2 has no data
        (ratios(99, 0, 95, 100), None),  # no requests to version1: 99/0 is nil, not inf
        ({"version2": {"external_upstream_rq_2xx": 1, "upstream_rq_total": 1}}, None),  # version1 absent
        (ratios(math.nan, 100, 1, 100), None),
        (ratios(math.inf, 100, 1, 100), None),
    ],
)
def test_custom_program_picks_the_better_ratio_and_never_guesses(
    values: dict[str, dict[str, float | None]], expected: str | None
) -> None:
    program = parse_expression(CUSTOM)
    assert evaluate(program, values, versions=VERSIONS, metrics=METRICS) == expected


def test_custom_program_reads_four_pairs_and_no_scored_version() -> None:
    req = analyse(parse_expression(CUSTOM), metrics=METRICS, versions=VERSIONS)
    assert req.pairs == {(v, m) for v in VERSIONS for m in ("external_upstream_rq_2xx", "upstream_rq_total")}
    assert not req.uses_scored_version
    assert req.versions == set(VERSIONS)


# --- syntax --------------------------------------------------------------------------------------


def test_precedence_and_associativity() -> None:
    p = parse_expression("1 - 2 - 3 * -4 / 5")
    assert p.result == Binary("-", Binary("-", Number(1), Number(2)),
                              Binary("/", Binary("*", Number(3), Unary("-", Number(4))), Number(5)))
    p = parse_expression("not a < 1 and b or c == d")
    assert p.result == Binary(
        "or",
        Binary("and", Unary("not", Binary("<", Name("a"), Number(1))), Name("b")),
        Binary("==", Name("c"), Name("d")),
    )


def test_keywords_are_case_insensitive_names_are_not() -> None:
    p = parse_expression('IF TRUE { X = NIL; } ELSE If False { x = METRIC "V1" "m"; } Else { } x')
    assert p == parse_expression('if true { X = nil; } else if false { x = metric "V1" "m"; } else { } x')
    assert p.statements[0] == If(
        (Branch(Bool(True), (Assign("X", Nil()),)),
         Branch(Bool(False), (Assign("x", MetricRef("V1", "m")),))),
        (),
    )
    assert p.result == Name("x")


def test_comments_trailing_semicolon_and_unquoted_metric_arguments() -> None:
    p = parse_expression("# pick\nx = 1; # one\n metric v1 upstream_rq_total + x;")
    assert p == Program((Assign("x", Number(1)),),
                        Binary("+", MetricRef("v1", "upstream_rq_total"), Name("x")))


def test_quoted_names_are_versions_and_numbers_have_many_forms() -> None:
    p = parse_expression('"v1.2-rc"')
    assert p.result == VersionLit("v1.2-rc")
    assert [parse_expression(t).result for t in ("0.5", ".5", "5e-1", "50E-2", "5.")] == [
        Number(0.5)] * 4 + [Number(5)]


def test_positions_are_one_based_with_operator_positions() -> None:
    p = parse_expression("x = 1;\n  a  + b")
    assert (p.statements[0].line, p.statements[0].column) == (1, 1)
    result = p.result
    assert isinstance(result, Binary)
    assert (result.line, result.column, result.op_pos) == (2, 3, (2, 6))
    assert (result.right.line, result.right.column) == (2, 8)


@pytest.mark.parametrize(
    ("text", "line", "column", "reason", "expected"),
    [
        ("1 +", 1, 4, "unexpected end of input", {"a number", "a name", "'('", "'-'", "'nil'"}),
        ("a b", 1, 3, "unexpected name 'b'", {"'+'", "'=='", "end of input", "';'"}),
        ("x = if", 1, 5, "unexpected 'if'", {"a number", "'not'"}),
        ("1 < 2 < 3", 1, 7, "unexpected '<'", {"end of input", "'and'"}),
        ("x = 1", 1, 6, "unexpected end of input", {"';'"}),
        ("if a { x = 1; } else", 1, 21, "unexpected end of input", {"'if'", "'{'"}),
        ("metric 1", 1, 8, "unexpected number '1'", {"a name", 'a quoted name ("v1")'}),
        ("1 + not x", 1, 5, "unexpected 'not'", {"a number"}),
        ("x = 1;\n\n  y = (2 + ;\n", 3, 12, "unexpected ';'", {"a number"}),
    ],
)
def test_syntax_errors_say_where_and_what_was_expected(
    text: str, line: int, column: int, reason: str, expected: set[str]
) -> None:
    err = language_error(parse_expression, text)
    assert (err.line, err.column, err.reason) == (line, column, reason)
    assert expected <= set(err.expected)
    # Friendly names only: no lark terminal names such as __ANON_0, _SEMI or NUMBER.
    assert all(re.fullmatch(r"'[^']+'|a .+|end of input", e) for e in err.expected), err.expected
    shown = str(err).splitlines()
    assert shown[0].startswith(f"expression error at line {line}, column {column}: {reason}")
    assert shown[1] == "  " + text.splitlines()[line - 1]
    assert shown[2] == "  " + " " * (column - 1) + "^"


@pytest.mark.parametrize(
    ("text", "column", "reason"),
    [
        ("a @ b", 3, "unexpected character '@'"),
        ('"v1', 1, "unterminated quoted name"),
        ('"a b"', 1, "'a b' is not a valid version name"),
        ('metric "v1" ""', 13, "a metric name cannot be empty"),
        ("2 * 1e999", 5, "the number 1e999 is too large"),
    ],
)
def test_lexical_errors_have_positions(text: str, column: int, reason: str) -> None:
    err = language_error(parse_expression, text)
    assert err.column == column
    assert err.reason.startswith(reason)


def test_caret_lines_up_when_text_has_unusual_line_breaks() -> None:
    err = language_error(parse_expression, "a\r + @")  # \r is blank, not a new line, to the lexer
    assert (err.line, err.column) == (1, 6)
    assert str(err).splitlines()[1:] == ["  a  + @", "       ^"]
    err = language_error(parse_expression, "a\u2028 + @")
    assert (err.line, err.column, err.reason) == (1, 2, "unexpected character '\\u2028'")
    assert str(err).splitlines()[1:] == ["  a  + @", "   ^"]


# --- limits ------------------------------------------------------------------------------------


def test_text_longer_than_the_limit_is_rejected_with_its_position() -> None:
    err = language_error(parse_expression, "1" + " " * MAX_TEXT)
    assert (err.line, err.column) == (1, MAX_TEXT + 1)
    assert err.reason == f"the expression is {MAX_TEXT + 1} characters long; at most {MAX_TEXT} are accepted"


@pytest.mark.parametrize(
    "text",
    [
        "(1 + " * 1500 + "1" + ")" * 1500,
        "-" * 5000 + "1",
        "not " * 2000 + "true",
        "1" + "+1" * 3000,
        "if true { " * 500 + "x = 1;" + " }" * 500 + " 1",
    ],
)
def test_deep_nesting_is_a_language_error_not_a_crash(text: str) -> None:
    err = language_error(parse_expression, text)
    assert "nested too deeply" in err.reason


def test_parentheses_alone_add_no_depth() -> None:
    assert parse_expression("(" * 4000 + "1" + ")" * 4000).result == Number(1)


def test_nesting_up_to_the_limit_parses_prints_and_evaluates() -> None:
    text = "-" * (MAX_DEPTH - 1) + "1"
    program = parse_expression(text)
    assert parse_expression(format_program(program)) == program
    assert run(text) == (-1.0 if (MAX_DEPTH - 1) % 2 else 1.0)
    assert "nested too deeply" in language_error(parse_expression, "-" + text).reason


def test_deep_hand_built_trees_are_rejected_by_every_walker() -> None:
    expr: Expr = Number(1)
    for _ in range(5000):
        expr = Unary("-", expr)
    program = Program((), expr)
    for call in (lambda: format_program(program), lambda: analyse(program, metrics=METRICS),
                 lambda: evaluate(program, {})):
        assert "nested too deeply" in language_error(call).reason


def test_max_steps_bounds_evaluation() -> None:
    text = "1" + " + 1" * 150
    assert run(text) == 151
    err = language_error(run, text, max_steps=100)
    assert "more than 100 steps" in err.reason
    with pytest.raises(InvalidInput):
        run("1", max_steps=0)


def test_hand_built_nodes_are_validated() -> None:
    for build in (lambda: Number(-1.0), lambda: Number(math.inf), lambda: Name("if"), lambda: Name("a-b"),
                  lambda: VersionLit("-x"), lambda: MetricRef("v1", 'a"b'), lambda: Binary("%", Nil(), Nil()),
                  lambda: Unary("+", Nil()), lambda: Assign("NOT", Nil()), lambda: If(())):
        with pytest.raises(InvalidInput):
            build()


# --- printing ----------------------------------------------------------------------------------


def test_canonical_form_of_the_custom_program() -> None:
    text = format_program(parse_expression(CUSTOM))
    assert text.splitlines() == [
        'if ((metric "version1" "external_upstream_rq_2xx" / metric "version1" "upstream_rq_total") > '
        '(metric "version2" "external_upstream_rq_2xx" / metric "version2" "upstream_rq_total")) {',
        "  result = version1;",
        '} else if ((metric "version1" "external_upstream_rq_2xx" / metric "version1" "upstream_rq_total") < '
        '(metric "version2" "external_upstream_rq_2xx" / metric "version2" "upstream_rq_total")) {',
        "  result = version2;",
        "} else {",
        "  result = nil;",
        "}",
        "result",
    ]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("(a - (b - c)) - (d * e)", "a - (b - c) - d * e"),
        ("- (-1) * -(a + b)", "--1 * -(a + b)"),
        ("not (a and b) or (not c)", "not (a and b) or not c"),
        ("(not a) == (b < c)", "(not a) == (b < c)"),
        ("(a + 1) < b * 2", "(a + 1) < (b * 2)"),
        ("1.50 + 2e3 + 1e20 + 0.1", "1.5 + 2000 + 1e+20 + 0.1"),
        ('Metric v1 m', 'metric "v1" "m"'),
    ],
)
def test_printer_uses_minimal_parentheses(text: str, canonical: str) -> None:
    assert format_program(parse_expression(text)) == canonical


@pytest.mark.parametrize(("value", "text"), [(2.0, "2"), (0.95, "0.95"), (-3.0, "-3"), (1e16, "1e+16"),
                                             (1.5e-7, "1.5e-07")])
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text


# --- static analysis ---------------------------------------------------------------------------


def test_requirements_mix_bare_and_named_metrics() -> None:
    req = analyse(parse_expression('upstream_rq_total + metric "v2" "upstream_rq_total"'), metrics=METRICS,
                  versions=["v1", "v2"])
    assert req.pairs == {(None, "upstream_rq_total"), ("v2", "upstream_rq_total")}
    assert req.metric_names == {"upstream_rq_total"}
    assert req.uses_scored_version


def test_unknown_metric_points_at_it_and_suggests() -> None:
    err = language_error(analyse, parse_expression('1 + metric "v1" "upstream_rq_totl"'), metrics=METRICS)
    assert (err.line, err.column) == (1, 17)
    assert err.reason.startswith("unknown metric 'upstream_rq_totl' (did you mean 'upstream_rq_total'")


def test_unknown_bare_name_without_versions_is_an_unknown_metric_when_used_as_a_number() -> None:
    err = language_error(analyse, parse_expression("x = 1;\nupstrem_rq_total * x"), metrics=METRICS)
    assert (err.line, err.column) == (2, 1)
    assert err.reason.startswith("unknown metric 'upstrem_rq_total'")
    # Where a version fits, an unknown name is taken as a version until versions are known.
    assert analyse(parse_expression("canary"), metrics=METRICS).versions == {"canary"}
    err = language_error(analyse, parse_expression("canary"), metrics=METRICS, versions=["v1"])
    assert err.reason == "undefined name 'canary': not a variable, a metric or a version"


def test_unknown_versions_are_errors_when_versions_are_known() -> None:
    err = language_error(analyse, parse_expression('"v3"'), metrics=METRICS, versions=["v1", "v2"])
    assert err.reason == "unknown version 'v3' (known versions: v1, v2)"
    err = language_error(analyse, parse_expression('\n  metric "v3" "upstream_rq_total"'), metrics=METRICS,
                         versions=["v1"])
    assert (err.line, err.column) == (2, 10)


def test_a_name_that_is_a_metric_and_a_version_is_ambiguous() -> None:
    err = language_error(analyse, parse_expression("upstream_rq_total"), metrics=METRICS,
                         versions=["upstream_rq_total"])
    assert "both a metric and a version" in err.reason
    # Quoting or `metric` removes the ambiguity.
    req = analyse(parse_expression('metric "upstream_rq_total" "upstream_rq_total"'), metrics=METRICS,
                  versions=["upstream_rq_total"])
    assert req.pairs == {("upstream_rq_total", "upstream_rq_total")}


@pytest.mark.parametrize(
    ("text", "versions", "reason"),
    [
        ("upstream_rq_total = 1; 2", None, "cannot assign to 'upstream_rq_total': it is a metric name"),
        ("v1 = 1; 2", ["v1"], "cannot assign to 'v1': it is a version name"),
        ("x = x + 1; x", None, "variable 'x' is used before it is assigned"),
        ("y = 1 + x; x = 2; y", None, "variable 'x' is used before it is assigned"),
        ("if true { x = 1; } x", None, "variable 'x' is not assigned on every path"),
        ("if true { x = 1; } else if false { x = 2; } x", None, "variable 'x' is not assigned on every path"),
        ("if true { if false { x = 1; } else { y = 1; } } else { x = 2; } x", None, "variable 'x' is not"),
    ],
)
def test_variables_must_be_assigned_on_every_path(text: str, versions: list[str] | None, reason: str) -> None:
    err = language_error(analyse, parse_expression(text), metrics=METRICS, versions=versions)
    assert err.reason.startswith(reason)


def test_assignment_in_every_branch_including_else_defines_the_variable() -> None:
    text = "if true { if false { x = 1; } else { x = 2; } } else if false { x = 3; } else { x = 4; } x"
    assert analyse(parse_expression(text), metrics=METRICS).pairs == frozenset()
    assert run(text) == 2


@pytest.mark.parametrize(
    ("text", "column", "reason"),
    [
        ("v1 + 1", 1, "the left operand of '+' must be a number, not a version"),
        ("1 - (1 < 2)", 6, "the right operand of '-' must be a number, not a condition (true or false)"),
        ("-v1", 2, "the operand of '-' must be a number, not a version"),
        ("if 1 { x = 1; } else { x = 2; } x", 4, "the condition of 'if' must be a condition"),
        ("if not upstream_rq_total { x = 1; } else { x = 2; } x", 8,
         "the operand of 'not' must be a condition"),
        ("if true and 1 { x = 1; } else { x = 2; } x", 13, "the right operand of 'and' must be a condition"),
        ("if v1 < 1 { x = 1; } else { x = 2; } x", 4, "the left operand of '<' must be a number"),
        ("if v1 == 1 { x = 1; } else { x = 2; } x", 7, "'==' compares a version with a number"),
        ("1 < 2", 1, "the result must be a number, a version or nil, not a condition"),
        ('x = "v1"; x / 2', 11, "the left operand of '/' must be a number, not a version"),
    ],
)
def test_type_errors_are_found_before_evaluation(text: str, column: int, reason: str) -> None:
    err = language_error(analyse, parse_expression(text), metrics=METRICS, versions=["v1", "v2"])
    assert err.column == column
    assert err.reason.startswith(reason)


def test_nil_fits_every_type() -> None:
    text = ("x = nil; if nil { y = nil + 1; } else { y = -nil; } "
            "if x == nil or not nil { z = 1; } else { z = 2; } y")
    analyse(parse_expression(text), metrics=METRICS)
    assert run(text) is None


def test_all_errors_are_reported_in_one_message() -> None:
    err = language_error(analyse, parse_expression("foo + 1 + bar * v1"), metrics=METRICS,
                         versions=["v1"])
    assert (err.line, err.column) == (1, 1)
    assert "undefined name 'foo'" in err.reason
    assert "2 more errors" in err.reason
    assert "line 1, column 11: undefined name 'bar'" in err.reason
    assert "line 1, column 17: the right operand of '*' must be a number, not a version" in err.reason


# --- evaluation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7.0),
        ("(1 + 2) * 3", 9.0),
        ("7 / 2 - -1", 4.5),
        ("1 / 0", None),
        ("0 / 0", None),
        ("nil + 1", None),
        ("-nil", None),
        ("1e308 * 10", None),  # overflow is no data, not inf
        ("1e308 + 1e308 - 1e308", None),
        ('"v2"', "v2"),
        ("v1", "v1"),
        ("nil", None),
        ("if 1 < 2 { x = v1; } else { x = v2; } x", "v1"),
        ("if 2 <= 1 { x = v1; } else if 2 >= 2 { x = v2; } else { x = nil; } x", "v2"),
        ("if v1 == v1 and v1 != v2 and (1 < 2) == true { x = 1; } else { x = 0; } x", 1.0),
    ],
)
def test_evaluation(text: str, expected: object) -> None:
    assert run(text) == expected


def test_metric_values_in_several_forms() -> None:
    values = {"v1": {"upstream_rq_total": 3, "external_upstream_rq_2xx": 10**400, "upstream_rq_3xx": None}}
    assert run("upstream_rq_total * 2", values, version="v1") == 6.0
    assert run("external_upstream_rq_2xx", values, version="v1") is None  # beyond float range
    assert run("upstream_rq_3xx + 1", values, version="v1") is None
    assert run("external_upstream_rq_5xx + 1", values, version="v1") is None  # absent metric
    for bad in (True, "1", [1]):
        with pytest.raises(InvalidInput, match="must be a number or None"):
            run("upstream_rq_total", {"v1": {"upstream_rq_total": bad}}, version="v1")  # type: ignore[dict-item]


def test_without_a_metric_list_any_other_name_is_a_metric() -> None:
    # How the policies call it: a metric missing from the values reads as nil, not as an error.
    program = parse_expression("upstream_rq_total + external_upstream_rq_5xx")
    assert evaluate(program, {"v1": {"upstream_rq_total": 1}}, version="v1") is None
    both: dict[str, dict[str, float | None]] = {"v1": {"upstream_rq_total": 1, "external_upstream_rq_5xx": 2}}
    assert evaluate(program, both, version="v1") == 3


def test_a_bare_metric_needs_a_scored_version() -> None:
    err = language_error(run, "x = 1; if false { y = upstream_rq_total; } else { y = 1; } y")
    assert (err.line, err.column) == (1, 23)
    assert "no version is being scored" in err.reason
    with pytest.raises(InvalidInput, match="scored version 'v9'"):
        run("1", version="v9", versions=["v1"])


KLEENE_AND = {(True, True): True, (True, False): False, (True, None): None,
              (False, True): False, (False, False): False, (False, None): False,
              (None, True): None, (None, False): False, (None, None): None}
KLEENE_OR = {(True, True): True, (True, False): True, (True, None): True,
             (False, True): True, (False, False): False, (False, None): None,
             (None, True): True, (None, False): None, (None, None): None}
LITERAL = {True: "true", False: "false", None: "nil"}


def _decide(condition: str) -> object:
    return run(f"if {condition} {{ x = 1; }} else {{ x = 0; }} x")


@pytest.mark.parametrize(("op", "table"), [("and", KLEENE_AND), ("or", KLEENE_OR)])
def test_three_valued_logic(op: str, table: dict[tuple[bool | None, bool | None], bool | None]) -> None:
    for (a, b), expected in table.items():
        decided = _decide(f"{LITERAL[a]} {op} {LITERAL[b]}")
        assert decided == (None if expected is None else float(expected)), (a, op, b)
    assert [_decide(f"not {LITERAL[a]}") for a in (True, False, None)] == [0.0, 1.0, None]


def test_a_nil_condition_takes_no_branch_not_even_else() -> None:
    kept = "x = 5; if upstream_rq_total > 1 { x = 1; } else { x = 2; } x"
    chosen = "if upstream_rq_total > 1 { y = v1; } else { y = v2; } y"
    for total, x, y in ((2, 1.0, "v1"), (0, 2.0, "v2"), (None, 5.0, None)):
        values = {"v1": {"upstream_rq_total": total}}
        assert (run(kept, values, version="v1"), run(chosen, values, version="v1")) == (x, y), total
    assert run("x = 5; if nil { x = 1; } else { x = 2; } x") == 5.0
    assert run("if 1 == nil { x = 1; } else if true { x = 2; } else { x = 3; } x") is None


def test_type_errors_that_depend_on_data_are_found_during_evaluation() -> None:
    text = "if upstream_rq_total > 1 { x = v1; } else { x = 1; } x + 1"
    analyse(parse_expression(text), metrics=METRICS, versions=["v1"])  # x may be a number: not static
    assert run(text, {"v1": {"upstream_rq_total": 0}}, version="v1") == 2.0
    err = language_error(run, text, {"v1": {"upstream_rq_total": 5}}, version="v1")
    assert (err.column, err.reason) == (54, "the left operand of '+' must be a number, not a version")
    text = "if upstream_rq_total > 1 { x = 1 < 2; } else { x = 1; } x"
    err = language_error(run, text, {"v1": {"upstream_rq_total": 5}}, version="v1")
    assert err.reason == "the result must be a number, a version or nil, not a condition"
    text = "if upstream_rq_total > 1 { x = 1; } else { x = v1; } if x == v1 { y = 1; } else { y = 2; } y"
    err = language_error(run, text, {"v1": {"upstream_rq_total": 5}}, version="v1")
    assert (err.column, err.reason) == (59, "'==' compares a number with a version")


# --- properties --------------------------------------------------------------------------------

PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True).filter(
    lambda s: s.lower() not in KEYWORDS)
version_names = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,5}[A-Za-z0-9])?", fullmatch=True)
# Any character a quoted name can hold: no quote, line break or control character (tab aside).
metric_texts = st.text(st.characters(exclude_characters='"\n\r', exclude_categories=["Cc"],
                                     include_characters="\t", codec="utf-8"),
                       min_size=1, max_size=8)
literals = st.floats(min_value=0, allow_nan=False, allow_infinity=False)


def programs(names: st.SearchStrategy[str], versions: st.SearchStrategy[str],
             metric_names: st.SearchStrategy[str]) -> st.SearchStrategy[Program]:
    leaves: st.SearchStrategy[Expr] = st.one_of(
        st.builds(Number, literals), st.builds(Bool, st.booleans()), st.just(Nil()),
        st.builds(VersionLit, versions), st.builds(Name, names), st.builds(MetricRef, versions, metric_names),
    )
    exprs = st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.builds(Unary, st.sampled_from(["-", "not"]), inner),
            st.builds(Binary, st.sampled_from(["+", "-", "*", "/", "<", "<=", ">", ">=", "==", "!=", "and",
                                               "or"]), inner, inner),
        ),
        max_leaves=10,
    )
    blocks = st.lists(st.deferred(lambda: statements), max_size=3).map(tuple)
    statements: st.SearchStrategy[Statement] = st.one_of(
        st.builds(Assign, names, exprs),
        st.builds(If, st.lists(st.builds(Branch, exprs, blocks), min_size=1, max_size=3).map(tuple),
                  st.none() | blocks),
    )
    return st.builds(Program, st.lists(statements, max_size=4).map(tuple), exprs)


@PROPS
@given(programs(identifiers, version_names, metric_texts))
def test_printing_then_parsing_gives_the_same_tree(program: Program) -> None:
    try:
        text = format_program(program)
    except LanguageError as exc:
        assert "nested too deeply" in exc.reason
        return
    assert parse_expression(text) == program


def test_the_printer_refuses_a_program_the_parser_would_refuse() -> None:
    for metric in ("\x1f", "a\x00b", "\x7f"):  # a constructor lets them by; the lexer does not
        program = Program((), MetricRef("v1", metric))
        with pytest.raises(LanguageError, match="control character"):
            format_program(program)
        with pytest.raises(LanguageError, match="control character"):
            format_expr(program.result)
    long = Program((), MetricRef("v1", "m" * MAX_TEXT))
    with pytest.raises(LanguageError, match="characters long"):
        format_program(long)


@PROPS
@given(programs(identifiers, version_names, st.text(min_size=1, max_size=4).filter(
    lambda m: not any(c in m for c in '"\n\r'))))
def test_the_printer_writes_only_what_parses_back_to_the_same_tree(program: Program) -> None:
    try:
        text = format_program(program)
    except LanguageError:
        event("refused")
        return
    event("printed")
    assert parse_expression(text) == program


@PROPS
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_language_errors(text: str) -> None:
    try:
        program = parse_expression(text)
    except LanguageError:
        return
    assert parse_expression(format_program(program)) == program


TOKENS = ["if", "else", "IF", "{", "}", "(", ")", ";", "=", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*",
          "/", "and", "or", "not", "nil", "true", "metric", '"v1"', '"a b"', "v1", "x", "upstream_rq_total",
          "0", "2.5", "1e999", "#c\n", "\n", '"', "@"]


@PROPS
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_token_soup_raises_only_language_errors_and_what_parses_round_trips(tokens: list[str]) -> None:
    try:
        program = parse_expression(" ".join(tokens))
    except LanguageError as exc:
        assert exc.line >= 1 and exc.column >= 1
        return
    assert parse_expression(format_program(program)) == program


EVAL_METRICS = ["upstream_rq_total", "external_upstream_rq_2xx", "request_duration_p99"]
EVAL_VERSIONS = ["v1", "v2", "v3"]
metric_values = st.one_of(
    st.none(), st.just(0.0), st.floats(), st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([1e308, -1e308, 5e-324]),
)
value_maps = st.dictionaries(
    st.sampled_from(EVAL_VERSIONS), st.dictionaries(st.sampled_from(EVAL_METRICS), metric_values), max_size=3)
eval_programs = programs(
    st.sampled_from(["x", "y", "result", "v1", "v2", "upstream_rq_total", "request_duration_p99", "nope"]),
    st.sampled_from(["v1", "v2", "v3", "v4"]), st.sampled_from([*EVAL_METRICS, "bogus"]))
Values = dict[str, dict[str, float | None]]


@PROPS
@given(eval_programs, value_maps, st.sampled_from([None, *EVAL_VERSIONS]), st.integers(1, 10_000))
def test_evaluation_raises_only_lamia_errors_and_returns_a_clean_result(
    program: Program, values: dict[str, dict[str, float | None]], version: str | None, max_steps: int
) -> None:
    try:
        result = evaluate(program, values, version=version, versions=EVAL_VERSIONS, metrics=EVAL_METRICS,
                          max_steps=max_steps)
    except LamiaError:
        return
    assert result is None or result in EVAL_VERSIONS or (isinstance(result, float) and math.isfinite(result))


ERROR_SPLIT = re.compile(r" \[\d+ more errors?: line \d+, column \d+: |; line \d+, column \d+: ")


@PROPS
@given(eval_programs, value_maps)
def test_printed_program_evaluates_the_same(program: Program, values: Values) -> None:
    def outcome(p: Program) -> object:
        try:
            return evaluate(p, values, version="v1", versions=EVAL_VERSIONS, metrics=EVAL_METRICS)
        except LanguageError as exc:
            # Positions differ (a hand-built tree has none), so compare the set of messages.
            return "many errors" if "... and" in exc.reason else frozenset(
                m.rstrip("]") for m in ERROR_SPLIT.split(exc.reason))

    try:
        text = format_program(program)
    except LanguageError:
        return
    printed, original = outcome(parse_expression(text)), outcome(program)
    if "many errors" not in (printed, original):
        assert printed == original


finite = st.floats(allow_nan=False, allow_infinity=False)


@PROPS
@given(finite, finite, st.sampled_from(["+", "-", "*", "/"]))
def test_arithmetic_is_float_arithmetic_with_nil_for_no_result(a: float, b: float, op: str) -> None:
    values: Values = {"v1": {"upstream_rq_total": a, "external_upstream_rq_2xx": b}}
    got = run(f"upstream_rq_total {op} external_upstream_rq_2xx", values, version="v1")
    if op == "/" and b == 0:
        assert got is None
        return
    exact = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}[op]
    assert got == (exact if math.isfinite(exact) else None)
    missing: Mapping[str, float | None]
    for missing in ({"upstream_rq_total": a}, {"external_upstream_rq_2xx": b}):
        assert run(f"upstream_rq_total {op} external_upstream_rq_2xx", {"v1": missing}, version="v1") is None


@PROPS
@given(st.none() | finite, st.none() | finite, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]))
def test_comparisons_decide_only_with_data(a: float | None, b: float | None, op: str) -> None:
    values = {"v1": {"upstream_rq_total": a, "external_upstream_rq_2xx": b}}
    got = run(f"if upstream_rq_total {op} external_upstream_rq_2xx {{ r = v1; }} else {{ r = v2; }} r",
              values, version="v1")
    if a is None or b is None:
        assert got is None
    else:
        holds = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[op]
        assert got == ("v1" if holds else "v2")


def typed_programs() -> st.SearchStrategy[Program]:
    """Programs that pass static analysis, so evaluation must never fail, whatever the values."""
    numbers: st.SearchStrategy[Expr] = st.recursive(
        st.one_of(st.builds(Number, literals), st.just(Nil()), st.builds(Name, st.sampled_from(EVAL_METRICS)),
                  st.builds(MetricRef, st.sampled_from(EVAL_VERSIONS), st.sampled_from(EVAL_METRICS))),
        lambda inner: st.one_of(st.builds(Unary, st.just("-"), inner),
                                st.builds(Binary, st.sampled_from(["+", "-", "*", "/"]), inner, inner)),
        max_leaves=6,
    )
    version_values = st.builds(VersionLit, st.sampled_from(EVAL_VERSIONS)) | st.builds(
        Name, st.sampled_from(["v2", "v3"]))
    conditions: st.SearchStrategy[Expr] = st.recursive(
        st.one_of(st.builds(Bool, st.booleans()), st.just(Nil()),
                  st.builds(Binary, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), numbers, numbers),
                  st.builds(Binary, st.sampled_from(["==", "!="]), version_values, version_values)),
        lambda inner: st.one_of(st.builds(Unary, st.just("not"), inner),
                                st.builds(Binary, st.sampled_from(["and", "or"]), inner, inner)),
        max_leaves=4,
    )
    assign_r = st.builds(Assign, st.just("r"), numbers | version_values)
    choices = st.builds(
        If, st.lists(st.builds(Branch, conditions, st.lists(assign_r, max_size=2).map(tuple)), min_size=1,
                     max_size=3).map(tuple),
        st.none() | st.lists(assign_r, max_size=2).map(tuple))
    return st.builds(
        lambda first, rest, result: Program((first, *rest), result),
        assign_r, st.lists(choices, max_size=3), st.just(Name("r")) | numbers)


@PROPS
@given(typed_programs(), value_maps)
def test_well_typed_programs_always_evaluate(program: Program, values: Values) -> None:
    analyse(program, metrics=EVAL_METRICS, versions=EVAL_VERSIONS)
    result = evaluate(program, values, version="v1", versions=EVAL_VERSIONS, metrics=EVAL_METRICS)
    assert result is None or result in EVAL_VERSIONS or (isinstance(result, float) and math.isfinite(result))
    assert evaluate(parse_expression(format_program(program)), values, version="v1", versions=EVAL_VERSIONS,
                    metrics=EVAL_METRICS) == result
