"""A real Prometheus (the Debian binary) on a loopback port, scraping given targets.

Used by the integration tests and by ``make demo``. Everything it writes lives in
a temporary directory that :meth:`PrometheusServer.stop` removes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from lamia_sandbox._lifecycle import Service, free_port, log_tail, stop_child

PROMETHEUS_BIN = os.environ.get("LAMIA_PROMETHEUS_BIN", "/usr/bin/prometheus")
JOB = "istio-simulator"


class PrometheusServerError(RuntimeError):
    """Prometheus could not be started, or did not become ready."""


def _split_target(url: str) -> tuple[str, str, str]:
    """``http://127.0.0.1:9100/metrics`` → (scheme, host:port, path); a bare ``host:port`` is allowed."""
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if not parts.netloc:
        raise ValueError(f"scrape target {url!r} has no host:port")
    return parts.scheme, parts.netloc, parts.path or "/metrics"


class PrometheusServer(Service):
    """Runs ``prometheus`` scraping ``scrape_targets`` every ``scrape_interval``.

    Targets are URLs (``http://127.0.0.1:PORT/metrics``) or ``host:port``, all in
    the job ``istio-simulator``; :meth:`add_target` adds more while it runs.
    Prometheus scrapes a target for the first time a few seconds after learning
    of it (it applies target changes every 5 s).
    """

    def __init__(
        self,
        scrape_targets: Sequence[str],
        *,
        scrape_interval: str = "1s",
        port: int = 0,
        binary: str = PROMETHEUS_BIN,
        start_timeout: float = 30.0,
    ) -> None:
        self.scrape_targets = list(scrape_targets)
        self.scrape_interval = scrape_interval
        self.binary = binary
        self._requested_port = port
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._targets_file: Path | None = None
        self._added: list[str] = []
        self.port = 0

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self.port:
            raise PrometheusServerError("Prometheus is not running")
        return f"http://127.0.0.1:{self.port}"

    def _config(self, targets_file: Path) -> dict[str, Any]:
        return {
            # A scrape timeout longer than the interval is a configuration error.
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "static_configs": [_target_group(t) for t in self.scrape_targets],
                    # Targets added while running; Prometheus watches the file.
                    "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}],
                }
            ],
        }

    def start(self) -> PrometheusServer:
        if self._proc is not None:
            return self
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise PrometheusServerError(
                f"Prometheus binary not found at {self.binary}; install the Debian package "
                "'prometheus' (make test does) or set LAMIA_PROMETHEUS_BIN"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="lamia-prometheus-"))
        self._targets_file = self._dir / "targets.json"
        self._write_targets()
        config = self._dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self._config(self._targets_file), sort_keys=False))
        # A port picked by binding port 0 may be taken again before Prometheus binds it.
        attempts = 1 if self._requested_port else 3
        last_error = ""
        for _ in range(attempts):
            port = self._requested_port or free_port()
            try:
                self._launch(config, port)
                return self
            except PrometheusServerError as exc:
                last_error = str(exc)
                self._kill()
                if "address already in use" not in last_error:
                    break
        self._cleanup_dir()
        raise PrometheusServerError(last_error)

    def _launch(self, config: Path, port: int) -> None:
        assert self._dir is not None
        data = self._dir / f"data-{port}"
        log_path = self._dir / f"prometheus-{port}.log"
        cmd = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        with open(log_path, "wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.port = port
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrometheusServerError(
                    f"Prometheus exited with code {self._proc.returncode} on port {port}:\n"
                    + log_tail(log_path)
                )
            if self._ready():
                return
            time.sleep(0.1)
        raise PrometheusServerError(
            f"Prometheus on port {port} not ready after {self._start_timeout:.0f}s:\n" + log_tail(log_path)
        )

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        self._kill()
        self._cleanup_dir()

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        self.port = 0
        stop_child(proc, grace=10)

    def _cleanup_dir(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
            self._targets_file = None

    # --- targets added while running ---------------------------------------------------------

    def add_target(self, url: str) -> None:
        """Scrape ``url`` too, from now on (Prometheus takes a few seconds to start scraping it)."""
        _split_target(url)
        if url not in self._added:
            self._added.append(url)
            self._write_targets()

    def remove_target(self, url: str) -> None:
        if url in self._added:
            self._added.remove(url)
            self._write_targets()

    def _write_targets(self) -> None:
        if self._targets_file is None:
            return
        # Written aside and renamed, so Prometheus never reads half a file.
        tmp = self._targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([_target_group(t) for t in self._added]))
        os.replace(tmp, self._targets_file)

    # --- queries, for tests and the demo ------------------------------------------------------

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query over plain HTTP, independent of Lamia's adapter (tests use it as truth)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 30.0,
        interval: float = 0.2,
    ) -> list[dict[str, Any]]:
        """Polls ``promql`` until ``predicate`` holds on its result; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"after {timeout:.0f}s, {promql!r} still gives {result!r}")
            time.sleep(interval)

    def wait_for_series(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Polls until ``promql`` returns at least one series."""
        return self.wait_for(promql, bool, timeout)


def _target_group(url: str) -> dict[str, Any]:
    scheme, hostport, path = _split_target(url)
    return {"targets": [hostport], "labels": {"__scheme__": scheme, "__metrics_path__": path}}
