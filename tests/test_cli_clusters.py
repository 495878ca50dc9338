"""`lamia cluster add/list/remove`, and `--cluster` on the commands that talk to a cluster.

Two emulators stand for the regions prod-eu and prod-us; the saved clusters are
Prefect blocks on the session's Prefect server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from typer.testing import CliRunner, Result

from flows.cli import app
from flows.clusters import BLOCK_TYPE, load, names
from lamia_core.istio import ISTIO_API
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.seed import seed_application
from tests.plugins.clusters import TOKENS, TwoRegions, write_kubeconfig

pytestmark = pytest.mark.integration

NS, APP = "shop", "reviews"
runner = CliRunner()


def lamia(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), env=env)


def assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("lamia: error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    for f in fragments:
        assert f in result.stderr, result.stderr


def add_both(regions: TwoRegions) -> None:
    for region in ("prod-eu", "prod-us"):
        added = lamia("cluster", "add", region, "--context", region, "--kubeconfig", str(regions.kubeconfig))
        assert added.exit_code == 0, added.stderr
        assert added.stdout == (f"cluster {region} saved ({regions.emulator(region).url}, "
                                f"context {region})\n")
        assert added.stderr == "", "a reachable cluster gets no warning"


def listing(*args: str) -> list[dict[str, Any]]:
    result = lamia("cluster", "list", "-o", "json", *args)
    assert result.exit_code == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_add_and_list_two_clusters_and_an_unreachable_one(
    two_regions: TwoRegions, tmp_path: Path, closed_port: int
) -> None:
    add_both(two_regions)
    gone = write_kubeconfig(tmp_path / "ap" / "config", {"prod-ap": f"http://127.0.0.1:{closed_port}"})
    added = lamia("cluster", "add", "prod-ap", "--context", "prod-ap", "--kubeconfig", str(gone),
                  "--prometheus", "http://prometheus.prod-ap.example.com:9090")
    assert added.exit_code == 0, added.stderr
    assert added.stderr.startswith("lamia: warning: cluster prod-ap is saved but not reachable from here now")
    rows = {r["name"]: r for r in listing()}
    assert list(rows) == ["prod-ap", "prod-eu", "prod-us"]
    for region in ("prod-eu", "prod-us"):
        assert rows[region]["reachable"] is True, rows[region]
        assert rows[region]["server"] == two_regions.emulator(region).url
        assert rows[region]["context"] == region and rows[region]["version"].startswith("v1.")
    assert rows["prod-ap"]["reachable"] is False
    assert f"127.0.0.1:{closed_port}" in rows["prod-ap"]["error"]
    assert rows["prod-ap"]["prometheus"] == "http://prometheus.prod-ap.example.com:9090"
    table = lamia("cluster", "list")
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CONTEXT", "SERVER", "STATUS"]
    assert [line.split()[0] for line in lines[1:]] == ["prod-ap", "prod-eu", "prod-us"]
    assert "unreachable: cannot reach the Kubernetes API server" in lines[1]
    assert "reachable (v1." in lines[2] and "reachable (v1." in lines[3]


def test_list_waits_at_most_its_timeout_for_a_silent_server(
    no_saved_clusters: None, tmp_path: Path, silent_server: str
) -> None:
    path = write_kubeconfig(tmp_path / "config", {"prod-eu": silent_server})
    added = lamia("cluster", "add", "prod-eu", "--context", "prod-eu", "--kubeconfig", str(path))
    assert added.exit_code == 0 and "not reachable" in added.stderr
    (row,) = listing("--timeout", "0.5")
    assert row["reachable"] is False and "did not answer within 0.5s" in row["error"]


def test_the_block_keeps_the_context_secret_and_self_contained(two_regions: TwoRegions) -> None:
    add_both(two_regions)
    with get_client(sync_client=True) as client:
        doc = client.read_block_document_by_name("prod-eu", BLOCK_TYPE, include_secrets=False)
    shown = json.dumps(doc.data)
    assert TOKENS["prod-eu"] not in shown and two_regions.us.url not in shown
    assert doc.data["server"] == two_regions.eu.url and doc.data["context"] == "prod-eu"
    # With secrets (what a flow run asks for): the prod-eu context alone, its token in it.
    saved = load("prod-eu").kubeconfig
    assert saved is not None
    config = saved.get_secret_value()
    assert [c["name"] for c in config["contexts"]] == ["prod-eu"]
    assert config["users"] == [{"name": "deployer-prod-eu", "user": {"token": TOKENS["prod-eu"]}}]
    # The kubeconfig file is not needed any more: the saved cluster is all a run needs.
    two_regions.kubeconfig.unlink()
    seed_application(two_regions.eu, NS, APP, ["stable", "canary"])
    shown_gw = lamia("gateway", "apply", "-n", NS, "-a", APP, "--cluster", "prod-eu",
                     "--weights", "stable=100,canary=0")
    assert shown_gw.exit_code == 0, shown_gw.stderr


def test_in_cluster_is_saved_and_listed_as_not_checked_outside_a_pod(
    no_saved_clusters: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    added = lamia("cluster", "add", "prod-eu", "--in-cluster")
    assert added.exit_code == 0, added.stderr
    assert added.stdout == "cluster prod-eu saved (in-cluster service account)\n"
    (row,) = listing()
    assert row["in_cluster"] is True and row["reachable"] is None
    assert "the service account of the pod that runs the flow" in row["error"]
    assert load("prod-eu").kube_config("prod-eu").in_cluster


def test_gateway_weights_and_init_go_to_the_named_cluster_only(two_regions: TwoRegions) -> None:
    add_both(two_regions)
    for emu in (two_regions.eu, two_regions.us):
        seed_application(emu, NS, APP, ["stable", "canary"])
    assert lamia("cluster", "init", "payments", "--cluster", "prod-us").exit_code == 0
    assert two_regions.us.get_object("v1", "Namespace", None, "payments") is not None
    assert two_regions.eu.get_object("v1", "Namespace", None, "payments") is None
    for region, weights in (("prod-eu", "stable=90,canary=10"), ("prod-us", "stable=100,canary=0")):
        applied = lamia("gateway", "apply", "-n", NS, "-a", APP, "--cluster", region, "--weights", weights)
        assert applied.exit_code == 0, applied.stderr
    assert lamia("weights", "set", "-n", NS, "-a", APP, "--cluster", "prod-us", "stable=50",
                 "canary=50").exit_code == 0
    assert canary(two_regions.eu) == 10 and canary(two_regions.us) == 50
    shown = lamia("gateway", "show", "-n", NS, "-a", APP, "--cluster", "prod-eu", "-o", "yaml")
    assert shown.exit_code == 0 and "canary: 10" in shown.stdout
    status = lamia("release", "status", "-a", APP, "-n", NS, "--cluster", "prod-us", "-o", "json")
    assert status.exit_code == 0, status.stderr
    assert json.loads(status.stdout)["routes"] == {"default": {"stable": 50, "canary": 50}}


def canary(emu: KubeEmulator) -> int:
    vs = emu.get_object(ISTIO_API, "VirtualService", NS, APP)
    assert vs is not None
    (route,) = [r for r in vs["spec"]["http"] if r.get("name") == "lamia-default"]
    return {d["destination"]["subset"]: d["weight"] for d in route["route"]}["canary"]


def test_kubeconfig_from_the_environment_does_not_clash_with_cluster(
    two_regions: TwoRegions, tmp_path: Path
) -> None:
    add_both(two_regions)
    seed_application(two_regions.us, NS, APP, ["stable", "canary"])
    # $KUBECONFIG points at prod-eu only: --cluster prod-us wins, as the user said.
    elsewhere = write_kubeconfig(tmp_path / "eu-only", {"prod-eu": two_regions.eu.url})
    applied = lamia("gateway", "apply", "-n", NS, "-a", APP, "--cluster", "prod-us",
                    "--weights", "stable=100,canary=0", env={"KUBECONFIG": str(elsewhere)})
    assert applied.exit_code == 0, applied.stderr
    assert canary(two_regions.us) == 0


COMMANDS = [
    ["cluster", "init", NS],
    ["gateway", "apply", "-n", NS, "-a", APP, "--weights", "stable=100,canary=0"],
    ["gateway", "show", "-n", NS, "-a", APP],
    ["weights", "set", "-n", NS, "-a", APP, "stable=100", "canary=0"],
    ["expose", "-n", NS, "-a", APP, "--host", "shop.example.com"],
    ["unexpose", "-n", NS, "-a", APP],
    ["doctor", "-n", NS, "-a", APP],
    ["release", "status", "-a", APP, "-n", NS],
    ["release", "abort", "-a", APP, "-n", NS],
    ["release", "start", "-n", NS, "-a", APP, "--baseline", "stable", "--target", "canary",
     "--prometheus", "http://prometheus:9090"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_cluster_with_kubeconfig_or_context_is_refused_changing_nothing(
    two_regions: TwoRegions, command: list[str]
) -> None:
    add_both(two_regions)
    seed_application(two_regions.eu, NS, APP, ["stable", "canary"])
    before = len(two_regions.eu.requests), len(two_regions.us.requests)
    for extra in (["--kubeconfig", str(two_regions.kubeconfig)], ["--context", "prod-us"]):
        assert_one_error_line(lamia(*command, "--cluster", "prod-eu", *extra),
                              f"--cluster prod-eu and {extra[0]} both say which cluster to use")
    assert (len(two_regions.eu.requests), len(two_regions.us.requests)) == before


@pytest.mark.parametrize("command", COMMANDS[:4] + COMMANDS[7:9], ids=lambda c: " ".join(c[:2]))
def test_an_unknown_cluster_is_refused_naming_the_saved_ones(two_regions: TwoRegions,
                                                             command: list[str]) -> None:
    add_both(two_regions)
    assert_one_error_line(lamia(*command, "--cluster", "prod-ap"),
                          "no cluster named 'prod-ap' (saved clusters: prod-eu, prod-us")
    assert_one_error_line(lamia(*command, "--cluster", "Prod_EU"), "is not a DNS label")


def test_add_refusals(no_saved_clusters: None, tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", {"prod-eu": "https://api.prod-eu.example.com:6443"})
    kc = ["--kubeconfig", str(path)]
    assert_one_error_line(lamia("cluster", "add", "prod-eu", *kc), "--context CTX", "--in-cluster")
    assert_one_error_line(lamia("cluster", "add", "prod-eu", "--in-cluster", "--context", "prod-eu"),
                          "--in-cluster uses the pod's service account")
    assert_one_error_line(lamia("cluster", "add", "prod-eu", "--context", "prod-us", *kc),
                          "has no context 'prod-us' (its contexts: prod-eu)")
    assert_one_error_line(lamia("cluster", "add", "EU prod", "--context", "prod-eu", *kc), "not a DNS label")
    assert_one_error_line(lamia("cluster", "add", "prod-eu", "--context", "prod-eu", *kc,
                                "--prometheus", "prometheus:9090"), "must be http:// or https://")
    assert_one_error_line(lamia("cluster", "add", "prod-eu", "--context", "prod-eu",
                                "--kubeconfig", str(tmp_path / "absent")), "does not exist")
    assert names() == [], "nothing refused was saved"
    assert lamia("cluster", "add", "prod-eu", "--context", "prod-eu", *kc).exit_code == 0
    assert_one_error_line(lamia("cluster", "add", "prod-eu", "--in-cluster"),
                          "cluster prod-eu is saved already: --overwrite replaces it")
    assert not load("prod-eu").in_cluster
    assert lamia("cluster", "add", "prod-eu", "--in-cluster", "--overwrite").exit_code == 0
    assert load("prod-eu").in_cluster


def test_remove(two_regions: TwoRegions) -> None:
    add_both(two_regions)
    removed = lamia("cluster", "remove", "prod-us")
    assert removed.exit_code == 0 and removed.stdout == "cluster prod-us removed\n"
    assert names() == ["prod-eu"]
    assert_one_error_line(lamia("cluster", "remove", "prod-us"), "no cluster named 'prod-us'")
    assert lamia("cluster", "remove", "prod-eu").exit_code == 0
    empty = lamia("cluster", "list")
    assert empty.exit_code == 0
    assert empty.stdout == "no cluster is saved (lamia cluster add NAME --context CTX)\n"
    assert listing() == []


def test_metrics_and_release_start_use_the_clusters_prometheus_unless_given_one(
    no_saved_clusters: None, tmp_path: Path, closed_port: int
) -> None:
    path = write_kubeconfig(tmp_path / "config", {"prod-eu": "https://api.prod-eu.example.com:6443"})
    saved = f"http://127.0.0.1:{closed_port}"
    assert lamia("cluster", "add", "prod-eu", "--context", "prod-eu", "--kubeconfig", str(path),
                 "--prometheus", saved).exit_code == 0
    query = ["metrics", "-n", NS, "-a", APP, "upstream_rq_total", "--timeout", "2"]
    # Nothing listens there: the error names the address asked, which shows whose it was.
    by_cluster = lamia(*query, "--cluster", "prod-eu", env={"LAMIA_PROMETHEUS_URL": "http://elsewhere:9090"})
    # 3: the Prometheus could not be reached.
    assert by_cluster.exit_code == 3 and f"127.0.0.1:{closed_port}" in by_cluster.stderr, by_cluster.stderr
    other = f"http://127.0.0.1:{closed_port}/other"
    given = lamia(*query, "--cluster", "prod-eu", "--prometheus", other)
    assert given.exit_code == 3 and "/other" in given.stderr, given.stderr
    assert_one_error_line(lamia(*query, env={"LAMIA_PROMETHEUS_URL": ""}), "say which Prometheus")
    start = ["release", "start", "-n", NS, "-a", APP, "--baseline", "stable", "--target", "canary"]
    assert_one_error_line(lamia(*start, env={"LAMIA_PROMETHEUS_URL": ""}), "say which Prometheus")


def test_doctor_checks_the_named_cluster_and_asks_its_prometheus(
    two_regions: TwoRegions, tmp_path: Path, closed_port: int
) -> None:
    add_both(two_regions)
    # prod-eu again, now with a Prometheus that does not answer: the doctor asks it without --prometheus.
    assert lamia("cluster", "add", "prod-eu", "--context", "prod-eu", "--kubeconfig",
                 str(two_regions.kubeconfig), "--prometheus", f"http://127.0.0.1:{closed_port}",
                 "--overwrite").exit_code == 0
    seed_application(two_regions.eu, NS, APP, ["stable", "canary"])
    found: dict[str, dict[str, Any]] = {}
    for region in ("prod-eu", "prod-us"):
        result = lamia("doctor", "-n", NS, "-a", APP, "--cluster", region, "-o", "json")
        assert result.exit_code == 1, result.stderr
        found[region] = {c["id"]: c for c in json.loads(result.stdout)["checks"]}
    assert found["prod-eu"]["labels"]["status"] == "pass"
    assert found["prod-us"]["labels"]["status"] == "fail", "the app is on prod-eu only"
    assert found["prod-eu"]["prometheus"]["status"] == "fail"
    assert f"127.0.0.1:{closed_port}" in found["prod-eu"]["prometheus"]["detail"]
    assert found["prod-us"]["prometheus"]["status"] == "skip", "prod-us was saved with no Prometheus"
