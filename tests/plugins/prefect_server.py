"""One real Prefect server for the whole session, and this process pointed at it.

Set ``LAMIA_TEST_PREFECT_API_URL`` to use a server that is already running
instead of starting one (quicker when running a few tests by hand).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from lamia_sandbox.prefect_server import CLIENT_SETTINGS, PrefectServer


@contextmanager
def prefect_client_env(settings: dict[str, str]) -> Iterator[None]:
    """Sets ``settings`` in os.environ (for subprocesses) and in Prefect's global settings
    (read once at import, so in-process flows would otherwise keep the old values)."""
    import prefect.context

    keys = set(settings) | set(CLIENT_SETTINGS)
    _drain_prefect_workers()
    saved = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ.pop(k, None)
    os.environ.update(settings)
    prefect.context.refresh_global_settings_context()
    try:
        yield
    finally:
        _drain_prefect_workers()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        prefect.context.refresh_global_settings_context()


def _drain_prefect_workers() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    # Logs and events go to the API through background workers: flushing them before the
    # server changes or stops avoids connection errors at exit, and the next workers are
    # built for the new settings. Outside an event loop these block until the queues are sent.
    APILogWorker.drain_all(timeout=10, at_exit=False)
    EventsWorker.drain_all(timeout=10, at_exit=False)


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A healthy Prefect server (SQLite, no UI); PREFECT_API_URL points at it for the session."""
    existing = os.environ.get("LAMIA_TEST_PREFECT_API_URL")
    if existing:
        server = PrefectServer.existing(existing)
    else:
        server = PrefectServer(tmp_path_factory.mktemp("prefect-home"), ui=False)
    with server, prefect_client_env(server.env()):
        yield server
