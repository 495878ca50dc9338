"""The gateway commands of the ``lamia`` CLI, in-process and once as a real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from typer.testing import CliRunner, Result

from flows.cli import app
from lamia_core.istio import ISTIO_API
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.seed import seed_application
from tests.plugins.hostile import assert_refused_cleanly, hostile_texts, invoke
from tests.plugins.istio_schema import IstioValidator

NS, APP = "bookinfo", "reviews"
WRITES = ("POST", "PUT", "PATCH", "DELETE")
runner = CliRunner()


def lamia(*args: str) -> Result:
    return runner.invoke(app, list(args))


def kube_args(kubeconfig: Path) -> list[str]:
    return ["--kubeconfig", str(kubeconfig), "--context", "lamia-emulator"]


def assert_one_error_line(result: Result, *fragments: str, code: int = 2) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("lamia: error: ")
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    for f in fragments:
        assert f in result.stderr


def cluster_state(emu: KubeEmulator) -> dict[tuple[str, str | None, str], str]:
    """Every object's resourceVersion, to show that nothing changed."""
    kinds = [("v1", "Namespace"), ("v1", "Service"), ("apps/v1", "Deployment"),
             (ISTIO_API, "VirtualService"), (ISTIO_API, "DestinationRule")]
    return {(kind, o["metadata"].get("namespace"), o["metadata"]["name"]): o["metadata"]["resourceVersion"]
            for api, kind in kinds for o in emu.list_objects(api, kind)}


def writes(emu: KubeEmulator) -> list[tuple[str, str]]:
    return [r for r in emu.requests if r[0] in WRITES]


def default_weights(emu: KubeEmulator) -> dict[str, int]:
    vs = emu.get_object(ISTIO_API, "VirtualService", NS, APP)
    assert vs is not None
    (route,) = [r for r in vs["spec"]["http"] if r.get("name") == "lamia-default"]
    return {d["destination"]["subset"]: d["weight"] for d in route["route"]}


# --- render -------------------------------------------------------------------------------------


def test_render_gateway(istio_validator: IstioValidator) -> None:
    result = lamia("render", "gateway", "--namespace", NS, "--app", APP,
                   "--weights", "v1=90,v2=10", "--versions", "v1,v2,v3")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    dr, vs = yaml.safe_load_all(result.stdout)
    istio_validator.validate(dr)
    istio_validator.validate(vs)
    assert dr["kind"] == "DestinationRule" and vs["kind"] == "VirtualService"
    assert [s["name"] for s in dr["spec"]["subsets"]] == ["v1", "v2", "v3"]
    assert vs["metadata"]["namespace"] == NS
    assert vs["spec"]["http"] == [{"name": "lamia-default", "route": [
        {"destination": {"host": APP, "subset": "v1"}, "weight": 90},
        {"destination": {"host": APP, "subset": "v2"}, "weight": 10}]}]


def test_render_gateway_versions_default_to_those_weighted() -> None:
    result = lamia("render", "gateway", "-n", NS, "-a", APP, "--weights", "v2=100")
    dr, _ = yaml.safe_load_all(result.stdout)
    assert [s["name"] for s in dr["spec"]["subsets"]] == ["v2"]


def test_render_gateway_with_condition(istio_validator: IstioValidator) -> None:
    condition = 'header "end-user" exact "jason"'
    result = lamia("render", "gateway", "-n", NS, "-a", APP, "--weights", "v1=90,v2=10",
                   "--condition", condition, "--condition-weights", "v3=100")
    assert result.exit_code == 0, result.stderr
    dr, vs = yaml.safe_load_all(result.stdout)
    istio_validator.validate(vs)
    assert [s["name"] for s in dr["spec"]["subsets"]] == ["v1", "v2", "v3"]
    assert [r["name"] for r in vs["spec"]["http"]] == ["lamia-condition", "lamia-default"]
    assert vs["spec"]["http"][0]["match"] == [{"headers": {"end-user": {"exact": "jason"}}}]
    assert vs["spec"]["http"][0]["route"] == [{"destination": {"host": APP, "subset": "v3"}, "weight": 100}]
    assert yaml.safe_load(vs["metadata"]["annotations"]["lamia.io/conditions"]) == {"condition": condition}


@pytest.mark.parametrize(("args", "fragment"), [
    (["--weights", "v1=90,v2=20"], "weights must sum to 100, got 110"),
    (["--weights", "v1=-10,v2=110"], "weights must be between 0 and 100: v1=-10, v2=110"),
    (["--weights", "v1=90,v2=ten"], "weight of version 'v2' must be an integer, got 'ten'"),
    (["--weights", "v1=90,v4=10", "--versions", "v1,v2"], "unknown version(s) v4"),
    (["--weights", "v1=100", "--condition", 'uri prefix "/a"'],
     "--condition and --condition-weights go together"),
    (["--weights", "v1=100", "--versions", "v1,v1"], "--versions names v1 more than once"),
])
def test_render_gateway_bad_input(args: list[str], fragment: str) -> None:
    assert_one_error_line(lamia("render", "gateway", "-n", NS, "-a", APP, *args), fragment)


