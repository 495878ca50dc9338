"""The Prefect server launcher: a real server, flows recorded in it, and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

from lamia_sandbox._lifecycle import free_port, group_members
from lamia_sandbox.postgres import PostgresServer
from lamia_sandbox.prefect_server import PrefectServer, PrefectServerError, healthy
from tests.plugins.prefect_server import prefect_client_env

pytestmark = pytest.mark.integration


def ps_rows() -> list[tuple[int, int, str, str]]:
    """(pid, pgid, state, command) of every process, from ps itself."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True)
    rows = []
    for line in out.stdout.splitlines():
        pid, pgid, stat, *args = line.split(maxsplit=3)
        rows.append((int(pid), int(pgid), stat, args[0] if args else ""))
    return rows


def test_server_is_healthy_and_env_points_at_it(prefect_server: PrefectServer) -> None:
    assert healthy(prefect_server.api_url)
    assert prefect_server.api_url.startswith("http://127.0.0.1:") and prefect_server.api_url.endswith("/api")
    assert os.environ["PREFECT_API_URL"] == prefect_server.api_url == prefect_server.env()["PREFECT_API_URL"]
    if "LAMIA_TEST_PREFECT_API_URL" not in os.environ:
        assert (prefect_server.home / "prefect.db").exists()  # SQLite in its own home
    with urllib.request.urlopen(f"{prefect_server.api_url}/admin/version", timeout=10) as resp:
        assert json.load(resp).startswith("3.")


def test_in_process_flow_run_is_recorded(prefect_server: PrefectServer) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    name = f"lamia-smoke-{uuid.uuid4().hex[:8]}"

    @flow(name=name, persist_result=False)
    def smoke(x: int) -> int:
        return x + 1

    assert smoke(41) == 42
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
        assert str(client.api_url).rstrip("/") == prefect_server.api_url
    assert len(runs) == 1
    assert runs[0].state is not None and runs[0].state.is_completed()
    assert runs[0].parameters == {"x": 41}


def test_a_client_process_needs_only_env(prefect_server: PrefectServer, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    name = f"lamia-subprocess-{uuid.uuid4().hex[:8]}"
    script = (
        "from prefect import flow\n"
        f"@flow(name={name!r}, persist_result=False)\n"
        "def f() -> str:\n    return 'ok'\n"
        "print(f())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(prefect_server.env(), PREFECT_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
    assert [r.state_name for r in runs] == ["Completed"]


def test_existing_server_is_used_not_owned(prefect_server: PrefectServer) -> None:
    other = PrefectServer.existing(prefect_server.api_url + "/")
    assert other.api_url == prefect_server.api_url
    assert other.env()["PREFECT_UI_URL"] == prefect_server.api_url.removesuffix("/api")
    other.start()
    other.stop()
    assert healthy(prefect_server.api_url)


def test_existing_server_that_is_not_there() -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    with pytest.raises(PrefectServerError, match="no healthy Prefect server"):
        PrefectServer.existing(url)


def test_server_env_drops_the_callers_prefect_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://elsewhere/db")
    env = PrefectServer(tmp_path, ui=False).server_env(4321)
    assert "PREFECT_API_DATABASE_CONNECTION_URL" not in env and "PREFECT_API_URL" not in env
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}"
    assert env["PREFECT_HOME"] == str(tmp_path)
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["PREFECT_SERVER_UI_ENABLED"] == "false"


def test_runs_on_postgres_and_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    from prefect import flow

    name = f"lamia-pg-{uuid.uuid4().hex[:8]}"

    @flow(name=name, persist_result=False)
    def on_postgres() -> str:
        return "ok"

    with PostgresServer() as postgres:
        server = PrefectServer(tmp_path, ui=False, database_url=postgres.url).start()
        try:
            pgid, port = server.pid, server.port
            assert pgid is not None and server.startup_seconds is not None
            group = [cmd for _, pg, _, cmd in ps_rows() if pg == pgid]
            assert any("prefect" in cmd and "server" in cmd for cmd in group)
            with prefect_client_env(server.env()):
                assert on_postgres() == "ok"
            # Prefect's tables are in PostgreSQL, with the run in them; no SQLite file was made.
            sql = "select f.name, r.state_type from flow_run r join flow f on f.id = r.flow_id"
            assert postgres.query(sql) == [(name, "COMPLETED")]
            assert not (tmp_path / "prefect.db").exists()
        finally:
            server.stop()
        assert not healthy(f"http://127.0.0.1:{port}/api", timeout=1)
        left = [row for row in ps_rows() if row[1] == pgid and not row[2].startswith("Z")]
        assert left == [], left
        assert not [row for row in ps_rows() if f"--port {port} " in row[3] + " "]
        assert group_members(pgid) == []
        server.stop()  # a second stop is harmless


def test_a_taken_port_is_reported(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        server = PrefectServer(tmp_path, port=port, ui=False, start_timeout=120)
        with pytest.raises(PrefectServerError, match=f"port {port}"):
            server.start()
    assert not server.running
