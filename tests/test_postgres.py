"""A throwaway PostgreSQL cluster (Prefect on it: tests/test_prefect_server.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamia_sandbox._lifecycle import process_alive
from lamia_sandbox.postgres import PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


def test_cluster_answers_on_loopback(postgres: PostgresServer) -> None:
    assert postgres.url.startswith("postgresql+asyncpg://prefect@127.0.0.1:")
    sql = "select current_user, current_database(), inet_server_addr()::text"
    [(user, db, addr)] = postgres.query(sql)
    assert (user, db, addr) == ("prefect", "prefect", "127.0.0.1/32")
    pid = postgres.postmaster_pid
    assert pid is not None and process_alive(pid)
    if os.geteuid() == 0:
        # PostgreSQL refuses root: the cluster runs as another user.
        assert Path(f"/proc/{pid}").stat().st_uid != 0


def test_stop_removes_the_cluster() -> None:
    pg = PostgresServer().start()
    pid, data = pg.postmaster_pid, pg.data_dir
    assert pid is not None and data.is_dir()
    pg.stop()
    assert not process_alive(pid)
    assert not data.exists()
    pg.stop()
