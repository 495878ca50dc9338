"""Outages of what a release talks to, for real: Prefect's server stopped, Prometheus gone or
answering garbage, Slack hanging or rate limiting. Each must end in a defined outcome — the
release goes on when the service is back, or rolls back — never a half-shifted gateway with no
owner, a lease left behind or a stuck slot; Slack must never hold up a step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from flows._guard import ensure_limit, limit_name
from flows._history import run_outcome
from flows.params import ReleaseParameters, SlackSettings
from flows.release import canary_release
from lamia_core.istio import ISTIO_API
from lamia_core.kube import KubeAdapter
from lamia_core.lease import lease_of
from lamia_core.models import Gateway, Route, Weights
from lamia_core.outcome import Outcome
from lamia_core.policies import ComparePolicy, HealthPolicy, TimePolicy
from lamia_core.prometheus import PrometheusConfig
from lamia_sandbox._lifecycle import free_port
from lamia_sandbox.fake_slack import DEFAULT_TOKEN, FakeSlack
from lamia_sandbox.prefect_server import PrefectServer, client_settings
from lamia_sandbox.prometheus_proxy import PrometheusProxy
from lamia_sandbox.sandbox import Sandbox
from lamia_sandbox.simulator import VersionBehaviour
from tests.test_release_flow import Background, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

NS, APP = "shop", "cart"
VERSIONS = {"stable": VersionBehaviour(), "canary": VersionBehaviour()}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(NS, APP, VERSIONS, rate=150.0, seed=3) as sb:
        yield sb


@pytest.fixture(scope="module")
def own_prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server of this module's, so that stopping it hurts no other test."""
    # A fixed port: the server comes back where the release's client expects it.
    server = PrefectServer(tmp_path_factory.mktemp("outage-prefect"), port=free_port(), ui=False)
    with server, client_settings(server.env()):
        yield server


@pytest.fixture
def fresh(sandbox: Sandbox) -> Iterator[Sandbox]:
    with KubeAdapter(sandbox.kube) as kube:
        app = kube.discover_application(NS, APP)
        vs = kube.read_virtual_service(app)
        if vs is not None and lease_of(vs) is not None:
            vs["metadata"]["annotations"].pop("lamia.io/release")
            sandbox.emulator.replace_object(vs)
        kube.apply_gateway(Gateway(application=app, routes=(Route(weights=Weights.all_on("stable",
                                                                                         ["canary"])),)))
    yield sandbox


def weights(sb: Sandbox) -> tuple[dict[str, int], bool]:
    vs = sb.emulator.get_object(ISTIO_API, "VirtualService", NS, APP)
    assert vs is not None
    (route,) = [r for r in vs["spec"]["http"] if r.get("name") == "lamia-default"]
    return {d["destination"]["subset"]: d["weight"] for d in route["route"]}, lease_of(vs) is not None


def time_release(sb: Sandbox, **overrides: Any) -> ReleaseParameters:
    settings: dict[str, Any] = {"policy": TimePolicy(step=20, interval=2.0), "prometheus": sb.prometheus,
                                **overrides}
    return ReleaseParameters(namespace=NS, app=APP, baseline="stable", target="canary", kubernetes=sb.kube,
                             **settings)


def busy_slots() -> int:
    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(limit_name(NS, APP)).active_slots
        except ObjectNotFound:
            return 0


def assert_defined_end(sb: Sandbox) -> dict[str, int]:
    now, leased = weights(sb)
    assert now in ({"stable": 100, "canary": 0}, {"stable": 0, "canary": 100}), f"half-shifted: {now}"
    assert not leased, "the lease is left behind"
    return now


def assert_next_release_accepted(sb: Sandbox) -> None:
    with KubeAdapter(sb.kube) as kube:
        kube.set_weights(kube.discover_application(NS, APP), Weights.all_on("stable", ["canary"]))
    state = canary_release(time_release(sb, policy=TimePolicy(step=50, interval=0.3)), return_state=True)
    assert run_outcome(state) is Outcome.PROMOTED, state.message
    assert busy_slots() == 0, "the slot is given back"


# --- Slack ----------------------------------------------------------------------------------------


def _first_step_before_slack(sb: Sandbox, slack: FakeSlack) -> None:
    """Run a release and see where Slack stood when its first step was written."""
    seen: list[int] = []

    def watch() -> None:
        while weights(sb)[0]["canary"] == 0:
            time.sleep(0.01)
        seen.append(len(slack.messages))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    params = time_release(sb, policy=TimePolicy(step=50, interval=0.5),
                          slack=SlackSettings(channel="#releases", base_url=slack.api_url))
    state = canary_release(params, return_state=True)
    watcher.join(timeout=10)
    assert run_outcome(state) is Outcome.PROMOTED, state.message
    assert seen == [0], "the first step was written while Slack still had not taken the first message"


