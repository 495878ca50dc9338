"""Changes made from the CLI without a flow (`lamia weights set`, `lamia gateway apply`), recorded as
Prefect events on the app's resource, so that `lamia release history` and the Prefect UI show them
beside the releases."""

from __future__ import annotations

import sys
from typing import Any

#: The event of a change of the gateway made by hand.
CHANGE_EVENT = "lamia.gateway.changed"


def record_change(namespace: str, app: str, *, kind: str, command: str, reason: str, by: str,
                  weights: dict[str, Any]) -> None:
    """Emit the event (and wait for it to be sent); a note on stderr when no Prefect server is set."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        print(f"lamia: note: no Prefect server is configured (PREFECT_API_URL): this change is not in the "
              f"history of {namespace}/{app}", file=sys.stderr)
        return
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    from flows._history import app_resource

    emit_event(event=CHANGE_EVENT, resource=app_resource(namespace, app),
               payload={"kind": kind, "command": command, "reason": reason, "by": by, "weights": weights})
    EventsWorker.drain_all(timeout=10)
