"""One real Prefect server for the whole session, and this process pointed at it.

Set ``LAMIA_TEST_PREFECT_API_URL`` to use a server that is already running
instead of starting one (quicker when running a few tests by hand).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lamia_sandbox.prefect_server import PrefectServer
from lamia_sandbox.prefect_server import client_settings as prefect_client_env


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
