"""The Kubernetes API server emulator, a kubeconfig pointing at it and a client built from that."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from lamia_sandbox.kube_emulator import KubeEmulator

CONTEXT = "lamia-emulator"


@pytest.fixture
def kube_emulator() -> Iterator[KubeEmulator]:
    """A fresh emulator per test, stopped after it."""
    with KubeEmulator() as emulator:
        yield emulator


@pytest.fixture
def kubeconfig(kube_emulator: KubeEmulator, tmp_path: Path) -> Path:
    return kube_emulator.write_kubeconfig(tmp_path / "kubeconfig", context=CONTEXT)


@pytest.fixture
def kube_api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kubeconfig), context=CONTEXT, persist_config=False)
    try:
        yield api
    finally:
        api.close()
