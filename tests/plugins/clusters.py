"""Two clusters (two API-server emulators), one kubeconfig naming both, and no saved cluster left over."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lamia_sandbox.kube_emulator import KubeEmulator

#: The regions' contexts, and the tokens of their users: secrets that must never show in a flow run.
REGIONS = ("prod-eu", "prod-us")
TOKENS = {"prod-eu": "eu-deployer-7f3a9c2e", "prod-us": "us-deployer-1b8d4e6f"}


@dataclass
class TwoRegions:
    eu: KubeEmulator
    us: KubeEmulator
    kubeconfig: Path

    def emulator(self, region: str) -> KubeEmulator:
        return self.eu if region == "prod-eu" else self.us


def write_kubeconfig(path: Path, servers: dict[str, str], current: str | None = None) -> Path:
    """A kubeconfig as a release engineer keeps it: one context per cluster, a token per user."""
    config: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": n, "cluster": {"server": url}} for n, url in servers.items()],
        "users": [{"name": f"deployer-{n}", "user": {"token": TOKENS.get(n, f"{n}-token")}} for n in servers],
        "contexts": [{"name": n, "context": {"cluster": n, "user": f"deployer-{n}"}} for n in servers],
        "current-context": current or next(iter(servers)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def remove_saved_clusters() -> None:
    from flows.clusters import LamiaCluster, names

    for name in names():
        LamiaCluster.delete(name)


@pytest.fixture
def no_saved_clusters(prefect_server: Any) -> Iterator[None]:
    """The session's Prefect server with no Lamia Cluster block, before and after the test."""
    remove_saved_clusters()
    yield
    remove_saved_clusters()


@pytest.fixture
def two_regions(tmp_path: Path, no_saved_clusters: None) -> Iterator[TwoRegions]:
    with KubeEmulator() as eu, KubeEmulator() as us:
        path = write_kubeconfig(tmp_path / "kube" / "config", {"prod-eu": eu.url, "prod-us": us.url})
        yield TwoRegions(eu=eu, us=us, kubeconfig=path)


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connections to it are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An address that accepts connections and never answers, as a firewalled API server might."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"
