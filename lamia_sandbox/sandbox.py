"""Everything a release needs on one machine: the API-server emulator holding an
application, the traffic simulator routing by its VirtualService, and Prometheus
scraping the simulator. The demo and the end-to-end tests both start this."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from lamia_core.kube import KubeConfig
from lamia_core.prometheus import PrometheusConfig
from lamia_sandbox._lifecycle import Service
from lamia_sandbox.kube_emulator import KubeEmulator
from lamia_sandbox.prometheus_server import PrometheusServer
from lamia_sandbox.seed import seed_application
from lamia_sandbox.simulator import TrafficSimulator, VersionBehaviour, kubernetes_gateway_source


class Sandbox(Service):
    """Start with ``with Sandbox(...) as sb:``; ``sb.kube`` and ``sb.prometheus`` configure Lamia."""

    def __init__(
        self,
        namespace: str,
        app: str,
        versions: Mapping[str, VersionBehaviour],
        *,
        rate: float = 100.0,
        seed: int | None = None,
        scrape_interval: str = "1s",
        workdir: Path | None = None,
    ) -> None:
        self.namespace = namespace
        self.app = app
        self.versions = dict(versions)
        self.rate = rate
        self.seed = seed
        self.scrape_interval = scrape_interval
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lamia-sandbox-"))
        self.emulator = KubeEmulator()
        self.simulator: TrafficSimulator | None = None
        self.prometheus_server: PrometheusServer | None = None
        self.kubeconfig = self.workdir / "kubeconfig"

    @property
    def kube(self) -> KubeConfig:
        return KubeConfig(kubeconfig=str(self.kubeconfig), context="lamia-emulator")

    @property
    def prometheus(self) -> PrometheusConfig:
        assert self.prometheus_server is not None, "sandbox not started"
        return PrometheusConfig(url=self.prometheus_server.url, timeout=5.0)

    def start(self) -> Sandbox:
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.emulator.start()
            self.emulator.write_kubeconfig(self.kubeconfig, namespace=self.namespace)
            seed_application(self.emulator, self.namespace, self.app, sorted(self.versions))
            # The Service is named like the app, and so is Lamia's VirtualService.
            source = kubernetes_gateway_source(
                self.namespace, self.app, kubeconfig=str(self.kubeconfig), context="lamia-emulator"
            )
            self.simulator = TrafficSimulator(
                self.namespace, self.app, self.versions, gateway_source=source, rate=self.rate, seed=self.seed
            )
            self.simulator.start()
            self.prometheus_server = PrometheusServer(
                [self.simulator.metrics_url], scrape_interval=self.scrape_interval
            )
            self.prometheus_server.start()
            self.prometheus_server.wait_for_series(
                f'istio_requests_total{{destination_app="{self.app}"}}', timeout=60.0
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for stop in (
            self.prometheus_server.stop if self.prometheus_server else None,
            self.simulator.stop if self.simulator else None,
            self.emulator.stop,
        ):
            if stop is not None:
                try:
                    stop()
                except Exception:  # keep stopping the rest
                    pass
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
