"""`lamia release ...`: start, watch, approve, abort and list releases through the Prefect API."""

from __future__ import annotations

from typing import Annotated, Any, cast

import typer
from pydantic import TypeAdapter, ValidationError

from flows.cli._app import app, release_app
from flows.cli._common import fail, handle_errors
from flows.cli._options import ClusterOpt, ContextOpt, KubeconfigOpt, NamespaceOpt, ServiceOpt
from flows.cli.clusters import for_worker, kube_config, prometheus_for
from lamia_core.errors import InvalidInput
from lamia_core.kube import KubeAdapter, KubeConfig

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
    return params if measured is None else params.with_scrape_interval(measured)


@release_app.command("start")
@handle_errors
def start(
    namespace: NamespaceOpt,
    app_name: Annotated[str, typer.Option("--app", "-a", help="The application (value of the `app` label)")],
    baseline: Annotated[str, typer.Option("--baseline", help="Version serving traffic now")],
    target: Annotated[str, typer.Option("--target", help="Version to release")],
    service: ServiceOpt = None,
    policy: Annotated[
        str, typer.Option("--policy", help="compare, time, health, metric or custom")
    ] = "compare",
    step: Annotated[
        int | None, typer.Option("--step", help="Percentage points per step (default 10)")
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option("--interval", help="Seconds between checks (default 15 for compare, 10 otherwise)"),
    ] = None,
    max_weight: Annotated[
        int | None, typer.Option("--max-weight", help="Highest weight of the target")
    ] = None,
    final_action: Annotated[
        str | None, typer.Option("--final-action", help="promote or hold at max weight")
    ] = None,
    progress_deadline: Annotated[
        float | None,
        typer.Option("--progress-deadline", help="Roll back after this many seconds without a weight change"),
    ] = None,
    window: Annotated[
        str | None, typer.Option("--window", help="Prometheus query window (default 1m)")
    ] = None,
    min_requests: Annotated[
        int | None, typer.Option("--min-requests", help="Requests needed for a verdict")
    ] = None,
    no_data: Annotated[str | None, typer.Option("--no-data", help="hold or fail")] = None,
    failure_limit: Annotated[
        int | None, typer.Option("--failure-limit", help="Failures before rollback")
    ] = None,
    failure_mode: Annotated[str | None, typer.Option("--failure-mode", help="consecutive or total")] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="health: healthy at >= this (<= with --direction lower)"),
    ] = None,
    direction: Annotated[
        str | None,
        typer.Option(
            "--direction",
            help="health, metric: 'higher' is better (success ratios, the default) or 'lower' (latency, "
            "errors), e.g. --expression request_duration_p99 --threshold 500 --direction lower",
        ),
    ] = None,
    expression: Annotated[
        str | None, typer.Option("--expression", help="health/metric: metric expression")
    ] = None,
    program: Annotated[str | None, typer.Option("--program", help="custom: the program text")] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(
            "--tolerance", help="compare: points of errors above the baseline's that still pass (default 0)"
        ),
    ] = None,
    confidence: Annotated[
        float | None,
        typer.Option("--confidence", help="compare: confidence of a rollback or a promotion (default 0.99)"),
    ] = None,
    latency_gate: Annotated[
        bool | None,
        typer.Option("--latency/--no-latency", help="compare: judge request durations too (default on)"),
    ] = None,
    errors_gate: Annotated[
        bool | None, typer.Option("--errors/--no-errors", help="compare: judge 5xx answers (default on)")
    ] = None,
    latency_tolerance: Annotated[
        float | None,
        typer.Option(
            "--latency-tolerance", help="compare: points of slow requests above the baseline's (default 5)"
        ),
    ] = None,
    scrape_interval: Annotated[
        float | None,
        typer.Option(
            "--scrape-interval", help="Prometheus' scrape interval in seconds (default 15; read from it)"
        ),
    ] = None,
    condition: Annotated[
        str | None, typer.Option("--condition", help="Only requests matching this take part")
    ] = None,
    prometheus: Annotated[
        str | None,
        typer.Option(
            "--prometheus", envvar="LAMIA_PROMETHEUS_URL", help="Prometheus URL; default the --cluster's"
        ),
    ] = None,
    slack_channel: Annotated[
        str | None,
        typer.Option(
            "--slack-channel", help="Notify this channel (token from SLACK_BOT_TOKEN or --slack-token-block)"
        ),
    ] = None,
    slack_token_block: Annotated[
        str | None, typer.Option("--slack-token-block", help="Prefect Secret block name")
    ] = None,
    approval: Annotated[
        bool,
        typer.Option("--approval", help="Wait for `lamia release approve` before going past --approval-at"),
    ] = False,
    approval_at: Annotated[
        int | None,
        typer.Option(
            "--approval-at",
            min=1,
            max=100,
            help="The target's weight at which to wait for approval (default: the step before the last)",
        ),
    ] = None,
    on_worker_loss: Annotated[
        str,
        typer.Option(
            "--on-worker-loss",
            help="If the process running the release dies: rollback (default) or resume from the last step",
        ),
    ] = "rollback",
    worker_loss_timeout: Annotated[
        float | None,
        typer.Option(
            "--worker-loss-timeout",
            help="Seconds without a heartbeat after which the process counts as dead (default 3 intervals, "
            "at least 30)",
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Follow the release (as `lamia release watch`): exit 0 when promoted or held "
            "as asked, 1 rolled back or failed, 3 when --timeout passes",
        ),
    ] = False,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="With --wait: stop following after this long")
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Run the flow in this process instead of a deployment")
    ] = False,
    deployment: Annotated[str, typer.Option("--deployment", help="Deployment to trigger")] = DEPLOYMENT,
    cluster: ClusterOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> None:
    """Start a canary release of TARGET against BASELINE."""
    from flows.params import ReleaseParameters, SlackSettings
    from lamia_core.prometheus import PrometheusConfig

    # The run resolves the cluster by name (its credentials stay out of the parameters); resolving it
    # here too refuses a bad name, or --cluster with --kubeconfig, before anything starts.
    kube = kube_config(cluster, kubeconfig, context)
    prometheus = prometheus_for(cluster, prometheus)
    if prometheus is None:
        raise InvalidInput(
            "say which Prometheus: --prometheus URL (or $LAMIA_PROMETHEUS_URL), or --cluster "
            "NAME of a cluster saved with one"
        )

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
        from flows.cli.runs import exit_code_of
        from flows.release import canary_release

        state = canary_release(params, return_state=True)
        print(f"{state.name}: {state.message}")
        raise typer.Exit(exit_code_of(state))
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        run = cast(
            FlowRun,
            run_deployment(deployment, parameters={"params": params.model_dump(mode="json")}, timeout=0),
        )
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
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="Only this namespace")] = None,
    cluster: ClusterOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> None:
    """Put right, now, every release whose worker died (what the lamia-reconcile deployment does every
    30 s): restore its baseline or resume it, and free its slot. Without --cluster, --kubeconfig or
    --context: every saved cluster, or the current kubeconfig when none is saved."""
    from flows.reconcile import ReconcileParameters, reconcile

    given = cluster is None and (kubeconfig is not None or context is not None)
    params = ReconcileParameters(
        cluster=cluster,
        namespace=namespace,
        kubernetes=KubeConfig(kubeconfig=kubeconfig, context=context) if given else None,
    )
    state = reconcile(params, return_state=True)
    rows: Any = state.result(raise_on_failure=False) if state.is_completed() else []
    for row in rows if isinstance(rows, list) else []:
        print(f"{row['app']}: {row['action']}: {row['reason']}")
    print(state.message or state.name)
    raise typer.Exit(0 if state.is_completed() else 1)


@app.command("serve")
def serve(limit: Annotated[int, typer.Option("--limit", help="Flow runs at once")] = 4) -> None:
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
        deployments.append(
            cast(
                RunnerDeployment,
                reconcile.to_deployment(name="lamia-reconcile", tags=["lamia", "supervisor"], interval=30),
            )
        )
        prefect_serve(*deployments, limit=limit)
    except KeyboardInterrupt:
        raise fail("stopped", 0) from None
