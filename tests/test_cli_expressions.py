"""`lamia check expression` and `lamia eval expression` through the real typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from typer.testing import CliRunner

from flows.cli import app
from tests.plugins.hostile import assert_refused_cleanly, hostile_texts, invoke, stdin_bytes

RATIO = "external_upstream_rq_2xx / upstream_rq_total"
WEIGHTED = "(external_upstream_rq_2xx + upstream_rq_3xx) / (upstream_rq_total - external_upstream_rq_4xx)"
CUSTOM = (
    'if ( ( metric "version1" "external_upstream_rq_2xx" / metric "version1" "upstream_rq_total" ) > '
    '( metric "version2" "external_upstream_rq_2xx" / metric "version2" "upstream_rq_total" ) ) '
    '{ result = version1; } else if ( ( metric "version1" "external_upstream_rq_2xx" / '
    'metric "version1" "upstream_rq_total" ) < ( metric "version2" "external_upstream_rq_2xx" / '
    'metric "version2" "upstream_rq_total" ) ) { result = version2; } else { result = nil; } result'
)

runner = CliRunner()


def lamia(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def metrics_file(tmp_path: Path, data: object, name: str = "metrics.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def two_versions(ok1: int | None, ok2: int | None, total: int = 100) -> dict[str, dict[str, int | None]]:
    return {
        "version1": {"external_upstream_rq_2xx": ok1, "upstream_rq_total": total},
        "version2": {"external_upstream_rq_2xx": ok2, "upstream_rq_total": total},
    }


# --- check ---------------------------------------------------------------------------------------


def test_check_prints_the_pairs_a_ratio_needs() -> None:
    code, out, err = lamia("check", "expression", RATIO)
    assert (code, err) == (0, "")
    assert out == "*\texternal_upstream_rq_2xx\n*\tupstream_rq_total\n"


def test_check_custom_program_against_versions() -> None:
    code, out, _ = lamia("check", "expression", CUSTOM, "--versions", "version1, version2")
    assert code == 0
    assert out.splitlines() == [
        "version1\texternal_upstream_rq_2xx", "version1\tupstream_rq_total",
        "version2\texternal_upstream_rq_2xx", "version2\tupstream_rq_total",
    ]


def test_check_json_and_program_from_stdin() -> None:
    code, out, _ = lamia("check", "expression", "-", "--json",
                         stdin='x = metric "v2" "upstream_rq_3xx";\nupstream_rq_total - x\n')
    assert code == 0
    assert json.loads(out) == {
        "pairs": [{"version": None, "metric": "upstream_rq_total"},
                  {"version": "v2", "metric": "upstream_rq_3xx"}],
        "metric_names": ["upstream_rq_3xx", "upstream_rq_total"],
        "versions": ["v2"],
        "uses_scored_version": True,
    }


def test_check_reports_unknown_version_with_position() -> None:
    code, out, err = lamia("check", "expression", CUSTOM, "--versions", "version1,version3")
    assert (code, out) == (2, "")
    first, src, caret = err.splitlines()
    assert first.startswith("lamia: error: expression error at line 1, column 106: "
                            "unknown version 'version2' (known versions: version1, version3)")
    # A long line is shown cut around the column, the caret still under the offending name.
    assert src.startswith("  ...") and src.endswith("...") and len(src) < len(CUSTOM)
    assert src[caret.index("^"):].startswith('"version2"')


def test_check_reports_syntax_error_with_expected_tokens() -> None:
    code, _, err = lamia("check", "expression", "upstream_rq_total /")
    assert code == 2
    assert "line 1, column 20: unexpected end of input; expected one of: '(', '-'" in err
    assert "a number" in err and "__ANON" not in err


def test_check_rejects_unknown_metric_and_bad_version_list() -> None:
    code, _, err = lamia("check", "expression", "upstream_rq_totl / 2")
    assert code == 2 and "unknown metric 'upstream_rq_totl' (did you mean 'upstream_rq_total'" in err
    code, _, err = lamia("check", "expression", "1", "--versions", "v1,-bad-")
    assert code == 2 and "version '-bad-' is not a valid Kubernetes label value" in err


# --- eval ----------------------------------------------------------------------------------------


def test_eval_ratio_of_the_scored_version(tmp_path: Path) -> None:
    path = metrics_file(tmp_path, two_versions(95, 80))
    assert lamia("eval", "expression", RATIO, "--metrics", path, "--version", "version1") == (0, "0.95\n", "")
    assert lamia("eval", "expression", RATIO, "--metrics", path, "--version", "version2")[1] == "0.8\n"


def test_eval_weighted_expression_prints_integers_without_fraction(tmp_path: Path) -> None:
    path = metrics_file(tmp_path, {"v1": {"external_upstream_rq_2xx": 80, "upstream_rq_3xx": 10,
                                          "upstream_rq_total": 100, "external_upstream_rq_4xx": 10}})
    assert lamia("eval", "expression", WEIGHTED, "--metrics", path, "--version", "v1")[:2] == (0, "1\n")
    out = lamia("eval", "expression", WEIGHTED, "--metrics", path, "--version", "v1", "--json")[1]
    assert json.loads(out) == {"result": 1.0, "type": "number"}


@pytest.mark.parametrize(
    ("values", "printed"),
    [
        (two_versions(90, 95), "version2"),
        (two_versions(99, 95), "version1"),
        (two_versions(95, 95), "nil"),  # a tie
        (two_versions(None, 95), "nil"),  # no data for version1
        (two_versions(90, 95, total=0), "nil"),  # no requests at all: x/0 is nil
    ],
)
def test_eval_custom_program_picks_the_better_version(tmp_path: Path, values: object, printed: str) -> None:
    code, out, err = lamia("eval", "expression", CUSTOM, "--metrics", metrics_file(tmp_path, values))
    assert (code, out, err) == (0, printed + "\n", "")


def test_eval_json_output_for_versions_and_nil(tmp_path: Path) -> None:
    path = metrics_file(tmp_path, two_versions(90, 95))
    out = lamia("eval", "expression", CUSTOM, "--metrics", path, "--json")[1]
    assert json.loads(out) == {"result": "version2", "type": "version"}
    out = lamia("eval", "expression", "nil", "--metrics", path, "--json")[1]
    assert json.loads(out) == {"result": None, "type": "nil"}


def test_eval_bad_json_names_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"v1": {"upstream_rq_total": 1,\n  }}')
    code, out, err = lamia("eval", "expression", "1", "--metrics", str(path))
    assert (code, out) == (2, "")
    assert err.startswith(f"lamia: error: {path}: invalid JSON at line 2, column 3: ")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "expected an object mapping version"),
        ({"v1": 3}, "version 'v1': expected an object"),
        ({"v1": {"upstream_rq_total": "12"}},
         "version 'v1', metric 'upstream_rq_total': expected a number or null, got a string"),
        ({"v1": {"upstream_rq_total": True}}, "got a boolean"),
    ],
)
def test_eval_rejects_badly_shaped_values(tmp_path: Path, data: object, message: str) -> None:
    path = metrics_file(tmp_path, data)
    code, _, err = lamia("eval", "expression", "1", "--metrics", path)
    assert code == 2
    assert f"{path}: " in err and message in err


def test_eval_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    code, _, err = lamia("eval", "expression", "1", "--metrics", str(missing))
    assert code == 2 and f"cannot read metric values from {missing}" in err


def test_eval_bare_metric_needs_a_version(tmp_path: Path) -> None:
    code, _, err = lamia("eval", "expression", RATIO, "--metrics", metrics_file(tmp_path, two_versions(1, 1)))
    assert code == 2
    assert "line 1, column 1: 'external_upstream_rq_2xx' is a metric of the version being scored" in err


def test_eval_runtime_type_error_is_reported_with_position(tmp_path: Path) -> None:
    program = "if upstream_rq_total > 1 { x = version2; } else { x = 1; } x * 2"
    path = metrics_file(tmp_path, two_versions(1, 1))
    # upstream_rq_total is 100 > 1: x is a version, which cannot be multiplied.
    code, _, err = lamia("eval", "expression", program, "--metrics", path, "--version", "version1")
    assert code == 2 and "column 60: the left operand of '*' must be a number, not a version" in err
    path = metrics_file(tmp_path, {"version1": {"upstream_rq_total": 0}, "version2": {}}, "low.json")
    assert lamia("eval", "expression", program, "--metrics", path, "--version", "version1")[:2] == (0, "2\n")


# --- hostile input -------------------------------------------------------------------------------

HOSTILE = hostile_texts(
    [CUSTOM, RATIO, 'if metric "v10" "upstream_rq_total" > 0 { best = "v10"; } else { best = "v9"; } best'],
    openers=["(", "not ", "-"],
)


@pytest.fixture(scope="module")
def v9_v10_metrics(tmp_path_factory: pytest.TempPathFactory) -> str:
    row = {"external_upstream_rq_2xx": 95, "upstream_rq_total": 100}
    return metrics_file(tmp_path_factory.mktemp("metrics"), {"v9": row, "v10": row})


@settings(max_examples=150)
@given(text=HOSTILE)
def test_hostile_expressions_exit_2_with_one_message(text: str, v9_v10_metrics: str) -> None:
    # "--" ends the options: an expression may start with "-" (unary minus).
    assert_refused_cleanly(invoke(app, ["check", "expression", "--", text]), text)
    assert_refused_cleanly(invoke(app, ["check", "expression", "-", "--versions", "v9,v10"],
                                         input=stdin_bytes(text)), text)
    assert_refused_cleanly(invoke(app, ["eval", "expression", "--metrics", v9_v10_metrics,
                                               "--version", "v10", "--", text]), text)
    assert_refused_cleanly(invoke(app, ["eval", "expression", "-", "--metrics", v9_v10_metrics],
                                         input=stdin_bytes(text)), text)


def test_a_lone_surrogate_in_an_expression_exits_2() -> None:
    code, out, err = lamia("check", "expression", 'metric "v9" "upstream_rq_\udcff"')
    assert (code, out) == (2, "")
    assert "line 1, column 26: invalid text: a lone surrogate (U+DCFF)" in err
