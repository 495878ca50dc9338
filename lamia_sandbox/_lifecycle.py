"""Starting and stopping the sandbox's servers, written once for all of them.

- :class:`Service`: ``with server: ...`` starts it and stops it, whatever happens inside.
- :class:`ServingThread`: an HTTP (or WSGI) server answering from a background thread, stopped
  quickly (a short poll interval: ``shutdown()`` waits for the loop to notice).
- :func:`stop_process`: SIGTERM (or a polite request of the caller's), then SIGKILL once a
  grace period is over, for one process or the whole group it leads; returns when it is gone.
  :func:`stop_child` does the same for a child of ours, and waits for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self


class Service:
    """A context manager over ``start()`` and ``stop()``; ``stop()`` must be safe to call twice."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ServingThread:
    """``server.serve_forever()`` in a daemon thread named ``name``, from construction to stop()."""

    def __init__(self, server: socketserver.BaseServer, name: str, *, poll_interval: float = 0.05) -> None:
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll_interval},
                                        name=name, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])  # type: ignore[index]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop answering and close the port: clients get connection refused from now on."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=timeout)


def free_port() -> int:
    """A port that was free a moment ago (the server binds it itself, so a race remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` of a server's log, for an error message."""
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may itself contain spaces or parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        state, proc_pgid = fields[0], int(fields[2])
        if proc_pgid == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def stop_process(
    pid: int, *, grace: float = 10.0, group: bool = False, ask: Callable[[], None] | None = None
) -> None:
    """Stop process ``pid``, or with ``group`` every process of the group it leads (started with
    ``start_new_session=True``, so that services it spawned go too).

    ``ask`` asks it to stop (default: SIGTERM); whatever is left after ``grace`` seconds gets
    SIGKILL. Returns once nothing is left (a child of ours stays a zombie until it is waited for).
    """

    def alive() -> bool:
        return bool(group_members(pid)) if group else process_alive(pid)

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            (os.killpg if group else os.kill)(pid, sig)

    if ask is None:
        send(signal.SIGTERM)
    else:
        ask()
    if _wait_until_gone(alive, grace):
        return
    send(signal.SIGKILL)
    _wait_until_gone(alive, 10.0)


def stop_child(proc: subprocess.Popen[bytes] | None, *, grace: float = 10.0, group: bool = False) -> None:
    """:func:`stop_process` for a child of ours (None: nothing to stop), then wait for it."""
    if proc is None:
        return
    # Once poll() has reaped it, its pid may belong to another process; a group outlives its leader.
    if group or proc.poll() is None:
        stop_process(proc.pid, grace=grace, group=group)
    proc.wait(timeout=10)


def _wait_until_gone(alive: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
