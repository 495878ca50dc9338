"""Lamia over VirtualServices and DestinationRules shaped like real ones (tests/corpus/*.yaml).

For each case the cluster (the emulator) holds the application's Deployments and the case's
objects; then `lamia gateway apply`, `lamia weights set` and a short release run as a user
would run them. What each case checks:

- adopted: everything Lamia does not own is deep-equal before and after (other objects
  entirely; in the gateway, everything but Lamia's routes, labels and annotations, the
  catch-all it adopted, and the subsets named like versions it completes); every object is
  valid against Istio's CRD schema; the weights are those asked;
- refused: one line on stderr, exit 2, and not one write to the cluster.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from flows._history import run_outcome
from flows.cli import app
from flows.params import ReleaseParameters
from flows.release import canary_release
from lamia_core.istio import ISTIO_API, matches_everything
from lamia_core.kube import KubeConfig
from lamia_core.outcome import Outcome
from lamia_core.policies import TimePolicy
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.seed import application_objects
from tests.plugins.istio_schema import IstioValidator

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(p.stem for p in CORPUS.glob("*.yaml"))
WRITES = ("POST", "PUT", "PATCH", "DELETE")
KINDS = [("v1", "Service"), ("apps/v1", "Deployment"), (ISTIO_API, "VirtualService"),
         (ISTIO_API, "DestinationRule"), (ISTIO_API, "Gateway")]
runner = CliRunner()

Obj = dict[str, Any]


def load(name: str) -> Obj:
    doc = yaml.safe_load((CORPUS / f"{name}.yaml").read_text())
    assert isinstance(doc, dict) and "case" in doc
    return doc


def test_the_corpus_has_the_shapes_the_issue_names() -> None:
    names = set(CASES)
    for family in ("bookinfo", "argo-rollouts-subset", "argo-rollouts-host", "flagger-generated",
                   "flagger-delegate", "helm", "tcp-only"):
        assert any(n.startswith(family) for n in names), family
    expectations = {load(n)["case"]["expect"] for n in CASES}
    assert expectations == {"adopt", "refuse"}


def seed(emu: KubeEmulator, doc: Obj) -> None:
    case = doc["case"]
    objects = application_objects(case["namespace"], case["app"], list(case["versions"]))
    if not doc.get("seed_service", True):
        objects = [o for o in objects if o["kind"] != "Service"]
    for obj in objects + list(doc.get("objects") or []):
        emu.add_object(copy.deepcopy(obj))


def snapshot(emu: KubeEmulator, namespace: str) -> dict[tuple[str, str], Obj]:
    return {(kind, o["metadata"]["name"]): o for api, kind in KINDS
            for o in emu.list_objects(api, kind, namespace)}


def lamia(*args: str) -> Result:
    return runner.invoke(app, list(args))


def app_args(case: Obj, kubeconfig: Path) -> list[str]:
    args = ["-n", case["namespace"], "--app", case["app"], "--kubeconfig", str(kubeconfig),
            "--context", "lamia-emulator"]
    return args + (["--service", case["service"]] if case.get("service") else [])


def weights_arg(weights: dict[str, int]) -> str:
    return ",".join(f"{v}={w}" for v, w in weights.items())


# --- what Lamia owns ----------------------------------------------------------------------------

_SERVER = ("resourceVersion", "generation", "managedFields", "uid", "creationTimestamp")


def _meta_view(obj: Obj) -> Obj:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER}
    for part in ("labels", "annotations"):
        kept = {k: v for k, v in (meta.get(part) or {}).items() if not k.startswith("lamia.io/")}
        if kept:
            meta[part] = kept
        else:
            meta.pop(part, None)
    return meta


def foreign_view(obj: Obj, case: Obj, *, before: bool) -> Obj:
    """``obj`` without what Lamia owns in it (see the module docstring)."""
    out = {"kind": obj["kind"], "metadata": _meta_view(obj), "spec": copy.deepcopy(obj.get("spec") or {})}
    spec = out["spec"]
    versions = set(case["versions"])
    if obj["kind"] == "VirtualService" and obj["metadata"]["name"] == case["virtual_service"]:
        http = spec.get("http") or []
        if before and not any(r.get("name") == "lamia-default" for r in http):
            # The catch-all Lamia adopts becomes its default route.
            adopted = next((r for r in http if matches_everything(r) and not r.get("name")), None)
            http = [r for r in http if r is not adopted]
        spec["http"] = [r for r in http if not str(r.get("name", "")).startswith("lamia-")]
    if obj["kind"] == "DestinationRule" and obj["metadata"]["name"] == case["destination_rule"]:
        subsets = []
        for s in spec.get("subsets") or []:
            if s.get("name") in versions:
                labels = {k: v for k, v in (s.get("labels") or {}).items() if k != "version"}
                s = {k: v for k, v in s.items() if k != "labels"} | ({"labels": labels} if labels else {})
                if set(s) == {"name"}:
                    continue  # a subset Lamia adds (or would add) for a version: Lamia's own
            subsets.append(s)
        spec["subsets"] = subsets
    return out


def lamia_weights(emu: KubeEmulator, case: Obj) -> dict[str, int]:
    vs = emu.get_object(ISTIO_API, "VirtualService", case["namespace"], case["virtual_service"])
    assert vs is not None
    (route,) = [r for r in vs["spec"]["http"] if r.get("name") == "lamia-default"]
    return {d["destination"]["subset"]: d["weight"] for d in route["route"]}


def check_foreign_untouched(emu: KubeEmulator, case: Obj, before: dict[tuple[str, str], Obj]) -> None:
    after = snapshot(emu, case["namespace"])
    for key, obj in before.items():
        assert key in after, f"{key} was deleted"
        assert foreign_view(after[key], case, before=False) == foreign_view(obj, case, before=True), key
    created = set(after) - set(before)
    assert created <= {("VirtualService", case["virtual_service"]),
                       ("DestinationRule", case["destination_rule"])}, created


def check_valid(emu: KubeEmulator, case: Obj, validator: IstioValidator) -> None:
    for kind in ("VirtualService", "DestinationRule"):
        for obj in emu.list_objects(ISTIO_API, kind, case["namespace"]):
            validator.validate(obj)


# --- the cases ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in CASES if load(n)["case"]["expect"] == "adopt"])
def test_adopted_gateway_keeps_everything_lamia_does_not_own(
    name: str, kube_emulator: KubeEmulator, kubeconfig: Path, istio_validator: IstioValidator
) -> None:
    doc = load(name)
    case = doc["case"]
    seed(kube_emulator, doc)
    before = snapshot(kube_emulator, case["namespace"])
    existing = ("VirtualService", case["virtual_service"]) in before
    args = app_args(case, kubeconfig)

    # Adopting an existing VirtualService changes no weight; a new one needs them.
    initial = {v: 100 if i == 0 else 0 for i, v in enumerate(case["versions"])}
    applied = lamia("gateway", "apply", *args) if existing else lamia(
        "gateway", "apply", *args, "--weights", weights_arg(initial))
    assert applied.exit_code == 0, applied.stderr
    check_foreign_untouched(kube_emulator, case, before)
    check_valid(kube_emulator, case, istio_validator)
    if existing:
        vs = before[("VirtualService", case["virtual_service"])]
        catch_all = next(r for r in vs["spec"]["http"] if matches_everything(r) and not r.get("name"))
        dests = catch_all["route"]
        was = {d["destination"]["subset"]: d.get("weight", 100 if len(dests) == 1 else 0) for d in dests}
        assert {v: w for v, w in lamia_weights(kube_emulator, case).items() if w} == {
            v: w for v, w in was.items() if w}, "adopting keeps the traffic where it was"

    asked = case["weights"]
    changed = lamia("weights", "set", *args, *(f"{v}={w}" for v, w in asked.items()))
    assert changed.exit_code == 0, changed.stderr
    assert lamia_weights(kube_emulator, case) == asked
    check_foreign_untouched(kube_emulator, case, before)
    check_valid(kube_emulator, case, istio_validator)
    vs = kube_emulator.get_object(ISTIO_API, "VirtualService", case["namespace"], case["virtual_service"])
    assert vs is not None
    if not (before.get(("VirtualService", case["virtual_service"])) or {}).get("spec", {}).get("hosts", True):
        assert "hosts" not in vs["spec"], "a delegate stays host-less"


@pytest.mark.parametrize("name", [n for n in CASES if load(n)["case"]["expect"] == "refuse"])
def test_refusal_is_one_line_exit_2_and_writes_nothing(
    name: str, kube_emulator: KubeEmulator, kubeconfig: Path
) -> None:
    doc = load(name)
    case = doc["case"]
    seed(kube_emulator, doc)
    before = snapshot(kube_emulator, case["namespace"])
    kube_emulator.requests.clear()
    args = app_args(case, kubeconfig)
    for result in (
        lamia("gateway", "apply", *args, "--weights", weights_arg(case["weights"])),
        lamia("weights", "set", *args, *(f"{v}={w}" for v, w in case["weights"].items())),
    ):
        assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
        assert result.stdout == ""
        assert result.stderr.startswith("lamia: error: ") and result.stderr.count("\n") == 1, result.stderr
        assert case["error"] in result.stderr, result.stderr
    assert [r for r in kube_emulator.requests if r[0] in WRITES] == []
    assert snapshot(kube_emulator, case["namespace"]) == before


@pytest.mark.integration
@pytest.mark.parametrize("name", [n for n in CASES if load(n)["case"].get("release")])
def test_a_short_release_promotes_on_the_adopted_gateway(
    name: str, prefect_server: Any, kube_emulator: KubeEmulator, kubeconfig: Path,
    istio_validator: IstioValidator,
) -> None:
    doc = load(name)
    case = doc["case"]
    seed(kube_emulator, doc)
    args = app_args(case, kubeconfig)
    baseline, target = case["release"]["baseline"], case["release"]["target"]
    start = {v: 100 if v == baseline else 0 for v in case["versions"]}
    assert lamia("gateway", "apply", *args, "--weights", weights_arg(start)).exit_code == 0
    before = snapshot(kube_emulator, case["namespace"])
    # The time policy needs no metrics: this is about the gateway, not the judge.
    state = canary_release(ReleaseParameters(
        namespace=case["namespace"], app=case["app"], service=case.get("service"), baseline=baseline,
        target=target, policy=TimePolicy(step=50, interval=0.3),
        kubernetes=KubeConfig(kubeconfig=str(kubeconfig), context="lamia-emulator"),
    ), return_state=True)
    assert run_outcome(state) is Outcome.PROMOTED, state.message
    assert lamia_weights(kube_emulator, case) == {v: 100 if v == target else 0 for v in case["versions"]}
    check_foreign_untouched(kube_emulator, case, before)
    check_valid(kube_emulator, case, istio_validator)
