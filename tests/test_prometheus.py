"""The Prometheus adapter against a real Prometheus scraping the traffic simulator,
and its error mapping against small local HTTP servers that fail on purpose."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import re2

from lamia_core.errors import (
    BadAnswer,
    Forbidden,
    InvalidInput,
    LamiaError,
    NotFound,
    QueryError,
    ServerError,
    TemporaryError,
    Timeout,
    Unreachable,
)
from lamia_core.metrics import CATALOG, TOTAL, metric_names
from lamia_core.prometheus import PrometheusAdapter, PrometheusConfig
from lamia_sandbox.prometheus_server import PrometheusServer, free_port
from tests.plugins.prometheus import MetricsScenario


def adapter_for(url: str, **kw: object) -> PrometheusAdapter:
    return PrometheusAdapter(PrometheusConfig(url=url, **kw))  # type: ignore[arg-type]


def exact_count(scenario: MetricsScenario, version: str, name: str) -> int:
    code = CATALOG[name].code
    codes = scenario.counts["by_version_code"].get(version, {})
    return sum(n for c, n in codes.items() if code is None or re2.fullmatch(code, str(c)))


def prometheus_quantile(q: float, cumulative: list[tuple[float, int]]) -> float:
    """histogram_quantile's documented interpolation, over exact bucket counts."""
    total = cumulative[-1][1]
    rank = q * total
    b = next(i for i, (_, c) in enumerate(cumulative) if c >= rank)
    if b == len(cumulative) - 1:
        return cumulative[-2][0]
    start, prev = (0.0, 0) if b == 0 else cumulative[b - 1]
    end, count = cumulative[b]
    return start + (end - start) * (rank - prev) / (count - prev)


# --- against the real Prometheus ----------------------------------------------------------------

@pytest.mark.integration
def test_raw_counters_are_exactly_what_the_simulator_counted(metrics_scenario: MetricsScenario) -> None:
    s = metrics_scenario
    adapter = adapter_for(s.prometheus.url)
    reading = adapter.read_counters(s.namespace, s.app, ["v1", "v2", "v3"])
    exact = s.counts["by_version_code"]
    assert set(reading.series) == {"v1", "v2", "v3"}
    for version, groups in reading.series.items():
        assert len(groups) == 1, "the simulator is one scrape target"
        (values,) = groups.values()
        requests, errors, *buckets = values
        assert requests == sum(exact.get(version, {}).values()), version
        assert errors == sum(n for code, n in exact.get(version, {}).items() if 500 <= int(code) < 600)
        assert len(buckets) == len(reading.buckets) and buckets == sorted(buckets) and buckets[-1] <= requests
    assert reading.series["v3"] and all(x == 0 for x in next(iter(reading.series["v3"].values())))
    assert reading.buckets == tuple(sorted(reading.buckets)) and 25.0 in reading.buckets
    # v2 (median 60 ms) is slower than v1 (median 20 ms): fewer of its requests are within 50 ms.
    at_50 = reading.buckets.index(50.0)
    (v1,), (v2,) = reading.series["v1"].values(), reading.series["v2"].values()
    assert v2[2 + at_50] / v2[0] < v1[2 + at_50] / v1[0]
    assert reading.scraped_at is not None and abs(reading.scraped_at - time.time()) < 30
    assert adapter.latest_scrape(s.namespace, s.app) == pytest.approx(reading.scraped_at, abs=5)


@pytest.mark.integration
def test_the_scrape_interval_is_read_from_the_samples(metrics_scenario: MetricsScenario) -> None:
    s = metrics_scenario
    adapter = adapter_for(s.prometheus.url)
    assert adapter.scrape_interval(s.namespace, s.app) == pytest.approx(1.0, abs=0.3)
    assert adapter.scrape_interval(s.namespace, "no-such-app") is None
    before = adapter.read_counters(s.namespace, s.app, ["v1"], at=0.0)
    assert before.series == {} and before.scraped_at is None, "nothing was scraped in 1970"


@pytest.mark.integration
def test_prometheus_holds_exactly_what_the_simulator_counted(metrics_scenario: MetricsScenario) -> None:
    got = metrics_scenario.raw_counts()
    assert got == metrics_scenario.exact_counts()
    assert got[("v2", "503")] > 0 and got[("v1", "200")] > got[("v2", "200")]
    assert got[("v3", "200")] == 0


