"""``lamia check condition``: YAML on stdout and exit 0, or the caret message on stderr and exit 2."""

from __future__ import annotations

import yaml
from hypothesis import given, settings
from typer.testing import CliRunner

from flows.cli import app
from lamia_core.conditions import compile_condition
from tests.plugins.hostile import assert_refused_cleanly, hostile_texts, invoke, stdin_bytes

runner = CliRunner()


def test_prints_the_compiled_match_list_as_yaml() -> None:
    text = 'header "User-Agent" regex "^.*(Chrome).*$" or cookie "shop-experiment" exact "subset1"'
    result = runner.invoke(app, ["check", "condition", text])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == compile_condition(text)
    assert "user-agent:" in result.stdout and "regex: ^.*(Chrome).*$" in result.stdout
    assert result.stderr == ""


def test_yaml_has_no_anchors_when_entries_repeat_a_test() -> None:
    text = 'header "a" exact "1" and not header "x" exact ""'
    result = runner.invoke(app, ["check", "condition", text])
    assert result.exit_code == 0, result.output
    assert "&" not in result.stdout and "*" not in result.stdout
    assert yaml.safe_load(result.stdout) == [
        {"headers": {"a": {"exact": "1"}}, "withoutHeaders": {"x": {}}},
        {"headers": {"a": {"exact": "1"}}, "withoutHeaders": {"x": {"exact": ""}}},
    ]


def test_reads_the_condition_from_stdin_with_a_dash() -> None:
    text = 'uri prefix "/service1"\n  and not header "X-Debug" present  # canary only\n'
    result = runner.invoke(app, ["check", "condition", "-"], input=text)
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == [{"uri": {"prefix": "/service1"},
                                              "withoutHeaders": {"x-debug": {}}}]


def test_bad_condition_exits_2_with_the_caret_message_on_stderr() -> None:
    text = 'header "User-Agent" regex "^(?:(?!Chrome|Nexus 6P).)*$"'
    result = runner.invoke(app, ["check", "condition", text])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("lamia: error: condition error at line 1, column 27: RE2")
    assert lines[1] == "  " + text
    assert lines[2] == "  " + " " * 26 + "^"


def test_syntax_error_names_what_was_expected() -> None:
    result = runner.invoke(app, ["check", "condition", 'uri exact "/" and'])
    assert result.exit_code == 2
    assert "unexpected end of input; expected one of: '(', 'authority', 'cookie', 'header'" in result.stderr


def test_what_istio_cannot_express_exits_2() -> None:
    result = runner.invoke(app, ["check", "condition", 'not uri prefix "/a"'])
    assert result.exit_code == 2
    assert "only header and cookie tests can be negated" in result.stderr


HOSTILE = hostile_texts(
    ['header "User-Agent" regex "^.*(Chrome).*$" or header "User-Agent" regex "^.*(Nexus 6P).*$"',
     'uri prefix "/reviews" and not cookie "shop-experiment" exact "subset1"'],
    openers=["(", "not "],
)


@settings(max_examples=150)
@given(HOSTILE)
def test_hostile_conditions_exit_2_with_one_message(text: str) -> None:
    assert_refused_cleanly(invoke(app, ["check", "condition", "--", text]), text)
    assert_refused_cleanly(invoke(app, ["check", "condition", "-"], input=stdin_bytes(text)), text)


def test_a_lone_surrogate_from_the_command_line_exits_2() -> None:
    # An undecodable byte (0xff) in argv arrives as the lone surrogate U+DCFF.
    result = runner.invoke(app, ["check", "condition", 'header "x" regex "\udcff"'])
    assert result.exit_code == 2 and result.exception is not None and isinstance(result.exception, SystemExit)
    assert "lone surrogate (U+DCFF)" in result.stderr and "line 1, column 19" in result.stderr


def test_stdin_that_is_not_utf8_exits_2_naming_the_byte() -> None:
    result = runner.invoke(app, ["check", "condition", "-"], input=b'uri exact "/\xff"')
    assert result.exit_code == 2
    assert result.stderr == "lamia: error: stdin is not UTF-8 text: byte 12 (0xff) cannot be decoded\n"
