"""A stand-in in front of a real Prometheus that can go away or answer garbage, on a fixed port.

Lamia is pointed at :attr:`PrometheusProxy.url`; the proxy forwards every request
to the upstream Prometheus, unless told otherwise:

- :meth:`go_down` closes the port (connection refused, as a Prometheus that is
  stopped), :meth:`come_back` opens it again on the same port;
- ``mode = "html"`` answers 200 with an HTML page (a login proxy), ``"text"`` a
  cut-off body, ``"shape"`` JSON of another shape than a query result, as a
  misconfigured proxy in front of Prometheus does; ``"empty"`` answers every instant query with
  a well-formed result holding no series (a Prometheus that scrapes nothing of the app), other
  requests are forwarded.

Every request is counted by the mode it met (:attr:`served`).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from lamia_sandbox._lifecycle import Service, ServingThread, free_port

Mode = Literal["forward", "html", "text", "shape", "empty"]
_LOGIN_PAGE = b"<!doctype html><html><body><h1>Sign in</h1><form action=/login></form></body></html>"
_GARBAGE: dict[str, tuple[str, bytes]] = {
    "html": ("text/html", _LOGIN_PAGE),
    "text": ("application/json", b'{"status":"success","data":{"resultType":"vector","res'),
    "shape": ("application/json",
              json.dumps({"status": "success", "data": {"result": {"oops": 1}}}).encode()),
    "empty": ("application/json",
              json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode()),
}


class PrometheusProxy(Service):
    def __init__(self, upstream: str, *, port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = port or free_port()
        self.mode: Mode = "forward"
        self.served: Counter[str] = Counter()
        self._serving: ServingThread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusProxy:
        if self._serving is None:
            server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
            server.daemon_threads = True
            self._serving = ServingThread(server, f"prometheus-proxy-{self.port}")
        return self

    def stop(self) -> None:
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.stop()

    def go_down(self) -> None:
        """Refuse connections, like a Prometheus that is not running."""
        self.stop()

    def come_back(self) -> None:
        self.start()

    def _count(self, what: str) -> None:
        with self._lock:
            self.served[what] += 1


def _handler(proxy: PrometheusProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve(self) -> None:
            mode = proxy.mode
            if mode == "empty" and self.path.partition("?")[0] != "/api/v1/query":
                mode = "forward"
            proxy._count(mode)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if mode != "forward":
                self._answer(200, *_GARBAGE[mode])
                return
            request = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command,
                                             headers={k: v for k, v in self.headers.items()
                                                      if k.lower() in ("content-type", "accept")})
            try:
                with urllib.request.urlopen(request, timeout=30) as resp:
                    kind = resp.headers.get("Content-Type", "application/json")
                    self._answer(resp.status, kind, resp.read())
            except urllib.error.HTTPError as exc:
                self._answer(exc.code, exc.headers.get("Content-Type", "text/plain"), exc.read())
            except OSError as exc:
                self._answer(502, "text/plain", f"upstream Prometheus unreachable: {exc}".encode())

        do_GET = do_POST = _serve

    return Handler
