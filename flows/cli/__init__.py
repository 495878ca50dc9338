"""The ``lamia`` command line. Each module adds its commands to the groups in ``_app``."""

from flows.cli import (  # noqa: F401  (registers commands)
    clusters,
    conditions,
    demo,
    doctor,
    expose,
    expressions,
    gateway,
    metrics,
    release,
    runs,
)
from flows.cli._app import app

__all__ = ["app"]
