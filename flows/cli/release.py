"""`lamia release ...`: start, watch, approve, abort and list releases through the Prefect API."""

from __future__ import annotations

from typing import Any, cast

import typer
from pydantic import TypeAdapter, ValidationError

from flows.cli._app import app, release_app
from flows.cli._common import fail, handle_errors
from flows.cli.clusters import for_worker, kube_config, prometheus_for
from lamia_core.errors import InvalidInput
from lamia_core.kube import KubeAdapter, KubeConfig

NamespaceOpt = typer.Option(..., "--namespace", "-n", help="Namespace of the application")
KubeconfigOpt = typer.Option(None, "--kubeconfig", envvar="KUBECONFIG", help="kubeconfig file")
ContextOpt = typer.Option(None, "--context", help="kubeconfig context")
ClusterOpt = typer.Option(None, "--cluster", help="A saved cluster: lamia cluster add")
DEPLOYMENT = "canary-release/canary-release"


def build_policy(kind: str, settings: dict[str, Any]) -> Any:
    """Validate a policy from CLI options; only the options given override the defaults."""
    import difflib

    from lamia_core.policies import Policy, policy_kinds

    kinds = policy_kinds()
    if kind not in kinds:
        close = difflib.get_close_matches(kind, list(kinds), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InvalidInput(f"unknown policy {kind!r}{hint}; the policies are: {', '.join(kinds)}")
    given = {k: v for k, v in settings.items() if v is not None}
    foreign = sorted(k for k in given if k not in kinds[kind])
    if foreign:
        options = ", ".join(f"--{k.replace('_', '-')}" for k in foreign)
        raise InvalidInput(f"{options} do{'es' if len(foreign) == 1 else ''} not apply to a {kind} policy "
                           f"(its settings: {', '.join('--' + k.replace('_', '-') for k in kinds[kind])})")
    try:
        return TypeAdapter(Policy).validate_python({"kind": kind, **given})
    except ValidationError as exc:  # say which option is wrong, in the option's name
        parts = [
            f"--{'-'.join(str(p) for p in e['loc'][1:] or e['loc']).replace('_', '-')}: {e['msg']}"
            for e in exc.errors()
        ]
        raise InvalidInput(f"invalid {kind} policy: " + "; ".join(parts)) from None


def _preflight(params: Any, kube: KubeConfig) -> None:
    """What the flow would refuse, refused here before anything is triggered: the cluster's app, its
    versions and gateway, the baseline serving the route, the policy, no release running."""
    import time as clock

    from flows._guard import run_info
    from flows.release import preflight
    from lamia_core.recovery import RunInfo

    with KubeAdapter(kube) as adapter:
        application = adapter.discover_application(params.namespace, params.app, service=params.service)
        gateway = adapter.read_gateway(application)
        if gateway is None:
            raise adapter.no_gateway(application)
        lease = adapter.read_lease(application)
    run = None
    if lease is not None:
        try:
            run = run_info(lease.holder)
        except Exception:  # Prefect away: the heartbeat on the cluster decides alone
            run = RunInfo(found=False)
    preflight(_measured(params), application, gateway, lease, now=clock.time(), run=run)


def _measured(params: Any) -> Any:
    """The parameters with the scrape interval Prometheus reports, as the flow will use it, when this
    process can reach Prometheus at once (a laptop often cannot: then the policy's setting counts)."""
    from lamia_core.errors import LamiaError
    from lamia_core.prometheus import PrometheusAdapter

    if not params.policy.observes or "scrape_interval" in params.policy.model_fields_set:
        return params
    quick = params.prometheus.model_copy(update={"timeout": 2.0})
    try:
        measured = PrometheusAdapter(quick).scrape_interval(params.namespace, params.app)
    except LamiaError:
        return params
    if measured is None:
        return params
    policy = type(params.policy).model_validate({**params.policy.model_dump(), "scrape_interval": measured})
    return params.model_copy(update={"policy": policy})


def _final_exit(state: Any) -> int:
    """The exit code of a finished run: 0 when what was asked for happened (promoted, held as the
    policy asked, a manual change applied), the same as `prefect deployment run --watch`; else 1."""
    from lamia_core.outcome import Outcome

    outcome = Outcome.from_state_name(getattr(state, "name", None)) if state is not None else None
    if outcome is not None:
        return outcome.exit_code
    return 0 if state is not None and state.is_completed() else 1


@release_app.command("start")
@handle_errors
def start(
    namespace: str = NamespaceOpt,
    app_name: str = typer.Option(..., "--app", "-a", help="The application (value of the `app` label)"),
    service: str | None = typer.Option(
        None, "--service", help="The Service in front of the application, when several select it"
    ),
    baseline: str = typer.Option(..., "--baseline", help="Version serving traffic now"),
    target: str = typer.Option(..., "--target", help="Version to release"),
    policy: str = typer.Option("compare", "--policy", help="compare, time, health, metric or custom"),
    step: int | None = typer.Option(None, "--step", help="Percentage points per step (default 10)"),
    interval: float | None = typer.Option(
        None, "--interval", help="Seconds between checks (default 15 for compare, 10 otherwise)"
    ),
    max_weight: int | None = typer.Option(None, "--max-weight", help="Highest weight of the target"),
    final_action: str | None = typer.Option(None, "--final-action", help="promote or hold at max weight"),
    progress_deadline: float | None = typer.Option(
        None, "--progress-deadline", help="Roll back after this many seconds without a weight change"
    ),
    window: str | None = typer.Option(None, "--window", help="Prometheus query window (default 1m)"),
    min_requests: int | None = typer.Option(None, "--min-requests", help="Requests needed for a verdict"),
    no_data: str | None = typer.Option(None, "--no-data", help="hold or fail"),
    failure_limit: int | None = typer.Option(None, "--failure-limit", help="Failures before rollback"),
    failure_mode: str | None = typer.Option(None, "--failure-mode", help="consecutive or total"),
    threshold: float | None = typer.Option(
        None, "--threshold", help="health: healthy at >= this (<= with --direction lower)"),
    direction: str | None = typer.Option(
        None, "--direction",
        help="health, metric: 'higher' is better (success ratios, the default) or 'lower' (latency, errors), "
        "e.g. --expression request_duration_p99 --threshold 500 --direction lower"),
    expression: str | None = typer.Option(None, "--expression", help="health/metric: metric expression"),
    program: str | None = typer.Option(None, "--program", help="custom: the program text"),
    tolerance: float | None = typer.Option(
        None, "--tolerance", help="compare: points of errors above the baseline's that still pass (default 0)"
    ),
    confidence: float | None = typer.Option(
        None, "--confidence", help="compare: confidence of a rollback or a promotion (default 0.99)"
    ),
    latency_gate: bool | None = typer.Option(
        None, "--latency/--no-latency", help="compare: judge request durations too (default on)"
    ),
    errors_gate: bool | None = typer.Option(
        None, "--errors/--no-errors", help="compare: judge 5xx answers (default on)"
    ),
    latency_tolerance: float | None = typer.Option(
        None, "--latency-tolerance", help="compare: points of slow requests above the baseline's (default 5)"
    ),
    scrape_interval: float | None = typer.Option(
        None, "--scrape-interval", help="Prometheus' scrape interval in seconds (default 15; read from it)"
    ),
    condition: str | None = typer.Option(None, "--condition", help="Only requests matching this take part"),
    prometheus: str | None = typer.Option(
        None, "--prometheus", envvar="LAMIA_PROMETHEUS_URL", help="Prometheus URL; default the --cluster's"
    ),
    slack_channel: str | None = typer.Option(
        None,
        "--slack-channel",
        help="Notify this channel (token from SLACK_BOT_TOKEN or --slack-token-block)",
    ),
    slack_token_block: str | None = typer.Option(
        None, "--slack-token-block", help="Prefect Secret block name"
    ),
    approval: bool = typer.Option(
        False, "--approval", help="Wait for `lamia release approve` before going past --approval-at"
    ),
    approval_at: int | None = typer.Option(
        None, "--approval-at", min=1, max=100,
        help="The target's weight at which to wait for approval (default: the step before the last)"),
    on_worker_loss: str = typer.Option(
        "rollback", "--on-worker-loss",
        help="If the process running the release dies: rollback (default) or resume from the last step",
    ),
    worker_loss_timeout: float | None = typer.Option(
        None, "--worker-loss-timeout",
        help="Seconds without a heartbeat after which the process counts as dead (default 3 intervals, "
        "at least 30)",
    ),
    wait: bool = typer.Option(
        False, "--wait", help="Follow the release (as `lamia release watch`): exit 0 when promoted or held "
        "as asked, 1 rolled back or failed, 3 when --timeout passes"),
    timeout: float | None = typer.Option(
        None, "--timeout", help="With --wait: stop following after this long"),
    local: bool = typer.Option(False, "--local", help="Run the flow in this process instead of a deployment"),
    deployment: str = typer.Option(DEPLOYMENT, "--deployment", help="Deployment to trigger"),
    cluster: str | None = ClusterOpt,
    kubeconfig: str | None = KubeconfigOpt,
    context: str | None = ContextOpt,
) -> None:
    """Start a canary release of TARGET against BASELINE."""
    from flows.params import ReleaseParameters, SlackSettings
    from lamia_core.prometheus import PrometheusConfig

    # The run resolves the cluster by name (its credentials stay out of the parameters); resolving it
    # here too refuses a bad name, or --cluster with --kubeconfig, before anything starts.
    kube = kube_config(cluster, kubeconfig, context)
    prometheus = prometheus_for(cluster, prometheus)
    if prometheus is None:
        raise InvalidInput("say which Prometheus: --prometheus URL (or $LAMIA_PROMETHEUS_URL), or --cluster "
                           "NAME of a cluster saved with one")

    settings = {
        "step": step,
        "interval": interval,
        "max_weight": max_weight,
        "final_action": final_action,
        "progress_deadline": progress_deadline,
        "window": window,
        "min_requests": min_requests,
        "no_data": no_data,
        "failure_limit": failure_limit,
        "failure_mode": failure_mode,
        "threshold": threshold,
        "direction": direction,
        "expression": expression,
        "program": program,
        "tolerance": tolerance,
        "confidence": confidence,
        "latency": latency_gate,
        "errors": errors_gate,
        "latency_tolerance": latency_tolerance,
        "scrape_interval": scrape_interval,
    }
    params = ReleaseParameters(
        namespace=namespace,
        app=app_name,
        service=service,
        baseline=baseline,
        target=target,
        policy=build_policy(policy, settings),
        condition=condition,
        prometheus=PrometheusConfig(url=prometheus),
        cluster=cluster,
        kubernetes=KubeConfig() if cluster else kube if local else for_worker(kube),
        slack=SlackSettings(channel=slack_channel, token_secret_block=slack_token_block)
        if slack_channel or slack_token_block
        else None,
        approval=approval,
        approval_at=approval_at,
        on_worker_loss=on_worker_loss,
        worker_loss_timeout=worker_loss_timeout,
    )
    _preflight(params, kube)
    if local:
        from flows.release import canary_release

        state = canary_release(params, return_state=True)
        print(f"{state.name}: {state.message}")
        raise typer.Exit(_final_exit(state))
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        run = cast(FlowRun, run_deployment(deployment, parameters={"params": params.model_dump(mode="json")},
                                           timeout=0))
    except ObjectNotFound:
        from prefect.settings import PREFECT_API_URL

        server = PREFECT_API_URL.value() or "(none set)"
        raise InvalidInput(
            f"no deployment {deployment!r} on the Prefect server at {server}: serve Lamia's deployments with "
            "`lamia serve`, or deploy them with `prefect deploy --all` and start a worker (README, 'Releases "
            "as Prefect deployments'); or run the release here with --local"
        ) from None
    print(f"started flow run {run.name} ({run.id}) of {deployment}")
    if wait:
        from flows.cli.runs import follow

        raise typer.Exit(follow(run.id, namespace, app_name, timeout=timeout))


@app.command("reconcile")
@handle_errors
def reconcile_cmd(
    namespace: str | None = typer.Option(None, "--namespace", "-n", help="Only this namespace"),
    cluster: str | None = ClusterOpt,
    kubeconfig: str | None = KubeconfigOpt,
    context: str | None = ContextOpt,
) -> None:
    """Put right, now, every release whose worker died (what the lamia-reconcile deployment does every
    30 s): restore its baseline or resume it, and free its slot. Without --cluster, --kubeconfig or
    --context: every saved cluster, or the current kubeconfig when none is saved."""
    from flows.reconcile import ReconcileParameters, reconcile

    given = cluster is None and (kubeconfig is not None or context is not None)
    params = ReconcileParameters(
        cluster=cluster, namespace=namespace,
        kubernetes=KubeConfig(kubeconfig=kubeconfig, context=context) if given else None,
    )
    state = reconcile(params, return_state=True)
    rows: Any = state.result(raise_on_failure=False) if state.is_completed() else []
    for row in rows if isinstance(rows, list) else []:
        print(f"{row['app']}: {row['action']}: {row['reason']}")
    print(state.message or state.name)
    raise typer.Exit(0 if state.is_completed() else 1)


@app.command("serve")
def serve(limit: int = typer.Option(4, "--limit", help="Flow runs at once")) -> None:
    """Serve Lamia's deployments here (no work pool): canary-release, set-weights, apply-route, expose,
    and lamia-reconcile every 30 s."""
    from prefect import serve as prefect_serve
    from prefect.deployments.runner import RunnerDeployment

    from flows.expose import expose
    from flows.manual import apply_route_flow, set_weights
    from flows.reconcile import reconcile
    from flows.release import canary_release

    try:
        deployments = [
            cast(RunnerDeployment, f.to_deployment(name=name, tags=["lamia"]))
            for f, name in (
                (canary_release, "canary-release"),
                (set_weights, "set-weights"),
                (apply_route_flow, "apply-route"),
                (expose, "expose"),
            )
        ]
        # The supervisor, every 30 s: a release whose process dies is put right without a person.
        deployments.append(cast(RunnerDeployment, reconcile.to_deployment(
            name="lamia-reconcile", tags=["lamia", "supervisor"], interval=30)))
        prefect_serve(*deployments, limit=limit)
    except KeyboardInterrupt:
        raise fail("stopped", 0) from None
