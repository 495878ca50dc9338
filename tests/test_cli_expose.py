"""`lamia expose` and `lamia unexpose`: what they print, and their refusals (exit 2, one line, nothing
written)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from flows.cli import app
from lamia_core.istio import ISTIO_API
from lamia_core.lease import Lease, take_lease
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.seed import seed_application

NS, APP, HOST = "shop", "reviews", "shop.example.com"
runner = CliRunner()


def lamia(*args: str) -> Result:
    return runner.invoke(app, list(args))


def kube_args(kubeconfig: Path) -> list[str]:
    return ["--kubeconfig", str(kubeconfig), "--context", "lamia-emulator"]


def writes(emu: KubeEmulator) -> list[tuple[str, str]]:
    return [r for r in emu.requests if r[0] in ("POST", "PUT", "PATCH", "DELETE")]


def assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("lamia: error: ")
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    for f in fragments:
        assert f in result.stderr


@pytest.fixture
def shop(kube_emulator: KubeEmulator, kubeconfig: Path) -> list[str]:
    """The app with its gateway; the kubeconfig options for the commands."""
    seed_application(kube_emulator, NS, APP, ["1.4.0", "1.5.0-rc.1"])
    k = kube_args(kubeconfig)
    applied = lamia("gateway", "apply", "-n", NS, "--app", APP, "--weights", "1.4.0=100,1.5.0-rc.1=0", *k)
    assert applied.exit_code == 0, applied.stderr
    return k


def test_expose_and_unexpose(shop: list[str], kube_emulator: KubeEmulator) -> None:
    result = lamia("expose", "-n", NS, "--app", APP, "--host", HOST, "--tls-secret", "shop-tls", *shop)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "reviews in namespace shop exposed as shop.example.com through Gateway shop/reviews-gateway "
        "(created)",
        "  https://shop.example.com/ follows the same routes and weights as the mesh",
    ]
    vs = kube_emulator.get_object(ISTIO_API, "VirtualService", NS, APP)
    assert vs is not None and vs["spec"]["gateways"] == ["mesh", "shop/reviews-gateway"]
    result = lamia("unexpose", "-n", NS, "-a", APP, *shop)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ("reviews in namespace shop no longer exposed as shop.example.com: "
                             "deleted Gateway shop/reviews-gateway\n")
    assert kube_emulator.get_object(ISTIO_API, "Gateway", NS, "reviews-gateway") is None
    again = lamia("unexpose", "-n", NS, "-a", APP, *shop)
    assert again.exit_code == 0 and "nothing to remove" in again.stdout


def test_expose_as_an_ingress_says_the_weights_do_not_apply(shop: list[str]) -> None:
    result = lamia("expose", "-n", NS, "--app", APP, "--host", HOST, "--ingress", *shop)
    assert result.exit_code == 0, result.stderr
    assert "through Ingress shop/reviews-ingress (created)" in result.stdout
    assert "without Lamia's weights" in result.stdout


@pytest.mark.parametrize(("args", "fragments"), [
    (["--host", "Shop.Example.com"], ["host 'Shop.Example.com' is not a public DNS name"]),
    (["--host", "*.example.com"], ["is not a public DNS name"]),
    (["--host", HOST, "--tls-secret", "Shop TLS"], ["TLS secret name 'Shop TLS'"]),
    (["--host", HOST, "--gateway", "edge/public"], ["Gateway name 'edge/public'"]),
    (["--host", HOST, "--selector", "istio"], ["selector part 'istio' is not LABEL=VALUE"]),
])
def test_bad_input_is_refused_with_one_line_and_nothing_written(
        shop: list[str], kube_emulator: KubeEmulator, args: list[str], fragments: list[str]) -> None:
    before = len(writes(kube_emulator))
    assert_one_error_line(lamia("expose", "-n", NS, "--app", APP, *args, *shop), *fragments)
    assert len(writes(kube_emulator)) == before


def test_refusals_from_the_cluster_change_nothing(shop: list[str], kube_emulator: KubeEmulator) -> None:
    seed_application(kube_emulator, NS, "ratings", ["v9", "v10"])
    before = len(writes(kube_emulator))
    assert_one_error_line(lamia("expose", "-n", NS, "--app", "ratings", "--host", HOST, *shop),
                          "has no gateway yet", "lamia gateway apply")
    assert_one_error_line(lamia("expose", "-n", NS, "--app", "payments", "--host", HOST, *shop),
                          "no Deployments labelled app=payments")
    assert len(writes(kube_emulator)) == before

    assert lamia("expose", "-n", NS, "--app", APP, "--host", HOST, *shop).exit_code == 0
    before = len(writes(kube_emulator))
    assert_one_error_line(lamia("expose", "-n", NS, "--app", APP, "--host", "www.example.com", *shop),
                          "already exposed as shop.example.com", "lamia unexpose -n shop --app reviews")
    assert len(writes(kube_emulator)) == before


def test_a_running_release_refuses_expose_and_unexpose(shop: list[str], kube_emulator: KubeEmulator) -> None:
    assert lamia("expose", "-n", NS, "--app", APP, "--host", HOST, *shop).exit_code == 0
    vs = kube_emulator.get_object(ISTIO_API, "VirtualService", NS, APP)
    assert vs is not None
    lease = Lease.new("0b7d3c3e-2f7e-4d55-9d0e-6c1f0a9b8e21", "calm-otter", target="1.5.0-rc.1",
                      baseline="1.4.0")
    kube_emulator.replace_object(take_lease(vs, lease, app=APP))
    before = len(writes(kube_emulator))
    assert_one_error_line(lamia("unexpose", "-n", NS, "--app", APP, *shop),
                          "calm-otter", "lamia release abort")
    assert_one_error_line(lamia("expose", "-n", NS, "--app", APP, "--host", HOST, *shop),
                          "is held by a running release")
    assert len(writes(kube_emulator)) == before
