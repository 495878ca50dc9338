"""``lamia metrics`` against a real Prometheus scraping the traffic simulator."""

from __future__ import annotations

import json
import re

import pytest
import re2
from typer.testing import CliRunner

from flows.cli import app
from lamia_core.metrics import CATALOG, metric_names
from lamia_sandbox.prometheus_server import free_port
from tests.plugins.prometheus import MetricsScenario

runner = CliRunner()


def lamia(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def base(s: MetricsScenario) -> list[str]:
    return ["metrics", "--prometheus", s.prometheus.url, "--namespace", s.namespace, "--app", s.app,
            "--window", s.window]


def exact(s: MetricsScenario, version: str, name: str) -> int:
    code = CATALOG[name].code
    return sum(n for c, n in s.counts["by_version_code"][version].items()
               if code is None or re2.fullmatch(code, str(c)))


@pytest.mark.integration
def test_table_rows_are_versions_and_no_data_is_not_zero(metrics_scenario: MetricsScenario) -> None:
    s = metrics_scenario
    names = ["external_upstream_rq_2xx", "external_upstream_rq_5xx", "request_duration_p50"]
    # Counted before the query: the more samples, the less increase() may extrapolate.
    stretch = 1 + 1.1 / (s.samples() - 1)
    code, out, err = lamia(*base(s), *names)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert re.split(r"\s+", lines[0]) == ["version", *names]
    rows = {re.split(r"\s{2,}", line)[0]: re.split(r"\s{2,}", line)[1:] for line in lines[1:]}
    assert sorted(rows) == ["v1", "v2", "v3"]
    assert rows["v3"] == ["no data"] * 3
    assert rows["v1"][1] == "0"
    for v in ("v1", "v2"):
        assert exact(s, v, names[0]) <= float(rows[v][0]) <= exact(s, v, names[0]) * stretch + 0.01
        assert float(rows[v][2]) > 0
    assert float(rows["v2"][1]) >= exact(s, "v2", names[1]) > 0


@pytest.mark.integration
def test_json_has_null_for_no_data(metrics_scenario: MetricsScenario) -> None:
    s = metrics_scenario
    code, out, err = lamia(*base(s), "--json", "--version", "v1", "--version", "v3", "--version", "v9",
                           "upstream_rq_total", "external_upstream_rq_5xx", "request_duration_p99")
    assert code == 0, err
    data = json.loads(out)
    assert list(data) == ["v1", "v3", "v9"]
    for v in ("v3", "v9"):
        assert data[v] == dict.fromkeys(
            ["upstream_rq_total", "external_upstream_rq_5xx", "request_duration_p99"])
    assert data["v1"]["external_upstream_rq_5xx"] == 0
    assert data["v1"]["upstream_rq_total"] >= exact(s, "v1", "upstream_rq_total")
    assert data["v1"]["request_duration_p99"] > 0


@pytest.mark.integration
def test_raw_query_and_url_from_the_environment(metrics_scenario: MetricsScenario) -> None:
    s = metrics_scenario
    ratio = ('sum by (destination_version) (increase(istio_requests_total{destination_app="{app}",'
             'destination_workload_namespace="{namespace}",response_code=~"5.."}[{window}])) / on '
             '(destination_version) sum by (destination_version) (increase(istio_requests_total'
             '{destination_app="{app}",destination_workload_namespace="{namespace}"}[{window}]))')
    args = [a for a in base(s) if a not in ("--prometheus", s.prometheus.url)]
    code, out, err = lamia(*args, "--json", "--raw", f"error_ratio={ratio}", "error_ratio",
                           env={"LAMIA_PROMETHEUS_URL": s.prometheus.url})
    assert code == 0, err
    c = s.counts["by_version_code"]["v2"]
    assert json.loads(out)["v2"]["error_ratio"] == pytest.approx(c[503] / (c[200] + c[503]), rel=1e-9)


@pytest.mark.integration
def test_an_app_without_traffic(metrics_scenario: MetricsScenario) -> None:
    s = metrics_scenario
    code, out, _ = lamia("metrics", "--prometheus", s.prometheus.url, "-n", s.namespace, "-a", "ghost",
                         "upstream_rq_total")
    assert code == 0
    assert out.startswith("no data: no requests to 'ghost'")


def test_unknown_metric_exits_2_listing_known_names() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    code, out, err = lamia("metrics", "--prometheus", nowhere, "-n", "ns", "-a", "shop",
                           "upstream_rq_total", "upstream_rq_6xx")
    assert code == 2 and out == ""
    assert err.startswith("lamia: error: unknown metric 'upstream_rq_6xx'; known metrics: ")
    assert all(name in err for name in metric_names())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--window", "1 minute", "upstream_rq_total"], "is not a Prometheus duration"),
        (["--raw", "broken", "upstream_rq_total"], "is not NAME=PROMQL"),
    ],
)
def test_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    code, out, err = lamia("metrics", "--prometheus", nowhere, "-n", "ns", "-a", "shop",
                           "--timeout", "2", *args)
    assert code == 2 and out == ""
    assert err.startswith("lamia: error: ") and message in err
    assert err.count("\n") == 1


def test_prometheus_unreachable_is_one_line_and_exit_3() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    code, out, err = lamia("metrics", "--prometheus", nowhere, "-n", "ns", "-a", "shop",
                           "--timeout", "2", "upstream_rq_total")
    message = "Connection refused"
    assert code == 3 and out == "", "3: a service could not be reached; trying again may help"
    assert err.startswith("lamia: error: ") and message in err
    assert err.count("\n") == 1
