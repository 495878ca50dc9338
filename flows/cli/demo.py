"""`lamia demo`: the whole release story in a local sandbox, shown in the Prefect UI."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli._app import app
from flows.cli._common import fail, handle_errors


@app.command("demo")
@handle_errors
def demo(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON report on stdout (progress on stderr)")
    ] = False,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the Prefect UI and the sandbox up until Ctrl-C")
    ] = False,
    step: Annotated[
        int, typer.Option("--step", min=1, max=100, help="Health policy: percentage points per step")
    ] = 25,
    interval: Annotated[
        float, typer.Option("--interval", min=0.5, help="Health policy: seconds between steps")
    ] = 2.0,
    traffic_seconds: Annotated[
        float,
        typer.Option("--traffic-seconds", min=1.0, help="Seconds of traffic counted for the route check"),
    ] = 5.0,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the simulated traffic")] = None,
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
