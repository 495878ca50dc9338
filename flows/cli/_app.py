"""The typer application and its command groups, shared by the CLI modules."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="lamia",
    help="Lamia: canary releases for services on Kubernetes with Istio, on Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
render_app = typer.Typer(help="Render manifests without touching a cluster.", no_args_is_help=True)
cluster_app = typer.Typer(
    help="Saved clusters (Prefect blocks) and namespaces prepared for Lamia (virtual clusters).",
    no_args_is_help=True,
)
gateway_app = typer.Typer(
    help="An application's gateway: DestinationRule and VirtualService.", no_args_is_help=True
)
weights_app = typer.Typer(help="Set traffic weights by hand (manual canary).", no_args_is_help=True)
check_app = typer.Typer(help="Check a condition or an expression.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate an expression on given metric values.", no_args_is_help=True)
release_app = typer.Typer(help="Canary releases run as Prefect flows.", no_args_is_help=True)

app.add_typer(render_app, name="render")
app.add_typer(cluster_app, name="cluster")
app.add_typer(gateway_app, name="gateway")
app.add_typer(weights_app, name="weights")
app.add_typer(check_app, name="check")
app.add_typer(eval_app, name="eval")
app.add_typer(release_app, name="release")
