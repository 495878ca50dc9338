"""Simulated user traffic through Istio, exposed as Istio's standard metrics.

A :class:`TrafficSimulator` generates requests (user agent, cookie, path...) for
one application, routes each by the application's current VirtualService
(:mod:`lamia_sandbox.routing`), lets the chosen version answer with its
:class:`VersionBehaviour` (error rate, latency), and counts the answer the way
Istio's destination sidecar does: ``istio_requests_total`` and the
``istio_request_duration_milliseconds`` histogram, with Istio's labels and
buckets, served for Prometheus on a loopback port. Without a VirtualService the
Service spreads requests evenly over the versions' pods, as Kubernetes does.

Requests come from inside the mesh and, after :meth:`TrafficSimulator.set_public_traffic`,
a share of them from outside through an Istio Gateway with a public Host
header. Each is routed by the VirtualService only where Istio would apply it
(:func:`lamia_sandbox.routing.applies`): bound to ``mesh`` (or to no gateway) for
mesh requests, bound to that Gateway with the host in ``hosts`` for public
ones. A mesh request the VirtualService does not apply to goes to the Service
as above; a public one finds no route at the ingress gateway (404) and counts as
unrouted.

It also keeps exact counts (:meth:`TrafficSimulator.counts`) for tests to
compare with what Prometheus reports.

Run ``python -m lamia_sandbox.simulator --help`` for the demo's command line.
"""

from __future__ import annotations

import argparse
import bisect
import logging
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import yaml
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field

from lamia_sandbox._lifecycle import Service, ServingThread
from lamia_sandbox.routing import MESH, NoRoute, Request, applies, choose

log = logging.getLogger(__name__)

#: Istio's default buckets for request durations, in milliseconds.
BUCKETS: tuple[float, ...] = (
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)

#: The route name counted for requests the Service routes itself, without a VirtualService.
SERVICE_ROUTE = "<service>"

LABELS = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_app",
    "destination_workload",
    "destination_workload_namespace",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "response_flags",
    "connection_security_policy",
)

CHROME_DESKTOP = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
NEXUS_6P_CHROME = (
    "Mozilla/5.0 (Linux; Android 8.1.0; Nexus 6P Build/OPM7.181205.001) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36"
)
FIREFOX_DESKTOP = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)

V = TypeVar("V")
Distribution = Sequence[tuple[V, float]]

DEFAULT_USER_AGENTS: Distribution[str] = (
    (CHROME_DESKTOP, 45), (NEXUS_6P_CHROME, 20), (FIREFOX_DESKTOP, 15), (SAFARI_IPHONE, 20),
)
DEFAULT_COOKIES: Distribution[str | None] = (
    (None, 60), ("session=42; user=jason", 10), ("session=7; group=beta", 20), ("session=9; country=fr", 10),
)
DEFAULT_PATHS: Distribution[str] = (
    ("/", 30), ("/productpage", 30), ("/api/v1/products", 25), ("/login", 10), ("/static/app.js", 5),
)
DEFAULT_METHODS: Distribution[str] = (("GET", 90), ("POST", 10))


class VersionBehaviour(BaseModel):
    """How a version answers: a share of errors with one code, log-normal latency around a median."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    error_code: int = Field(default=503, ge=100, le=599)
    latency_ms_median: float = Field(default=20.0, gt=0)
    latency_sigma: float = Field(default=0.5, ge=0)


@dataclass(frozen=True)
class Outcome:
    """One request's fate: the route it took, the version that answered, the code and duration."""

    route: str
    version: str
    code: int
    latency_ms: float
    gateway: str = MESH
    """Where the request came in: ``mesh``, or the Gateway (``NS/NAME``) of public traffic."""


GatewaySource = Callable[[], Mapping[str, Any] | None]


class _Series:
    """Counts and duration histogram of one (version, response code)."""

    __slots__ = ("buckets", "count", "total_ms")

    def __init__(self) -> None:
        self.count = 0
        self.total_ms = 0.0
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last one is +Inf

    def observe(self, ms: float) -> None:
        self.count += 1
        self.total_ms += ms
        # ``le`` buckets: a value equal to a bound belongs to that bound's bucket.
        self.buckets[bisect.bisect_left(BUCKETS, ms)] += 1

    def cumulative(self) -> list[int]:
        out, acc = [], 0
        for b in self.buckets:
            acc += b
            out.append(acc)
        return out


