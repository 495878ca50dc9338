"""A real Prefect server (``prefect server start``) on a loopback port, for tests and the demo.

Its state lives in ``home`` (``PREFECT_HOME`` and, unless a ``database_url`` says
otherwise, the SQLite database), so it shares nothing with the user's
``~/.prefect``. The server runs in its own process group, which :meth:`stop`
terminates as a whole so that no service process outlives it.

``python -m lamia_sandbox.prefect_server --home DIR --port 4200`` runs one (with
the UI) until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

from lamia_sandbox._lifecycle import Service, free_port, log_tail, stop_child

#: Prefect settings a client process needs to talk to a server.
CLIENT_SETTINGS = ("PREFECT_API_URL", "PREFECT_UI_URL")


class PrefectServerError(RuntimeError):
    """The Prefect server could not be started, did not become healthy, or is not reachable."""


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class PrefectServer(Service):
    """``prefect server start`` with an isolated home; or, via :meth:`existing`, a server run elsewhere."""

    def __init__(
        self,
        home: Path,
        *,
        port: int = 0,
        ui: bool = True,
        database_url: str | None = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.home = Path(home)
        self.ui = ui
        self.database_url = database_url or f"sqlite+aiosqlite:///{self.home / 'prefect.db'}"
        self._requested_port = port
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._external_api_url: str | None = None
        self.port = 0
        self.startup_seconds: float | None = None
        """How long the last start() took until ``/api/health`` answered."""

    @classmethod
    def existing(cls, api_url: str, *, check: bool = True) -> PrefectServer:
        """A server someone else runs; start() and stop() leave it alone."""
        server = cls(Path(os.devnull))
        server._external_api_url = api_url.rstrip("/")
        if check and not healthy(server._external_api_url, timeout=10):
            raise PrefectServerError(f"no healthy Prefect server at {server._external_api_url} (/health)")
        return server

    # --- addresses --------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        if self._external_api_url is not None:
            return self._external_api_url
        if not self.port:
            raise PrefectServerError("the Prefect server is not running")
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def env(self) -> dict[str, str]:
        """Environment variables that point a client process (or this one) at the server."""
        env = {"PREFECT_API_URL": self.api_url}
        if self.ui or self._external_api_url is not None:
            env["PREFECT_UI_URL"] = self.ui_url
        return env

    def server_env(self, port: int) -> dict[str, str]:
        """The server process's environment: the caller's, without any Prefect setting of its own."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_DATABASE_CONNECTION_URL=self.database_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_UI_ENABLED="true" if self.ui else "false",
            PREFECT_SERVER_API_HOST="127.0.0.1",
            PREFECT_SERVER_API_PORT=str(port),
            PREFECT_SERVER_LOGGING_LEVEL="WARNING",
            # The UI's JavaScript calls the API at this address.
            PREFECT_SERVER_UI_API_URL=f"http://127.0.0.1:{port}/api",
        )
        return env

    # --- lifecycle --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> PrefectServer:
        if self._external_api_url is not None or self._proc is not None:
            return self
        self.home.mkdir(parents=True, exist_ok=True)
        # A port picked by binding port 0 may be taken again before the server binds it.
        attempts = 1 if self._requested_port else 3
        last_error = ""
        for _ in range(attempts):
            port = self._requested_port or free_port()
            try:
                self._launch(port)
                return self
            except PrefectServerError as exc:
                last_error = str(exc)
                self._terminate()
        raise PrefectServerError(last_error)

    def _launch(self, port: int) -> None:
        cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
               "--ui" if self.ui else "--no-ui", "--analytics-off"]
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.server_env(port), cwd=self.home, start_new_session=True,
            )
        self.port = port
        deadline = started + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrefectServerError(
                    f"the Prefect server exited with code {self._proc.returncode} on port {port}:\n"
                    + log_tail(self.log_path)
                )
            if healthy(self.api_url, timeout=1):
                self.startup_seconds = time.monotonic() - started
                return
            time.sleep(0.2)
        raise PrefectServerError(
            f"the Prefect server on port {port} was not healthy after {self._start_timeout:.0f}s:\n"
            + log_tail(self.log_path)
        )

    def stop(self) -> None:
        """Terminates the server's whole process group (SIGTERM, then SIGKILL after ``stop_timeout``)."""
        self._terminate()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        self.port = 0
        # start_new_session made the server its group's leader; the services it spawned are not
        # our children, so the whole group is stopped and waited for.
        stop_child(proc, grace=self._stop_timeout, group=True)


def _drain_prefect_workers() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    # Logs and events are sent by background workers: flushed before the server goes (or the
    # settings change), nothing is lost and no worker retries against a closed port at exit.
    APILogWorker.drain_all(timeout=10, at_exit=False)
    EventsWorker.drain_all(timeout=10, at_exit=False)


@contextlib.contextmanager
def client_settings(settings: Mapping[str, str]) -> Iterator[None]:
    """Point this process's Prefect client at a server (os.environ and Prefect's global settings)."""
    import prefect.context

    keys = set(settings) | set(CLIENT_SETTINGS)
    saved = {k: os.environ.get(k) for k in keys}
    _drain_prefect_workers()
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a Prefect server with an isolated home on 127.0.0.1.")
    parser.add_argument("--home", type=Path, required=True, help="PREFECT_HOME and SQLite database directory")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--no-ui", action="store_true")
    parser.add_argument("--database-url", default=None, help="e.g. postgresql+asyncpg://user@127.0.0.1:5432/db")
    args = parser.parse_args(argv)
    server = PrefectServer(args.home, port=args.port, ui=not args.no_ui, database_url=args.database_url)
    with server:
        print(f"Prefect API: {server.api_url}  UI: {server.ui_url}  "
              f"(healthy after {server.startup_seconds:.1f}s)")
        print("export " + " ".join(f"{k}={v}" for k, v in server.env().items()), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while server.running:
                time.sleep(1)


if __name__ == "__main__":
    main()
