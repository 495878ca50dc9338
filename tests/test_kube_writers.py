"""The adapter's rules for other writers: the release lease, and a release's route changed behind it.

The other writer is a real ``kubectl`` (client-side apply, patch) against the emulator, as a
person or a CI job would be, or the emulator's store written directly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lamia_core.errors import ForeignChange, ReleaseLocked
from lamia_core.istio import CONDITIONS_ANNOTATION, ISTIO_API
from lamia_core.kube import KubeAdapter, KubeConfig, last_writer
from lamia_core.lease import LEASE_ANNOTATION, Lease
from lamia_core.models import Application, Gateway, Route, Weights
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.seed import seed_application

NS, APP = "shop", "cart"
VERSIONS = ["stable", "canary"]
WRITES = ("POST", "PUT", "PATCH", "DELETE")
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH")

USER_FILE = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": APP, "namespace": NS, "labels": {"team": "checkout"}},
    "spec": {
        "hosts": [APP],
        "http": [{
            "timeout": "5s",
            "route": [
                {"destination": {"host": APP, "subset": "stable"}, "weight": 100},
                {"destination": {"host": APP, "subset": "canary"}, "weight": 0},
            ],
        }],
    },
}


@pytest.fixture
def kube(kubeconfig: Path, kube_emulator: KubeEmulator) -> Any:
    seed_application(kube_emulator, NS, APP, VERSIONS)
    with KubeAdapter(KubeConfig(kubeconfig=str(kubeconfig), context="lamia-emulator")) as adapter:
        yield adapter


@pytest.fixture
def cart(kube: KubeAdapter) -> Application:
    app = kube.discover_application(NS, APP)
    kube.apply_gateway(Gateway(application=app, routes=(Route(weights=Weights.all_on("stable", VERSIONS)),)))
    return app


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    assert KUBECTL is not None
    proc = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args], input=stdin, text=True,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def vs_of(emu: KubeEmulator) -> dict[str, Any]:
    vs = emu.get_object(ISTIO_API, "VirtualService", NS, APP)
    assert vs is not None
    return vs


def writes(emu: KubeEmulator) -> int:
    return sum(1 for m, _ in emu.requests if m in WRITES)


LEASE = Lease.new("1b6f0c2e-5b8e-4c7e-9f1a-2d3c4b5a6e7f", "cart stable→canary", target="canary",
                  baseline="stable", route="default")


# --- the lease ---------------------------------------------------------------------------------


def test_a_write_by_anyone_but_the_holder_is_refused_naming_the_run_and_abort(
    kube: KubeAdapter, cart: Application, kube_emulator: KubeEmulator
) -> None:
    kube.take_lease(cart, LEASE)
    before, count = vs_of(kube_emulator), writes(kube_emulator)
    refusals = [
        lambda: kube.set_weights(cart, Weights({"stable": 0, "canary": 100})),
        lambda: kube.apply_gateway(Gateway(application=cart, routes=(Route(weights=Weights.all_on("canary",
                                                                                                  VERSIONS)),))),
        lambda: kube.set_weights(cart, Weights({"stable": 50, "canary": 50}), holder="another-run"),
        lambda: kube.update_object("VirtualService", NS, APP, lambda vs: {**(vs or {}), "spec": {}}),
    ]
    for refuse in refusals:
        with pytest.raises(ReleaseLocked) as caught:
            refuse()
        text = str(caught.value)
        assert "cart stable→canary" in text and LEASE.holder in text
        assert "`lamia release abort cart --namespace shop`" in text
    assert vs_of(kube_emulator) == before and writes(kube_emulator) == count, "nothing was written"

    # The holder may write; only abort overrides the lease, and gives it back in the same write.
    kube.set_weights(cart, Weights({"stable": 80, "canary": 20}), holder=LEASE.holder)
    rv = vs_of(kube_emulator)["metadata"]["resourceVersion"]
    assert kube.abort_release(cart, LEASE) == Weights({"stable": 100, "canary": 0})
    after = vs_of(kube_emulator)
    assert int(after["metadata"]["resourceVersion"]) == int(rv) + 1, "one write"
    assert LEASE_ANNOTATION not in (after["metadata"].get("annotations") or {})
    assert kube.read_gateway(cart).default_route.weights == Weights({"stable": 100, "canary": 0})  # type: ignore[union-attr]
    kube.set_weights(cart, Weights({"stable": 90, "canary": 10}))  # a person, now that no one holds it


def test_an_unreadable_lease_is_held_by_someone(kube: KubeAdapter, cart: Application,
                                                kube_emulator: KubeEmulator) -> None:
    vs = vs_of(kube_emulator)
    vs["metadata"].setdefault("annotations", {})[LEASE_ANNOTATION] = "held by Bob, do not touch"
    kube_emulator.replace_object(vs)
    with pytest.raises(ReleaseLocked, match="unreadable lease annotation"):
        kube.set_weights(cart, Weights({"stable": 50, "canary": 50}))


# --- a release's route changed behind it ---------------------------------------------------------


def test_check_route_tells_each_kind_of_foreign_change(kube: KubeAdapter, cart: Application,
                                                       kube_emulator: KubeEmulator) -> None:
    kube.take_lease(cart, LEASE)
    mine = Weights({"stable": 80, "canary": 20})
    kube.set_weights(cart, mine, holder=LEASE.holder, expect=Weights.all_on("stable", VERSIONS))
    kube.check_route(cart, vs_of(kube_emulator), "default", mine, holder=LEASE.holder)  # as written

    vs = vs_of(kube_emulator)
    vs["spec"]["http"][0]["route"][1]["weight"], vs["spec"]["http"][0]["route"][0]["weight"] = 50, 50
    kube_emulator.replace_object(vs)
    with pytest.raises(ForeignChange) as changed:
        kube.set_weights(cart, Weights({"stable": 60, "canary": 40}), holder=LEASE.holder, expect=mine)
    assert changed.value.found == {"stable": 50, "canary": 50} and changed.value.expected == mine.as_dict()
    assert "were changed" in str(changed.value)
    assert vs_of(kube_emulator)["spec"]["http"][0]["route"][0]["weight"] == 50, "nothing undone"

    vs["spec"]["http"] = []
    kube_emulator.replace_object(vs)
    with pytest.raises(ForeignChange, match="route 'default' was removed") as gone:
        kube.check_route(cart, vs_of(kube_emulator), "default", mine, holder=LEASE.holder)
    assert gone.value.found is None

    del vs["metadata"]["annotations"][LEASE_ANNOTATION]
    kube_emulator.replace_object(vs)
    with pytest.raises(ForeignChange, match=r"lease .* was removed"):
        kube.check_route(cart, vs_of(kube_emulator), "default", mine, holder=LEASE.holder)


@needs_kubectl
def test_kubectl_apply_of_the_users_file_is_told_apart_by_its_field_manager(
    kube: KubeAdapter, kubeconfig: Path, kube_emulator: KubeEmulator
) -> None:
    # The user's own file, applied with kubectl; Lamia adopts its catch-all.
    kubectl(kubeconfig, "apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(USER_FILE))
    cart = kube.discover_application(NS, APP)
    kube.take_lease(cart, LEASE)
    adopted = kube.read_gateway(cart)
    assert adopted is not None
    kube.apply_gateway(adopted, holder=LEASE.holder)  # what a release does first: the route is Lamia's
    start = Weights.all_on("stable", VERSIONS)
    step = Weights({"stable": 80, "canary": 20})
    kube.set_weights(cart, step, holder=LEASE.holder, expect=start)
    assert last_writer(vs_of(kube_emulator)) is not None and "kubectl-client-side-apply" in str(
        last_writer(vs_of(kube_emulator)))

    # The same file applied again (a CI job, a GitOps sync): client-side apply replaces the whole
    # http list, since a custom resource takes no strategic merge.
    edited = json.loads(json.dumps(USER_FILE))
    edited["spec"]["http"][0]["route"][0]["weight"], edited["spec"]["http"][0]["route"][1]["weight"] = 90, 10
    kubectl(kubeconfig, "apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(edited))
    theirs = vs_of(kube_emulator)
    with pytest.raises(ForeignChange) as caught:
        kube.set_weights(cart, Weights({"stable": 60, "canary": 40}), holder=LEASE.holder, expect=step)
    assert "route 'default' was removed" in str(caught.value)
    assert "field manager 'kubectl-client-side-apply'" in str(caught.value)
    assert "kubectl apply" in str(caught.value.writer)
    assert vs_of(kube_emulator)["spec"] == theirs["spec"] == edited["spec"], "their weights stay"
    managers = {e["manager"] for e in theirs["metadata"]["managedFields"]}
    assert managers == {"kubectl-client-side-apply", "lamia"}


@needs_kubectl
def test_dropping_the_lease_forgets_the_condition_of_a_route_someone_removed(
    kube: KubeAdapter, cart: Application, kubeconfig: Path, kube_emulator: KubeEmulator
) -> None:
    match = ({"headers": {"user-agent": {"regex": "^.*(Chrome).*$"}}},)
    canary = Route(name="canary", condition='header "User-Agent" regex "^.*(Chrome).*$"', match=match,
                   weights=Weights.all_on("stable", VERSIONS))
    gateway = kube.read_gateway(cart)
    assert gateway is not None
    kube.take_lease(cart, LEASE)
    kube.apply_gateway(gateway.with_route(canary), holder=LEASE.holder)
    assert "canary" in vs_of(kube_emulator)["metadata"]["annotations"][CONDITIONS_ANNOTATION]
    kubectl(kubeconfig, "patch", "virtualservice", APP, "-n", NS, "--type=json",
            "-p", '[{"op": "remove", "path": "/spec/http/0"}]')
    with pytest.raises(ForeignChange,
                       match=r"route 'canary' was removed .* by field manager 'kubectl-patch'"):
        kube.check_route(cart, vs_of(kube_emulator), "canary", canary.weights, holder=LEASE.holder)
    kube.drop_lease(cart, LEASE.holder, forget_routes=("canary",))
    annotations = vs_of(kube_emulator)["metadata"].get("annotations") or {}
    assert LEASE_ANNOTATION not in annotations and CONDITIONS_ANNOTATION not in annotations
    assert [r["name"] for r in vs_of(kube_emulator)["spec"]["http"]] == ["lamia-default"]
