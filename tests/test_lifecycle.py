"""The sandbox's shared start/stop plumbing (lamia_sandbox._lifecycle)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lamia_sandbox._lifecycle import (
    Service,
    ServingThread,
    group_members,
    process_alive,
    stop_child,
    stop_process,
)


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"canary"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_serving_thread_answers_until_stopped_then_refuses() -> None:
    serving = ServingThread(ThreadingHTTPServer(("127.0.0.1", 0), _Hello), "hello")
    with urllib.request.urlopen(f"http://127.0.0.1:{serving.port}/", timeout=5) as resp:
        assert resp.read() == b"canary"
    serving.stop()
    assert _refused(serving.port)


class _Recorder(Service):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> _Recorder:
        self.calls.append("start")
        return self

    def stop(self) -> None:
        self.calls.append("stop")


def test_a_service_is_stopped_when_its_block_fails() -> None:
    recorder = _Recorder()
    with pytest.raises(RuntimeError), recorder as started:
        assert started is recorder
        raise RuntimeError("v10 would not start")
    assert recorder.calls == ["start", "stop"]


_STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); "
             "time.sleep(60)")


def _stubborn(**kwargs: object) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _STUBBORN], stdout=subprocess.PIPE, text=True,
                            **kwargs)  # type: ignore[call-overload]
    assert proc.stdout is not None and proc.stdout.readline() == "1\n"  # SIGTERM is ignored from now
    return proc


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    proc = _stubborn()
    stop_process(proc.pid, grace=0.2)
    assert not process_alive(proc.pid)
    assert proc.wait(timeout=5) == -9


def test_a_process_that_obeys_is_not_killed() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stop_process(proc.pid, grace=30)
    assert proc.wait(timeout=5) == -15


def test_a_group_is_stopped_with_every_process_in_it() -> None:
    # The leader starts a stubborn child in its group and waits for it, as a server's services do.
    spawn = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {_STUBBORN!r}])"
    leader = subprocess.Popen([sys.executable, "-c", spawn], start_new_session=True)
    try:
        for _ in range(200):
            if len(group_members(leader.pid)) == 2:
                break
            time.sleep(0.05)
        assert len(group_members(leader.pid)) == 2
        stop_process(leader.pid, grace=0.5, group=True)
        assert group_members(leader.pid) == []
    finally:
        leader.wait(timeout=5)


def test_a_child_is_stopped_and_waited_for_even_when_it_already_ended() -> None:
    proc = _stubborn()
    stop_child(proc, grace=0.2)  # type: ignore[arg-type]
    assert proc.returncode == -9
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait(timeout=10)
    stop_child(done)  # reaped already: its pid is not signalled again
    assert done.returncode == 0
    stop_child(None)