@pytest.mark.integration
def test_every_count_metric_matches_the_simulator(metrics_scenario: MetricsScenario) -> None:
    s = metrics_scenario
    counts = sorted(n for n, d in CATALOG.items() if d.kind == "count")
    n = s.samples()
    adapter = adapter_for(s.prometheus.url)
    result = adapter.query_metrics(s.namespace, s.app, counts, window=s.window)
    assert sorted(result) == ["v1", "v2", "v3"]
    # The series start at 0 and stopped growing before the last scrape, so increase() is the
    # exact count stretched by its extrapolation to the query's instant: at most 1.1 scrape
    # intervals over n - 1 intervals of samples.
    stretch = 1 + 1.1 / (n - 1)
    for version in ("v1", "v2"):
        for name in counts:
            exact = exact_count(s, version, name)
            value = result[version][name]
            assert value is not None, (version, name)
            assert exact - 1e-9 <= value <= exact * stretch + 1e-9, (version, name, value, exact, n)
    assert result["v1"]["external_upstream_rq_5xx"] == 0.0
    assert result["v2"]["external_upstream_rq_503"] > 0


@pytest.mark.integration
def test_metrics_of_the_same_requests_agree_exactly(metrics_scenario: MetricsScenario) -> None:
    s = metrics_scenario
    adapter = adapter_for(s.prometheus.url)
    r = adapter.query_metrics(s.namespace, s.app, sorted(metric_names()), window=s.window)
    v1, v2 = r["v1"], r["v2"]
    # One evaluation instant for every query: v1 only answers 200, so all of these are one series.
    assert v1["external_upstream_rq_200"] == v1["external_upstream_rq_2xx"] == v1[TOTAL]
    for code in ("200", "2xx", "3xx", "4xx", "500", "503", "5xx"):
        assert v2[f"external_upstream_rq_{code}"] == v2[f"internal_upstream_rq_{code}"]
        assert v2[f"external_upstream_rq_{code}"] == v2[f"upstream_rq_{code}"]
    both = v2["external_upstream_rq_2xx"] + v2["external_upstream_rq_5xx"]
    assert both == pytest.approx(v2[TOTAL], rel=1e-12)
    ratio = v2["external_upstream_rq_5xx"] / v2[TOTAL]
    c = s.counts["by_version_code"]["v2"]
    assert ratio == pytest.approx(c[503] / (c[200] + c[503]), rel=1e-9)


@pytest.mark.integration
def test_no_data_is_none_and_no_errors_is_zero(metrics_scenario: MetricsScenario) -> None:
    s = metrics_scenario
    adapter = adapter_for(s.prometheus.url)
    names = ["external_upstream_rq_2xx", "external_upstream_rq_5xx", TOTAL, "request_duration_p50"]
    r = adapter.query_metrics(s.namespace, s.app, names, window=s.window, versions=["v1", "v3", "v4"])
    assert sorted(r) == ["v1", "v3", "v4"]
    # v3 has series, all at zero; v4 has none: neither had requests.
    assert r["v3"] == dict.fromkeys(names)
    assert r["v4"] == dict.fromkeys(names)
    assert r["v1"]["external_upstream_rq_5xx"] == 0.0
    assert r["v1"]["request_duration_p50"] is not None
    other = adapter.query_metrics(s.namespace, "no-such-app", names, window=s.window, versions=["v1"])
    assert other == {"v1": dict.fromkeys(names)}
    assert adapter.query_metrics(s.namespace, "no-such-app", names, window=s.window) == {}


@pytest.mark.integration
def test_latency_quantiles_follow_the_histogram(metrics_scenario: MetricsScenario) -> None:
    s = metrics_scenario
    adapter = adapter_for(s.prometheus.url)
    names = ["request_duration_p50", "request_duration_p90", "request_duration_p99"]
    r = adapter.query_metrics(s.namespace, s.app, names, window=s.window)
    for version in ("v1", "v2"):
        hist = s.simulator.histogram(version)
        for name, q in zip(names, (0.5, 0.9, 0.99), strict=True):
            value = r[version][name]
            assert value is not None
            # Within the bucket holding the q-th request...
            rank = q * hist[-1][1]
            upper = next(le for le, c in hist if c >= rank)
            lower = max([0.0, *(le for le, c in hist if c < rank)])
            assert lower <= value <= upper, (version, name, value)
            # ...exactly where Prometheus' interpolation puts it: every bucket is extrapolated alike.
            assert value == pytest.approx(prometheus_quantile(q, hist), rel=1e-9)
    assert r["v2"]["request_duration_p50"] > 2 * r["v1"]["request_duration_p50"]
    assert r["v3"] == dict.fromkeys(names)


