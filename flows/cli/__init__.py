"""The ``lamia`` command line. Each module adds its commands to the groups in ``_app``."""

from flows.cli import conditions, demo, expressions, gateway, metrics, release  # noqa: F401  (registers commands)
from flows.cli._app import app

__all__ = ["app"]
