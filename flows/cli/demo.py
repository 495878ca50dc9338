"""`lamia demo`: the whole release story in a local sandbox, shown in the Prefect UI."""

from __future__ import annotations

import typer

from flows.cli._app import app
from flows.cli._common import fail, handle_errors


@app.command("demo")
@handle_errors
def demo(
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON report on stdout (progress on stderr)"
    ),
    keep: bool = typer.Option(False, "--keep", help="Keep the Prefect UI and the sandbox up until Ctrl-C"),
    step: int = typer.Option(25, "--step", min=1, max=100, help="Health policy: percentage points per step"),
    interval: float = typer.Option(2.0, "--interval", min=0.5, help="Health policy: seconds between steps"),
    traffic_seconds: float = typer.Option(
        5.0, "--traffic-seconds", min=1.0, help="Seconds of traffic counted for the route check"
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the simulated traffic"),
) -> None:
    """Run Lamia end to end here: a healthy release (promoted), a bad one (rolled back), a conditional route.

    Starts a Prefect server with its UI unless PREFECT_API_URL names one, and a sandbox
    (Kubernetes API-server emulator, traffic simulator, Prometheus); stops them at the end.
    Exits 1 when anything went otherwise than expected.
    """
    from flows.demo import DemoSettings, run_demo

    settings = DemoSettings(step=step, interval=interval, traffic_seconds=traffic_seconds, seed=seed)
    try:
        _, code = run_demo(settings, as_json=as_json, keep=keep)
    except RuntimeError as exc:  # a server of the sandbox or Prefect's did not start
        raise fail(f"the demo could not run: {exc}", 1) from None
    except KeyboardInterrupt:
        raise fail("interrupted; everything the demo started is stopped", 130) from None
    raise typer.Exit(code)
