"""Releases beside other writers, for real: a Prefect server, the emulator, kubectl as the other writer.

- the CLI (a person) cannot write past a running release's lease;
- a `kubectl apply` of the user's own file mid-release (client-side apply replaces the whole
  http list) ends the release Interrupted, with the other writer's weights left as they are;
- a conditional route deleted mid-release is reported as that, and nothing of Lamia's stays.

The releases use the time policy: this is about writers, not metrics.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from flows._history import run_outcome
from flows.cli import app as cli
from flows.params import ReleaseParameters, SlackSettings
from flows.release import canary_release, outcome_of
from lamia_core.istio import CONDITIONS_ANNOTATION, ISTIO_API
from lamia_core.kube import KubeConfig
from lamia_core.lease import LEASE_ANNOTATION, lease_of
from lamia_core.outcome import Outcome
from lamia_core.policies import TimePolicy
from lamia_sandbox.fake_slack import DEFAULT_TOKEN, FakeSlack
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.seed import seed_application
from tests.test_release_flow import Background, artifacts, events, flow_run_id, table_rows, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH"),
]

NS, APP = "shop", "cart"
VERSIONS = ["stable", "canary"]
runner = CliRunner()

USER_FILE: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": APP, "namespace": NS},
    "spec": {
        "hosts": [APP],
        "http": [{
            "retries": {"attempts": 2, "perTryTimeout": "2s"},
            "route": [
                {"destination": {"host": APP, "subset": "stable"}, "weight": 100},
                {"destination": {"host": APP, "subset": "canary"}, "weight": 0},
            ],
        }],
    },
}


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> None:
    proc = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], input=stdin, text=True,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def apply_file(kubeconfig: Path, doc: dict[str, Any]) -> None:
    kubectl(kubeconfig, "apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(doc))


@pytest.fixture
def cart(kube_emulator: KubeEmulator, kubeconfig: Path) -> KubeEmulator:
    """The app with its VirtualService as the user applied it with kubectl, adopted by Lamia."""
    seed_application(kube_emulator, NS, APP, VERSIONS)
    apply_file(kubeconfig, USER_FILE)
    applied = runner.invoke(cli, ["gateway", "apply", "-n", NS, "-a", APP, "--kubeconfig", str(kubeconfig)])
    assert applied.exit_code == 0, applied.stderr
    return kube_emulator


def vs(emu: KubeEmulator) -> dict[str, Any]:
    obj = emu.get_object(ISTIO_API, "VirtualService", NS, APP)
    assert obj is not None
    return obj


def route_weights(emu: KubeEmulator, name: str) -> dict[str, int] | None:
    for r in vs(emu)["spec"]["http"]:
        if r.get("name") == name:
            return {d["destination"]["subset"]: d["weight"] for d in r["route"]}
    return None


def canary_weight(emu: KubeEmulator, route: str) -> int:
    return (route_weights(emu, route) or {}).get("canary", 0)


def release(kubeconfig: Path, *, interval: float = 1.5, slack: FakeSlack | None = None,
            **overrides: Any) -> Background:
    params = ReleaseParameters(
        namespace=NS, app=APP, baseline="stable", target="canary",
        policy=TimePolicy(step=20, interval=interval),
        kubernetes=KubeConfig(kubeconfig=str(kubeconfig), context="lamia-emulator"),
        slack=SlackSettings(channel="#releases", base_url=slack.api_url) if slack else None,
        **overrides,
    )
    return Background(lambda: canary_release(params, return_state=True))


def test_cli_writes_are_refused_while_a_release_holds_the_lease(
    prefect_server: Any, cart: KubeEmulator, kubeconfig: Path
) -> None:
    run = release(kubeconfig, interval=2.0)
    wait_until(lambda: canary_weight(cart, "lamia-default") > 0, what="the first step")
    holder = lease_of(vs(cart))
    assert holder is not None
    before = vs(cart)["metadata"]["resourceVersion"]
    args = ["-n", NS, "-a", APP, "--kubeconfig", str(kubeconfig)]
    for attempt in (["weights", "set", *args, "stable=100", "canary=0"],
                    ["gateway", "apply", *args, "--weights", "stable=100,canary=0"]):
        result = runner.invoke(cli, attempt)
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1, result.stderr
        assert holder.name in result.stderr and "lamia release abort cart --namespace shop" in result.stderr
    # Only Lamia's own release writes meanwhile: the person's refused writes changed nothing.
    state = run.join()
    assert run_outcome(state) is Outcome.PROMOTED, state.message
    assert int(vs(cart)["metadata"]["resourceVersion"]) > int(before)
    assert route_weights(cart, "lamia-default") == {"stable": 0, "canary": 100}


def test_kubectl_apply_mid_release_interrupts_it_leaving_their_weights(
    prefect_server: Any, cart: KubeEmulator, kubeconfig: Path, fake_slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", DEFAULT_TOKEN)
    run = release(kubeconfig, slack=fake_slack)
    wait_until(lambda: canary_weight(cart, "lamia-default") > 0, what="the first step")

    # The user's pipeline applies their file again, edited to 90/10.
    theirs = json.loads(json.dumps(USER_FILE))
    theirs["spec"]["http"][0]["route"][0]["weight"], theirs["spec"]["http"][0]["route"][1]["weight"] = 90, 10
    apply_file(kubeconfig, theirs)
    after_kubectl = vs(cart)
    state = run.join()

    assert run_outcome(state) is Outcome.INTERRUPTED, state.message
    assert state.is_failed(), "a CI gate on this run fails"
    assert "route 'default' was removed" in (state.message or "")
    assert "kubectl-client-side-apply" in (state.message or "")
    now = vs(cart)
    assert now["spec"] == after_kubectl["spec"] == theirs["spec"], "Lamia wrote nothing after their change"
    assert LEASE_ANNOTATION not in (now["metadata"].get("annotations") or {}), "the lease is given back"
    outcome = outcome_of(state)
    assert outcome["outcome"] == "interrupted"

    rows = table_rows(artifacts(flow_run_id(state))["table"])
    assert rows[-1]["decision"] == "interrupted"
    assert "kubectl-client-side-apply" in rows[-1]["reason"]
    assert [r["decision"] for r in rows[:-1]] == ["set_weights"] * (len(rows) - 1), "no verdict after it"
    names = events(f"lamia.app.{NS}.{APP}", flow_run_id(state), final=("lamia.release.interrupted",))
    assert "lamia.release.interrupted" in names and "lamia.release.failed" not in names
    assert "interrupted by another writer" in fake_slack.messages[-1].text


def test_a_conditional_route_deleted_mid_release_is_reported_and_nothing_of_lamias_stays(
    prefect_server: Any, cart: KubeEmulator, kubeconfig: Path
) -> None:
    run = release(kubeconfig, condition='header "User-Agent" regex "^.*(Chrome).*$"')
    wait_until(lambda: canary_weight(cart, "lamia-canary") > 0, what="the first step")
    assert json.loads(vs(cart)["metadata"]["annotations"][CONDITIONS_ANNOTATION]) == {
        "canary": 'header "User-Agent" regex "^.*(Chrome).*$"'}
    kubectl(kubeconfig, "patch", "virtualservice", APP, "-n", NS, "--type=json",
            "-p", '[{"op": "remove", "path": "/spec/http/0"}]')
    state = run.join()

    assert run_outcome(state) is Outcome.INTERRUPTED, state.message
    message = state.message or ""
    assert "route 'canary' was removed" in message and "kubectl-patch" in message
    assert "restor" not in message, "not reported as a failed restore"
    now = vs(cart)
    assert [r["name"] for r in now["spec"]["http"]] == ["lamia-default"]
    assert route_weights(cart, "lamia-default") == {"stable": 100, "canary": 0}, "everyone else untouched"
    annotations = now["metadata"].get("annotations") or {}
    assert LEASE_ANNOTATION not in annotations and CONDITIONS_ANNOTATION not in annotations
