"""The options many commands take, declared once so that they read the same in every `--help`."""

from __future__ import annotations

from typing import Annotated

import typer

NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the application.")]
AppOpt = Annotated[
    str, typer.Option("--app", "-a", help="The application: the value of the Deployments' `app` label.")
]
ServiceOpt = Annotated[
    str | None,
    typer.Option("--service", help="The Service in front of the application, when several select it."),
]
ClusterOpt = Annotated[
    str | None,
    typer.Option("--cluster", help="A saved cluster (lamia cluster add), instead of --kubeconfig/--context."),
]
KubeconfigOpt = Annotated[
    str | None,
    typer.Option(
        "--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig file(s), ':'-separated; default ~/.kube/config."
    ),
]
ContextOpt = Annotated[
    str | None, typer.Option("--context", help="Kubeconfig context; default its current one.")
]