class TrafficSimulator(Service):
    """Traffic for the versions of ``app`` in ``namespace``, routed by ``gateway_source()``.

    ``gateway_source`` returns the current VirtualService (or None when there is
    none); it is read at most every ``refresh_interval`` seconds, and a failing
    read keeps the last one. ``rate`` is in requests per second. With ``seed``
    the sequence of requests and answers is reproducible. ``prime`` exposes each
    version's series at zero before its first request, which Envoy does not do,
    but which lets ``increase()`` count a series' first requests too (Prometheus'
    own advice for known label values).
    """

    def __init__(
        self,
        namespace: str,
        app: str,
        versions: Mapping[str, VersionBehaviour],
        *,
        gateway_source: GatewaySource,
        rate: float = 50.0,
        seed: int | None = None,
        user_agents: Distribution[str] = DEFAULT_USER_AGENTS,
        cookies: Distribution[str | None] = DEFAULT_COOKIES,
        paths: Distribution[str] = DEFAULT_PATHS,
        methods: Distribution[str] = DEFAULT_METHODS,
        prime: bool = True,
        refresh_interval: float = 0.5,
        tick_hz: float = 20.0,
        host: str = "127.0.0.1",
        port: int = 0,
        source_workload: str = "istio-ingressgateway",
        source_namespace: str = "istio-system",
    ) -> None:
        if not versions:
            raise ValueError("a simulator needs at least one version")
        self.namespace = namespace
        self.app = app
        self.gateway_source = gateway_source
        self.refresh_interval = refresh_interval
        self.tick_hz = tick_hz
        self.prime = prime
        self.source_workload = source_workload
        self.source_namespace = source_namespace
        self._host, self._port = host, port
        self._rng = random.Random(seed)
        self._dists = (user_agents, cookies, paths, methods)
        self._lock = threading.RLock()
        self._behaviour: dict[str, VersionBehaviour] = {}
        self._rate = 0.0
        self.set_rate(rate)
        self._series: dict[tuple[str, int], _Series] = {}
        self._by_route: dict[tuple[str, str], int] = {}
        self._by_gateway: dict[tuple[str, str], int] = {}
        self._unrouted = 0
        self._unrouted_by_gateway: dict[str, int] = {}
        self._public: tuple[str, str, float] | None = None
        self._round_robin = 0
        self._vs: Mapping[str, Any] | None = None
        self._vs_read_at = -math.inf
        for name, behaviour in versions.items():
            self.set_behaviour(name, behaviour)
        self._registry = CollectorRegistry(auto_describe=True)
        self._registry.register(_IstioCollector(self))
        self._serving: ServingThread | None = None
        self._traffic: threading.Thread | None = None
        self._stopping = threading.Event()

    # --- configuration at runtime -------------------------------------------------------------

    @property
    def versions(self) -> list[str]:
        with self._lock:
            return sorted(self._behaviour)

    def behaviour(self, version: str) -> VersionBehaviour:
        with self._lock:
            return self._behaviour[version]

    def set_behaviour(self, version: str, behaviour: VersionBehaviour | None = None, **changes: Any) -> None:
        """Replace a version's behaviour, or change some of its fields; an unknown version is added."""
        with self._lock:
            base = behaviour or self._behaviour.get(version) or VersionBehaviour()
            new = VersionBehaviour(**{**base.model_dump(), **changes})
            self._behaviour[version] = new
            if self.prime:
                self._series.setdefault((version, 200), _Series())
                if new.error_rate > 0:
                    self._series.setdefault((version, new.error_code), _Series())

    def set_rate(self, rate: float) -> None:
        if not rate >= 0:
            raise ValueError(f"rate must be a number of requests per second >= 0, got {rate!r}")
        with self._lock:
            self._rate = float(rate)

    def set_public_traffic(self, host: str | None, gateway: str = "", share: float = 0.5) -> None:
        """Send ``share`` of the requests through the Gateway ``gateway`` (``NS/NAME``) with Host
        ``host``, as users outside the mesh would; ``host`` None stops public traffic."""
        if host is None:
            with self._lock:
                self._public = None
            return
        if "/" not in gateway or not 0.0 <= share <= 1.0:
            raise ValueError(f"public traffic needs a gateway NS/NAME and a share in [0, 1], got "
                             f"{gateway!r} and {share!r}")
        with self._lock:
            self._public = (host, gateway, float(share))

    def public_request(self) -> Request:
        """A request from outside the mesh, through the Gateway set by :meth:`set_public_traffic`."""
        with self._lock:
            public = self._public
        if public is None:
            raise RuntimeError("no public traffic set: call set_public_traffic() first")
        return self._request(authority=public[0], gateway=public[1], source="istio-ingressgateway")

    def refresh_gateway(self) -> Mapping[str, Any] | None:
        """Read the VirtualService now."""
        try:
            vs = self.gateway_source()
        except Exception as exc:  # the demo's cluster may blink; keep routing as before
            log.warning("reading the VirtualService of %s/%s failed, keeping the last one: %s",
                        self.namespace, self.app, exc)
            vs = self._vs
        with self._lock:
            self._vs, self._vs_read_at = vs, time.monotonic()
        return vs

    def _gateway(self) -> Mapping[str, Any] | None:
        if time.monotonic() - self._vs_read_at >= self.refresh_interval:
            return self.refresh_gateway()
        return self._vs

    # --- requests -----------------------------------------------------------------------------

    def _draw(self, dist: Distribution[V]) -> V:
        values = [v for v, _ in dist]
        weights = [w for _, w in dist]
        return self._rng.choices(values, weights)[0]

    def make_request(self) -> Request:
        """The next request: through the public Gateway for its share of them, else from the mesh."""
        with self._lock:
            public = self._public
        if public is not None and self._rng.random() < public[2]:
            return self._request(authority=public[0], gateway=public[1], source="istio-ingressgateway")
        return self._request(authority=self.app, gateway=MESH, source=self.source_workload)

    def _request(self, *, authority: str, gateway: str, source: str) -> Request:
        uas, cookies, paths, methods = self._dists
        headers = {"user-agent": self._draw(uas)}
        cookie = self._draw(cookies)
        if cookie:
            headers["cookie"] = cookie
        if gateway != MESH:
            headers["host"] = authority
        return Request(
            headers=headers,
            path=self._draw(paths),
            method=self._draw(methods),
            authority=authority,
            source_labels={"app": source},
            source_namespace=self.source_namespace,
            gateway=gateway,
        )

    def handle(self, request: Request) -> Outcome | None:
        """Route ``request``, let its version answer, count it. None when nothing would serve it."""
        # Read outside the lock: a slow API server must not hold up scrapes.
        vs = self._gateway()
        with self._lock:
            return self._answer(request, vs)

    def _answer(self, request: Request, vs: Mapping[str, Any] | None) -> Outcome | None:
        with self._lock:
            if request.gateway != MESH and (vs is None or not applies(vs, request)):
                # The ingress gateway has no route for this host: Envoy answers 404 itself.
                self._count_unrouted(request)
                return None
            if vs is None or not applies(vs, request):
                versions = sorted(self._behaviour)
                route, version = SERVICE_ROUTE, versions[self._round_robin % len(versions)]
                self._round_robin += 1
            else:
                try:
                    route, subset = choose(vs, request, self._rng)
                except NoRoute:
                    self._count_unrouted(request)
                    return None
                if subset is None:
                    versions = sorted(self._behaviour)
                    version = versions[self._round_robin % len(versions)]
                    self._round_robin += 1
                elif subset in self._behaviour:
                    version = subset
                else:  # a subset without pods: the sidecar answers 503 itself, no destination reports it
                    self._count_unrouted(request)
                    return None
            b = self._behaviour[version]
            code = b.error_code if self._rng.random() < b.error_rate else 200
            latency = b.latency_ms_median * math.exp(b.latency_sigma * self._rng.gauss(0.0, 1.0))
            self._series.setdefault((version, code), _Series()).observe(latency)
            self._by_route[(route, version)] = self._by_route.get((route, version), 0) + 1
            key = (request.gateway, version)
            self._by_gateway[key] = self._by_gateway.get(key, 0) + 1
            return Outcome(route, version, code, latency, request.gateway)

    def _count_unrouted(self, request: Request) -> None:
        self._unrouted += 1
        self._unrouted_by_gateway[request.gateway] = self._unrouted_by_gateway.get(request.gateway, 0) + 1

    def step(self, n: int = 1) -> list[Outcome | None]:
        """Generate and handle ``n`` requests now, without the background thread."""
        out = []
        for _ in range(n):
            vs = self._gateway()
            with self._lock:
                out.append(self._answer(self.make_request(), vs))
        return out

    # --- what happened ------------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        """Exact counts so far::

            {"total": int, "unrouted": int,
             "by_version": {version: int},
             "by_route": {route: {version: int}},
             "by_gateway": {"mesh" or "NS/NAME": {version: int}},
             "unrouted_by_gateway": {"mesh" or "NS/NAME": int},
             "by_version_code": {version: {code: int}}}
        """
        with self._lock:
            by_version: dict[str, int] = {}
            by_code: dict[str, dict[int, int]] = {}
            for (v, code), s in sorted(self._series.items()):
                by_version[v] = by_version.get(v, 0) + s.count
                by_code.setdefault(v, {})[code] = s.count
            by_route: dict[str, dict[str, int]] = {}
            for (r, v), n in sorted(self._by_route.items()):
                by_route.setdefault(r, {})[v] = n
            by_gateway: dict[str, dict[str, int]] = {}
            for (g, v), n in sorted(self._by_gateway.items()):
                by_gateway.setdefault(g, {})[v] = n
            return {
                "total": sum(by_version.values()),
                "unrouted": self._unrouted,
                "by_version": by_version,
                "by_route": by_route,
                "by_gateway": by_gateway,
                "unrouted_by_gateway": dict(sorted(self._unrouted_by_gateway.items())),
                "by_version_code": by_code,
            }

    def histogram(self, version: str) -> list[tuple[float, int]]:
        """Cumulative (upper bound, count) of a version's durations over every code, +Inf last."""
        with self._lock:
            acc = [0] * (len(BUCKETS) + 1)
            for (v, _), s in self._series.items():
                if v == version:
                    acc = [a + c for a, c in zip(acc, s.cumulative(), strict=True)]
        return list(zip([*BUCKETS, math.inf], acc, strict=True))

    def _snapshot(self) -> list[tuple[str, int, int, list[int], float]]:
        with self._lock:
            items = sorted(self._series.items())
            return [(v, code, s.count, s.cumulative(), s.total_ms) for (v, code), s in items]

    def labels(self, version: str, code: int) -> dict[str, str]:
        """Istio's labels for an answer of ``version`` with ``code``."""
        return {
            "reporter": "destination",
            "source_workload": self.source_workload,
            "source_workload_namespace": self.source_namespace,
            "source_app": self.source_workload,
            "destination_workload": f"{self.app}-{version}",
            "destination_workload_namespace": self.namespace,
            "destination_app": self.app,
            "destination_version": version,
            "destination_service": f"{self.app}.{self.namespace}.svc.cluster.local",
            "destination_service_name": self.app,
            "destination_service_namespace": self.namespace,
            "request_protocol": "http",
            "response_code": str(code),
            "response_flags": "-",
            "connection_security_policy": "mutual_tls",
        }

    # --- serving and running ------------------------------------------------------------------

    @property
    def metrics_url(self) -> str:
        if self._serving is None:
            raise RuntimeError("the simulator is not serving; call serve() or start() first")
        return f"http://{self._host}:{self._serving.port}/metrics"

    @property
    def registry(self) -> CollectorRegistry:
        return self._registry

    def serve(self) -> TrafficSimulator:
        """Serve the metrics (no traffic yet)."""
        if self._serving is None:
            server = make_server(self._host, self._port, make_wsgi_app(self._registry),
                                 _ThreadingWSGIServer, handler_class=_QuietHandler)
            self._serving = ServingThread(server, f"metrics-{self.app}")
        return self

    def start(self) -> TrafficSimulator:
        """Serve the metrics and generate traffic in a background thread."""
        self.serve()
        if self._traffic is None:
            self._stopping.clear()
            self._traffic = threading.Thread(target=self._run, name=f"traffic-{self.app}", daemon=True)
            self._traffic.start()
        return self

    def stop_traffic(self) -> None:
        """Stop generating requests; metrics stay served."""
        thread, self._traffic = self._traffic, None
        if thread is not None:
            self._stopping.set()
            thread.join(timeout=10)

    def stop(self) -> None:
        self.stop_traffic()
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.stop()

    def _run(self) -> None:
        # Evenly spaced requests: each tick sends what the elapsed time owes, so the rate holds
        # even when ticks come late; a long stall is not made up for in one burst.
        period = 1.0 / self.tick_hz
        owed = 0.0
        last = time.monotonic()
        while not self._stopping.wait(period):
            now = time.monotonic()
            with self._lock:
                rate = self._rate
            owed = min(owed + rate * (now - last), max(rate, 1.0))
            last = now
            n = int(owed)
            owed -= n
            try:
                self.step(n)
            except Exception:  # a bad VirtualService must not kill the demo's traffic
                log.exception("simulated requests of %s/%s failed", self.namespace, self.app)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _IstioCollector(Collector):
    """Istio's two metrics, built from the simulator's own counts at each scrape."""

    def __init__(self, sim: TrafficSimulator) -> None:
        self.sim = sim

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "istio_requests", "Requests seen by the destination's sidecar (simulated).", labels=LABELS
        )
        durations = HistogramMetricFamily(
            "istio_request_duration_milliseconds", "Request duration in milliseconds (simulated).",
            labels=LABELS,
        )
        bounds = [str(int(b)) for b in BUCKETS] + ["+Inf"]
        for version, code, count, cumulative, total_ms in self.sim._snapshot():
            values = [self.sim.labels(version, code)[k] for k in LABELS]
            requests.add_metric(values, count)
            durations.add_metric(values, list(zip(bounds, cumulative, strict=True)), total_ms)
        yield requests
        yield durations