@pytest.mark.integration
def test_one_gate_of_the_custom_program_costs_two_queries(metrics_scenario: MetricsScenario) -> None:
    s = metrics_scenario
    adapter = adapter_for(s.prometheus.url)
    adapter.query_metrics(s.namespace, s.app, ["external_upstream_rq_2xx", TOTAL], window=s.window,
                          versions=["v1", "v2"])
    assert adapter.queries == 2
    adapter.queries = 0
    # Aliases share a query; upstream_rq_total is always fetched.
    adapter.query_metrics(s.namespace, s.app, ["internal_upstream_rq_5xx", "external_upstream_rq_5xx"],
                          window=s.window)
    assert adapter.queries == 2
    adapter.queries = 0
    adapter.query_metrics(s.namespace, s.app, sorted(metric_names()), window=s.window)
    assert adapter.queries == 7 + 1 + 3  # code classes, total, quantiles
    adapter.queries = 0
    # Without any traffic, nothing but the total is asked.
    adapter.query_metrics(s.namespace, "no-such-app", sorted(metric_names()), window=s.window)
    assert adapter.queries == 1


@pytest.mark.integration
def test_raw_queries(metrics_scenario: MetricsScenario) -> None:
    s = metrics_scenario
    adapter = adapter_for(s.prometheus.url)
    five = ('sum by (destination_version) (increase(istio_requests_total{destination_app="{app}",'
            'destination_workload_namespace="{namespace}",response_code=~"5.*"}[{window}]))')
    ratio = (f"({five}) / on (destination_version) "
             '(sum by (destination_version) (increase(istio_requests_total{destination_app="{app}",'
             'destination_workload_namespace="{namespace}"}[{window}])))')
    raw = {"external_upstream_rq_5xx": five, "error_ratio": ratio}
    n = s.samples()
    r = adapter.query_metrics(s.namespace, s.app, ["external_upstream_rq_5xx", "error_ratio"],
                              window=s.window, raw=raw)
    exact = exact_count(s, "v2", "external_upstream_rq_5xx")
    assert exact <= r["v2"]["external_upstream_rq_5xx"] <= exact * (1 + 1.1 / (n - 1))
    assert r["v1"]["external_upstream_rq_5xx"] == 0.0  # still a count metric: zero is filled in
    c = s.counts["by_version_code"]["v2"]
    assert r["v2"]["error_ratio"] == pytest.approx(c[503] / (c[200] + c[503]), rel=1e-9)
    assert r["v1"]["error_ratio"] is None  # no 5xx series for v1: a raw metric has no zero to fill in
    assert r["v3"]["error_ratio"] is None
    with pytest.raises(QueryError, match="destination_version"):
        adapter.query_metrics(s.namespace, s.app, ["x"], window=s.window,
                              raw={"x": "sum(increase(istio_requests_total[{window}]))"})


@pytest.mark.integration
def test_malformed_query_is_a_query_error(prometheus_server: PrometheusServer) -> None:
    adapter = adapter_for(prometheus_server.url)
    with pytest.raises(QueryError) as err:
        adapter.query("sum(rate(istio_requests_total[1m])")
    assert prometheus_server.url in str(err.value) and "sum(rate(istio_requests_total[1m])" in str(err.value)
    assert "bad_data" in str(err.value)
    assert not isinstance(err.value, TemporaryError)
    assert adapter.healthy()
    assert adapter.queries == 1  # healthy() is not counted
    with pytest.raises(QueryError, match="instant vector"):
        adapter.query('"a string"')


def test_refused_connection_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    adapter = adapter_for(url, timeout=2)
    with pytest.raises(Unreachable) as err:
        adapter.query("up")
    assert url in str(err.value) and "'up'" in str(err.value)
    assert not adapter.healthy()


def test_bad_window_and_unknown_metric_fail_before_any_query() -> None:
    adapter = adapter_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(InvalidInput, match="window"):
        adapter.query_metrics("ns", "app", [TOTAL], window="1 minute")
    with pytest.raises(InvalidInput, match="unknown metric 'nope'"):
        adapter.query_metrics("ns", "app", ["nope"])
    with pytest.raises(InvalidInput, match="namespace"):
        adapter.query_metrics("Not_A_Namespace", "app", [TOTAL])
    assert adapter.queries == 0


def test_config_rejects_a_url_without_scheme() -> None:
    with pytest.raises(InvalidInput, match="http"):
        PrometheusConfig(url="prometheus:9090")
    assert PrometheusConfig(url="http://p:9090/").url == "http://p:9090"


