"""The Prometheus launcher: starting, scraping static and added targets, failing clearly, cleaning up."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lamia_sandbox.prometheus_server import PrometheusServer, PrometheusServerError
from lamia_sandbox.simulator import TrafficSimulator, VersionBehaviour


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.integration
def test_scrapes_static_targets_and_cleans_up() -> None:
    sim = TrafficSimulator("it-static", "shop", {"v1": VersionBehaviour()}, gateway_source=lambda: None)
    url = sim.serve().metrics_url
    try:
        sim.step(7)
        with PrometheusServer([url], scrape_interval="1s") as prom:
            assert prom.url.startswith("http://127.0.0.1:")
            port, workdir = prom.port, prom._dir
            assert workdir is not None and (workdir / "prometheus.yml").exists()
            res = prom.wait_for_series('istio_requests_total{destination_workload_namespace="it-static"}')
            assert res[0]["metric"]["job"] == "istio-simulator"
            assert res[0]["value"][1] == "7"
            up = prom.query('up{job="istio-simulator"}')
            assert [r["value"][1] for r in up] == ["1"]
        assert not port_open(port)
        assert not workdir.exists()
        with pytest.raises(PrometheusServerError, match="not running"):
            _ = prom.url
    finally:
        sim.stop()


@pytest.mark.integration
def test_wait_for_gives_up_with_the_last_result(prometheus_server: PrometheusServer) -> None:
    with pytest.raises(TimeoutError, match="no_such_metric"):
        prometheus_server.wait_for_series("no_such_metric", timeout=0.3)


def test_missing_binary_fails_clearly(tmp_path: Path) -> None:
    missing = str(tmp_path / "prometheus")
    with pytest.raises(PrometheusServerError, match=f"not found at {missing}"):
        PrometheusServer([], binary=missing).start()


def test_bad_configuration_fails_with_prometheus_own_words_and_cleans_up(tmp_path: Path) -> None:
    server = PrometheusServer(["127.0.0.1:9"], scrape_interval="1 second")
    with pytest.raises(PrometheusServerError, match="exited with code") as err:
        server.start()
    assert "1 second" in str(err.value)
    assert server._dir is None and server.port == 0


def test_targets_need_a_host() -> None:
    with pytest.raises(ValueError, match="no host:port"):
        PrometheusServer(["http:///metrics"]).add_target("http:///metrics")