# --- the demo's command line ----------------------------------------------------------------------


def kubernetes_gateway_source(
    namespace: str,
    name: str,
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    api_version: str = "v1",
) -> GatewaySource:
    """A gateway source reading VirtualService ``name`` through the Kubernetes API (None when absent)."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, context=context, persist_config=False
    )
    api = client.CustomObjectsApi(api_client)

    def read() -> Mapping[str, Any] | None:
        try:
            obj = api.get_namespaced_custom_object(
                "networking.istio.io", api_version, namespace, "virtualservices", name, _request_timeout=5
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj if isinstance(obj, Mapping) else None

    return read


def file_gateway_source(path: str) -> GatewaySource:
    """A gateway source reading a VirtualService from a YAML file (None while it does not exist)."""

    def read() -> Mapping[str, Any] | None:
        p = Path(path)
        if not p.exists():
            return None
        data = yaml.safe_load(p.read_text())
        return data if isinstance(data, Mapping) else None

    return read


def parse_version(spec: str) -> tuple[str, VersionBehaviour]:
    """``v2`` or ``v2,error_rate=0.3,error_code=500,latency_ms_median=40,latency_sigma=0.4``."""
    name, *fields = [p.strip() for p in spec.split(",")]
    if not name:
        raise ValueError(f"version {spec!r} has no name")
    changes: dict[str, Any] = {}
    for f in fields:
        key, sep, value = f.partition("=")
        if not sep or key not in VersionBehaviour.model_fields:
            known = ", ".join(VersionBehaviour.model_fields)
            raise ValueError(f"{f!r} in version {spec!r} is not FIELD=VALUE with FIELD one of {known}")
        changes[key] = value
    return name, VersionBehaviour(**changes)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lamia_sandbox.simulator",
        description="Simulated traffic for one application, routed by its VirtualService, "
        "exposed as Istio metrics for Prometheus.",
    )
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--app", required=True)
    parser.add_argument("--version", action="append", required=True, metavar="NAME[,FIELD=VALUE...]",
                        help="a version and its behaviour, e.g. v2,error_rate=0.3 (repeat per version)")
    parser.add_argument("--kubeconfig", help="read the VirtualService through this kubeconfig")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("--virtual-service", help="its name (default: the app's name)")
    parser.add_argument("--vs-file", help="read the VirtualService from this YAML file instead")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--port", type=int, default=0, help="metrics port on 127.0.0.1 (default: any free)")
    args = parser.parse_args(argv)
    try:
        versions = dict(parse_version(v) for v in args.version)
    except ValueError as exc:
        parser.error(str(exc))
    if args.vs_file:
        source = file_gateway_source(args.vs_file)
    elif args.kubeconfig:
        source = kubernetes_gateway_source(
            args.namespace, args.virtual_service or args.app, kubeconfig=args.kubeconfig, context=args.context
        )
    else:
        parser.error("give --kubeconfig or --vs-file to read the VirtualService from")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sim = TrafficSimulator(args.namespace, args.app, versions, gateway_source=source,
                           rate=args.rate, seed=args.seed, port=args.port)
    with sim:
        print(sim.metrics_url, flush=True)
        stop.wait()
    c = sim.counts()
    print(f"{c['total']} requests: {c['by_version_code']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