def test_render_gateway_bad_namespace() -> None:
    assert_one_error_line(lamia("render", "gateway", "-n", "Book_Info", "-a", APP, "--weights", "v1=100"),
                          "namespace 'Book_Info' is not a valid DNS-1123 label")


@settings(max_examples=100)
@given(hostile_texts(['header "end-user" exact "jason"', 'uri prefix "/reviews" or method exact "POST"'],
                     openers=["(", "not "]))
def test_render_gateway_refuses_a_hostile_condition_with_one_message(condition: str) -> None:
    result = invoke(app, ["render", "gateway", "-n", NS, "-a", APP, "--weights", "v1=90,v2=10",
                          "--condition", condition, "--condition-weights", "v2=100"])
    assert_refused_cleanly(result, condition)


# --- cluster init -------------------------------------------------------------------------------


def test_cluster_init(kube_emulator: KubeEmulator, kubeconfig: Path) -> None:
    result = lamia("cluster", "init", "shop", *kube_args(kubeconfig))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ("namespace shop created (istio-injection=enabled, lamia.io/managed=true); "
                             "it did not exist, so Lamia created it\n")
    again = lamia("cluster", "init", "shop", *kube_args(kubeconfig))
    assert again.stdout == "namespace shop ready (istio-injection=enabled, lamia.io/managed=true)\n"
    ns = kube_emulator.get_object("v1", "Namespace", None, "shop")
    assert ns is not None
    labels = ns["metadata"]["labels"]
    assert (labels["istio-injection"], labels["lamia.io/managed"]) == ("enabled", "true")


# --- gateway apply / show -----------------------------------------------------------------------


@pytest.fixture
def seeded(kube_emulator: KubeEmulator) -> KubeEmulator:
    seed_application(kube_emulator, NS, APP, ["v1", "v2"])
    return kube_emulator


def test_gateway_apply_needs_weights_for_a_new_gateway_of_several_versions(
    seeded: KubeEmulator, kubeconfig: Path
) -> None:
    before = cluster_state(seeded)
    result = lamia("gateway", "apply", "-n", NS, "-a", APP, *kube_args(kubeconfig))
    assert_one_error_line(result, "has 2 versions (v1, v2) and no gateway yet",
                          "--weights v1=100,v2=0")
    assert writes(seeded) == []
    assert cluster_state(seeded) == before


def test_gateway_apply_with_one_version_sends_it_everything(kube_emulator: KubeEmulator,
                                                            kubeconfig: Path) -> None:
    seed_application(kube_emulator, NS, APP, ["v1"])
    result = lamia("gateway", "apply", "-n", NS, "-a", APP, *kube_args(kubeconfig))
    assert result.exit_code == 0, result.stderr
    assert default_weights(kube_emulator) == {"v1": 100}


def test_gateway_apply_then_show(seeded: KubeEmulator, kubeconfig: Path) -> None:
    result = lamia("gateway", "apply", "-n", NS, "-a", APP, "--weights", "v1=90,v2=10",
                   *kube_args(kubeconfig))
    assert result.exit_code == 0, result.stderr
    assert "default  v1=90,v2=10" in result.stdout
    assert default_weights(seeded) == {"v1": 90, "v2": 10}

    # Re-applying without weights keeps them, and writes nothing.
    n = len(writes(seeded))
    again = lamia("gateway", "apply", "-n", NS, "-a", APP, *kube_args(kubeconfig))
    assert again.exit_code == 0, again.stderr
    assert len(writes(seeded)) == n
    assert default_weights(seeded) == {"v1": 90, "v2": 10}

    table = lamia("gateway", "show", "-n", NS, "-a", APP, *kube_args(kubeconfig))
    assert table.exit_code == 0, table.stderr
    assert table.stdout.splitlines() == [
        "gateway of reviews in namespace bookinfo (host reviews; versions v1, v2)",
        "ROUTE    WEIGHTS      CONDITION",
        "default  v1=90,v2=10  (default: all other requests)",
    ]
    data = lamia("gateway", "show", "-n", NS, "-a", APP, "-o", "yaml", *kube_args(kubeconfig))
    assert yaml.safe_load(data.stdout) == {
        "namespace": NS, "application": APP, "host": APP, "versions": ["v1", "v2"],
        "routes": [{"name": "default", "weights": {"v1": 90, "v2": 10}}],
    }