def test_a_hanging_slack_holds_up_no_step(
    own_prefect: PrefectServer, fresh: Sandbox, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", DEFAULT_TOKEN)
    fake_slack.delay = 8.0
    _first_step_before_slack(fresh, fake_slack)
    assert_defined_end(fresh)


def test_slack_rate_limiting_holds_up_no_step(
    own_prefect: PrefectServer, fresh: Sandbox, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", DEFAULT_TOKEN)
    fake_slack.rate_limit(1, retry_after=5)
    _first_step_before_slack(fresh, fake_slack)
    first = fake_slack.messages[0]
    assert "started" in first.text and all(m.thread_ts == first.ts for m in fake_slack.messages[1:])


# --- Prefect --------------------------------------------------------------------------------------


@pytest.mark.parametrize("outage", [5.0, 60.0], ids=["5s", "60s"])
def test_prefect_stopped_mid_release_leaves_a_defined_end_and_no_stuck_slot(
    own_prefect: PrefectServer, fresh: Sandbox, outage: float
) -> None:
    run = Background(lambda: canary_release(time_release(fresh), return_state=True))
    wait_until(lambda: weights(fresh)[0]["canary"] > 0, what="the first step")
    own_prefect.stop()
    time.sleep(outage)
    own_prefect.start()
    try:
        state = run.join(timeout=240)
        outcome = state.name
    except Exception as exc:  # the run could not even report how it ended: what is on the cluster counts
        outcome = f"failed to report ({type(exc).__name__})"
    end = assert_defined_end(fresh)
    print(f"Prefect down {outage:g} s: {outcome}, gateway {end}")
    assert_next_release_accepted(fresh)


# --- Prometheus -----------------------------------------------------------------------------------


def _health(proxy: PrometheusProxy, **settings: Any) -> HealthPolicy:
    return HealthPolicy(step=25, interval=1.5, window="10s", min_requests=5, scrape_interval=1.0, **settings)


def test_prometheus_stopped_for_30_s_holds_the_release_which_goes_on(
    own_prefect: PrefectServer, fresh: Sandbox
) -> None:
    with PrometheusProxy(fresh.prometheus.url) as proxy:
        params = time_release(fresh, policy=_health(proxy),
                              prometheus=PrometheusConfig(url=proxy.url, timeout=2))
        run = Background(lambda: canary_release(params, return_state=True))
        wait_until(lambda: weights(fresh)[0]["canary"] > 0, what="the first step")
        proxy.go_down()
        held = weights(fresh)[0]
        time.sleep(30)
        assert weights(fresh)[0] == held, "nothing moves without metrics"
        proxy.come_back()
        state = run.join(timeout=120)
    assert run_outcome(state) is Outcome.PROMOTED, state.message
    assert_defined_end(fresh)


def test_prometheus_answering_garbage_ends_by_the_progress_deadline_with_the_reason(
    own_prefect: PrefectServer, fresh: Sandbox
) -> None:
    with PrometheusProxy(fresh.prometheus.url) as proxy:
        proxy.mode = "html"
        params = time_release(fresh, policy=_health(proxy, progress_deadline=6),
                              prometheus=PrometheusConfig(url=proxy.url, timeout=2))
        state = canary_release(params, return_state=True)
        assert proxy.served["html"] > 0
    assert run_outcome(state) is Outcome.ROLLED_BACK, state.message
    assert "not a query result" in (state.message or "") and "progress deadline" in (state.message or "")
    assert assert_defined_end(fresh) == {"stable": 100, "canary": 0}
    assert busy_slots() == 0


def test_a_slot_left_busy_with_no_lease_holder_does_not_block_the_next_release(
    own_prefect: PrefectServer, fresh: Sandbox
) -> None:
    # What a release leaves when it could not give its slot back (the server was away as it
    # ended): the slot busy for minutes, and no lease on the cluster.
    ensure_limit(limit_name(NS, APP))
    with get_client(sync_client=True) as client:
        client.increment_concurrency_slots_with_lease([limit_name(NS, APP)], 1, "concurrency", 600)
    assert busy_slots() == 1 and not weights(fresh)[1]
    assert_next_release_accepted(fresh)


@pytest.mark.parametrize("kind", ["compare", "health"])
def test_a_prometheus_without_the_apps_series_says_which_series_it_lacks(
    own_prefect: PrefectServer, fresh: Sandbox, kind: str
) -> None:
    """Prometheus answers, but with no series of the app (it scrapes no sidecar): "no data" names the
    series looked for, and the release ends by the deadline with the baseline back."""
    with PrometheusProxy(fresh.prometheus.url) as proxy:
        proxy.mode = "empty"
        policy = (_health(proxy, progress_deadline=6) if kind == "health" else
                  ComparePolicy(step=25, interval=1.5, scrape_interval=1.0, progress_deadline=6))
        params = time_release(fresh, policy=policy, prometheus=PrometheusConfig(url=proxy.url, timeout=2))
        state = canary_release(params, return_state=True)
        assert proxy.served["empty"] > 0
    assert run_outcome(state) is Outcome.ROLLED_BACK, state.message
    message = state.message or ""
    assert "has no series istio_requests_total{" in message and f'destination_app="{fresh.app}"' in message
    assert "progress deadline" in message
    assert assert_defined_end(fresh) == {"stable": 100, "canary": 0}
