"""The `expose` flow: `lamia expose` (or, with ``remove``, `lamia unexpose`) from the Prefect UI.

It holds the application's lock and lease like every other writer of its
gateway, so it never races a release, and leaves the same history.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Completed
from pydantic import Field

from flows._guard import exclusive_release
from flows._history import ReleaseHistory, current_run, expose_run_name
from flows._notify import ReleaseThread
from flows.clusters import use_cluster
from flows.params import Target
from lamia_core.exposure import DEFAULT_SELECTOR, ExposeRequest
from lamia_core.lease import Lease
from lamia_core.outcome import Outcome
from tasks.exposure import expose_application, unexpose_application
from tasks.kubernetes import discover_application, read_gateway


class ExposeParameters(Target):
    """Reach the application from outside the mesh through Istio's ingress gateway."""

    host: str = Field(description="Public host name, e.g. shop.example.com")
    tls_secret: str | None = Field(
        None, description="Secret with the certificate, in the ingress gateway's namespace: adds HTTPS"
    )
    gateway: str | None = Field(
        None, description="Gateway (or Ingress) to use or create; default one serving the host, else new"
    )
    selector: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_SELECTOR), description="Labels of the ingress gateway's pods"
    )
    ingress: bool = Field(False, description="A Kubernetes Ingress (class istio) instead of an Istio Gateway")
    remove: bool = Field(False, description="Undo: remove what expose added (lamia unexpose)")

    def request(self) -> ExposeRequest:
        return ExposeRequest(host=self.host, tls_secret=self.tls_secret, name=self.gateway,
                             selector=self.selector, ingress=self.ingress)


@flow(name="expose", flow_run_name=expose_run_name, persist_result=False)
def expose(params: ExposeParameters) -> State:
    """Expose the application (or, with `remove`, undo that) under its lease."""
    logger = get_run_logger()
    params = use_cluster(params)
    request = params.request()  # bad input fails here, before anything is read or written
    application = discover_application(params.kubernetes, params.namespace, params.app, params.service)
    kind = "unexpose" if params.remove else "expose"
    run_id, run_name = current_run()
    history = ReleaseHistory(params.namespace, params.app, kind)
    thread = ReleaseThread(params.slack.resolve() if params.slack else None)
    lease = Lease.new(run_id, run_name, kind)
    with exclusive_release(params.kubernetes, application, lease):
        gateway = read_gateway(params.kubernetes, application)
        weights = gateway.default_route.weights.as_dict()
        history.started(weights, {"host": request.host, "kind": request.kind})
        if params.remove:
            removed = unexpose_application(params.kubernetes, application, run_id)
            reason = (f"no longer exposed as {removed.describe()}" if removed
                      else "was not exposed by Lamia; nothing removed")
        else:
            exposure = expose_application(params.kubernetes, application, request, run_id)
            reason = f"exposed as {exposure.describe()}"
        history.finished(Outcome.APPLIED, weights, reason)
    logger.info("%s in %s %s", params.app, params.namespace, reason)
    thread.post(f":globe_with_meridians: {params.app} ({params.namespace}) {reason}")
    return Completed(message=f"{params.app} {reason}", name=Outcome.APPLIED.state_name)