def test_gateway_show_prints_condition_text(seeded: KubeEmulator, kubeconfig: Path) -> None:
    rendered = lamia("render", "gateway", "-n", NS, "-a", APP, "--weights", "v1=100",
                     "--condition", 'header "end-user" exact "jason"', "--condition-weights", "v2=100")
    for doc in yaml.safe_load_all(rendered.stdout):
        seeded.add_object(doc)
    table = lamia("gateway", "show", "-n", NS, "-a", APP, *kube_args(kubeconfig))
    assert table.exit_code == 0, table.stderr
    assert table.stdout.splitlines()[1:] == [
        "ROUTE      WEIGHTS  CONDITION",
        'condition  v2=100   header "end-user" exact "jason"',
        "default    v1=100   (default: all other requests)",
    ]


def test_gateway_show_without_gateway(seeded: KubeEmulator, kubeconfig: Path) -> None:
    assert_one_error_line(lamia("gateway", "show", "-n", NS, "-a", APP, *kube_args(kubeconfig)),
                          "has no gateway yet; create it with "
                          "`lamia gateway apply --namespace bookinfo --app reviews --weights v1=100,v2=0`")


# --- weights set --------------------------------------------------------------------------------


@pytest.fixture
def applied(seeded: KubeEmulator, kubeconfig: Path) -> KubeEmulator:
    result = lamia("gateway", "apply", "-n", NS, "-a", APP, "--weights", "v1=100,v2=0",
                   *kube_args(kubeconfig))
    assert result.exit_code == 0, result.stderr
    seeded.requests.clear()
    return seeded


def test_weights_set(applied: KubeEmulator, kubeconfig: Path) -> None:
    result = lamia("weights", "set", "-n", NS, "-a", APP, "v1=80", "v2=20", *kube_args(kubeconfig))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "reviews route default: v1=80,v2=20\n"
    assert default_weights(applied) == {"v1": 80, "v2": 20}


@pytest.mark.parametrize(("weights", "fragment", "asks_cluster"), [
    (["v1=80", "v2=30"], "weights must sum to 100, got 110 (v1=80, v2=30)", False),
    (["v1=-20", "v2=120"], "weights must be between 0 and 100: v1=-20, v2=120", False),
    (["v1=80", "v1=20"], "version 'v1' is given more than one weight", False),
    (["v1=80", "v9=20"], "unknown version 'v9' of application 'reviews' in namespace 'bookinfo' "
                         "(known versions: v1, v2)", True),
])
def test_weights_set_bad_input_changes_nothing(
    applied: KubeEmulator, kubeconfig: Path, weights: list[str], fragment: str, asks_cluster: bool
) -> None:
    before = cluster_state(applied)
    result = lamia("weights", "set", "-n", NS, "-a", APP, *weights, *kube_args(kubeconfig))
    assert_one_error_line(result, fragment)
    assert writes(applied) == []
    assert bool(applied.requests) == asks_cluster
    assert cluster_state(applied) == before


def test_weights_set_with_badly_labelled_deployments_changes_nothing(
    kube_emulator: KubeEmulator, kubeconfig: Path
) -> None:
    seed_application(kube_emulator, NS, APP, ["v1", "v2"], labels_missing={"v2": "deployment"})
    before = cluster_state(kube_emulator)
    result = lamia("weights", "set", "-n", NS, "-a", APP, "v1=50", "v2=50", *kube_args(kubeconfig))
    assert_one_error_line(result, "Deployment bookinfo/reviews-v2 lacks label deployment")
    assert writes(kube_emulator) == []
    assert cluster_state(kube_emulator) == before


def test_weights_set_on_unreachable_cluster(tmp_path: Path, kube_emulator: KubeEmulator) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = kube_emulator.write_kubeconfig(tmp_path / "gone", context="gone")
    config.write_text(config.read_text().replace(kube_emulator.url, f"http://127.0.0.1:{port}"))
    result = lamia("weights", "set", "-n", NS, "-a", APP, "v1=50", "v2=50", "--kubeconfig", str(config))
    # 3: a service could not be reached, so trying again may help.
    assert_one_error_line(result, f"cannot reach the Kubernetes API server at http://127.0.0.1:{port}",
                          "Connection refused", code=3)


# --- a real process -----------------------------------------------------------------------------


def _lamia_process(args: list[str], kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "lamia"
    env: dict[str, Any] = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_lamia_as_a_process(applied: KubeEmulator, kubeconfig: Path) -> None:
    done = _lamia_process(["weights", "set", "--namespace", NS, "--app", APP, "v1=60", "v2=40"], kubeconfig)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "reviews route default: v1=60,v2=40\n"
    assert default_weights(applied) == {"v1": 60, "v2": 40}

    before = cluster_state(applied)
    applied.requests.clear()
    bad = _lamia_process(["weights", "set", "--namespace", NS, "--app", APP, "v1=60", "v2=60"], kubeconfig)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr == "lamia: error: weights must sum to 100, got 120 (v1=60, v2=60)\n"
    assert applied.requests == []
    assert cluster_state(applied) == before