# --- failing servers ----------------------------------------------------------------------------


@dataclass
class FailingServer:
    """Answers every request with ``status`` and ``body`` after ``delay`` seconds, and records it."""

    status: int = 503
    body: bytes = b""
    delay: float = 0.0
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def failing_server() -> Iterator[FailingServer]:
    spec = FailingServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            spec.requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            if spec.delay:
                time.sleep(spec.delay)
            try:
                self.send_response(spec.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(spec.body)))
                self.end_headers()
                self.wfile.write(spec.body)
            except OSError:  # the client gave up waiting
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    spec.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield spec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _error(kind: str, msg: str) -> bytes:
    return json.dumps({"status": "error", "errorType": kind, "error": msg}).encode()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (503, b"upstream overloaded", ServerError),
        (500, _error("internal", "storage failure"), ServerError),
        (502, b"<html>bad gateway</html>", ServerError),
        (429, b"slow down", ServerError),
        (503, _error("timeout", "query timed out in expression evaluation"), Timeout),
        (422, _error("execution", "vector cannot contain metrics with the same labelset"), QueryError),
        (400, _error("bad_data", "parse error"), QueryError),
        (401, b"unauthorized", Forbidden),
        (403, b"forbidden", Forbidden),
        (404, b"404 page not found", NotFound),
        (200, b"<html>login page</html>", BadAnswer),
        (200, json.dumps({"status": "success", "data": {}}).encode(), BadAnswer),
        (200, json.dumps({"status": "success", "data": {"result": {"oops": 1}}}).encode(), BadAnswer),
        (200, json.dumps({"status": "success", "data": {"result": [1, 2, 3]}}).encode(), BadAnswer),
    ],
)
def test_http_failures_map_to_lamia_errors_without_retrying(
    failing_server: FailingServer, status: int, body: bytes, error: type[LamiaError]
) -> None:
    failing_server.status, failing_server.body = status, body
    adapter = adapter_for(failing_server.url, timeout=5)
    with pytest.raises(error) as err:
        adapter.query("up == 1")
    assert failing_server.url in str(err.value) and "up == 1" in str(err.value)
    # The data besides the message, and the cause kept.
    assert (err.value.status, err.value.server, err.value.subject) == (
        None if status == 200 else status, adapter.url, "up == 1")
    # prometheus-api-client's own retries are off: one failure, one request.
    assert len(failing_server.requests) == 1
    if error is BadAnswer:
        assert "answered something that is not a query result" in str(err.value)
        assert isinstance(err.value, TemporaryError), "garbage from a proxy is passing, like an outage"


def test_slow_answer_is_a_timeout(failing_server: FailingServer) -> None:
    failing_server.status, failing_server.body, failing_server.delay = 200, b"{}", 3.0
    adapter = adapter_for(failing_server.url, timeout=0.3)
    with pytest.raises(Timeout, match=r"within 0\.3s"):
        adapter.query("up")


def test_headers_and_bearer_token_are_sent(failing_server: FailingServer) -> None:
    failing_server.status = 200
    failing_server.body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"destination_version": "v1"}, "value": [1700000000.5, "NaN"]},
        {"metric": {"destination_version": "v2"}, "value": [1700000000.5, "4"]},
    ]}}).encode()
    adapter = adapter_for(failing_server.url, headers={"X-Scope-OrgID": "team-a"}, bearer_token="s3cret")
    assert "s3cret" not in repr(adapter.config)
    values, at = adapter.vector_by_version("anything")
    assert values == {"v1": None, "v2": 4.0} and at == 1700000000.5
    sent = failing_server.requests[0]
    assert sent["authorization"] == "Bearer s3cret" and sent["x-scope-orgid"] == "team-a"
    assert sent["path"].startswith("/api/v1/query?query=anything")
    # Every query after the first is evaluated at the instant of the first.
    adapter.query_metrics("ns", "app", ["request_duration_p90"], window="5m")
    assert "time=1700000000.500" in failing_server.requests[-1]["path"]
    assert "time=" not in failing_server.requests[-2]["path"]
    assert math.isfinite(at)


def test_tls_to_a_plain_http_server_is_unreachable(failing_server: FailingServer) -> None:
    url = failing_server.url.replace("http://", "https://")
    with pytest.raises(Unreachable, match=f"TLS with Prometheus at {url} failed"):
        adapter_for(url, timeout=5).query("up")
