"""A throwaway PostgreSQL cluster on a loopback port, for Prefect's scaled-out backend.

Uses the Debian server binaries (``/usr/lib/postgresql/<version>/bin``). PostgreSQL
refuses to run as root, so when this process is root the cluster runs as the
``postgres`` system user (``LAMIA_POSTGRES_USER`` to choose another); its
directory is then created where that user can reach it (the system temp dir by
default) and handed over to it. Durability is switched off (``fsync=off``): the
data lives as long as the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from lamia_sandbox._lifecycle import Service, free_port, stop_process


class PostgresError(RuntimeError):
    """The cluster could not be created, started or stopped."""


def find_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin directory (``LAMIA_POSTGRES_BIN`` wins)."""
    if env := os.environ.get("LAMIA_POSTGRES_BIN"):
        return Path(env)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not candidates:
        raise PostgresError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin; "
                            "install the Debian package 'postgresql' or set LAMIA_POSTGRES_BIN")
    return Path(candidates[-1]).parent


class PostgresServer(Service):
    """``initdb`` + ``pg_ctl start`` in a temporary directory; :meth:`stop` removes it all."""

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        port: int = 0,
        user: str = "prefect",
        database: str = "prefect",
        bin_dir: Path | None = None,
        run_as: str | None = None,
    ) -> None:
        self.base_dir = base_dir
        self.user = user
        self.database = database
        self.bin_dir = bin_dir
        self._requested_port = port
        if run_as is None and os.geteuid() == 0:
            run_as = os.environ.get("LAMIA_POSTGRES_USER", "postgres")
        self._run_as = run_as
        self.dir: Path | None = None
        self.port = 0

    @property
    def data_dir(self) -> Path:
        if self.dir is None:
            raise PostgresError("PostgreSQL is not running")
        return self.dir / "data"

    @property
    def url(self) -> str:
        """SQLAlchemy URL for Prefect (``PREFECT_SERVER_DATABASE_CONNECTION_URL``)."""
        if not self.port:
            raise PostgresError("PostgreSQL is not running")
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        return None

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of one SQL statement, over TCP like Prefect connects (for tests and the demo)."""
        return asyncio.run(self._query(sql))

    async def _query(self, sql: str) -> list[tuple[Any, ...]]:
        import asyncpg

        conn = await asyncpg.connect(self.url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    def start(self) -> PostgresServer:
        if self.port:
            return self
        bin_dir = self.bin_dir or find_bin_dir()
        self.bin_dir = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="lamia-postgres-", dir=self.base_dir))
        try:
            if self._run_as:
                pw = pwd.getpwnam(self._run_as)
                os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._run([str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user, "--auth=trust",
                       "-E", "UTF8", "--no-locale", "--no-sync"], as_owner=True)
            attempts = 1 if self._requested_port else 3
            for attempt in range(attempts):
                port = self._requested_port or free_port()
                try:
                    log = str(self.dir / "postgres.log")
                    self._run([str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-l", log,
                               "-w", "-t", "60", "-o", self._server_options(port), "start"], as_owner=True)
                    self.port = port
                    break
                except PostgresError:
                    if attempt == attempts - 1:
                        raise
            self._run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                       self.database], as_owner=False)
        except BaseException:
            self.stop()
            raise
        return self

    def _server_options(self, port: int) -> str:
        assert self.dir is not None
        return (f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")

    def _run(self, cmd: list[str], *, as_owner: bool) -> None:
        kwargs: dict[str, Any] = {}
        if as_owner and self._run_as:
            kwargs = {"user": self._run_as, "group": pwd.getpwnam(self._run_as).pw_gid, "extra_groups": []}
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=self.dir, timeout=120,
                             env={**os.environ, "LC_ALL": "C"}, **kwargs)
        if out.returncode != 0:
            raise PostgresError(f"{Path(cmd[0]).name} failed with code {out.returncode}:\n"
                                f"{out.stdout}{out.stderr}{self._log_tail()}")

    def _log_tail(self) -> str:
        if self.dir is None:
            return ""
        with contextlib.suppress(OSError):
            lines = (self.dir / "postgres.log").read_text(errors="replace").splitlines()[-15:]
            return "\n--- postgres.log ---\n" + "\n".join(lines)
        return ""

    def stop(self) -> None:
        """Fast shutdown (disconnects clients), waits for the server to exit, removes the directory."""
        if self.dir is None:
            return
        pid, bin_dir = self.postmaster_pid, self.bin_dir
        if pid is not None and bin_dir is not None:

            def fast_shutdown() -> None:
                with contextlib.suppress(PostgresError, subprocess.TimeoutExpired):
                    self._run([str(bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                               "-w", "-t", "30", "stop"], as_owner=True)

            stop_process(pid, grace=10, ask=fast_shutdown)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        self.port = 0
