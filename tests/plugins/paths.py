"""Where the project's shared data lives (``../shared`` from the project's root)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(__import__("os").environ.get("LAMIA_SHARED_DIR", ROOT.parent / "shared"))
ISTIO_CRDS = SHARED / "istio" / "networking-crds.yaml"


@pytest.fixture(scope="session")
def istio_crds_path() -> Path:
    if not ISTIO_CRDS.exists():
        pytest.fail(f"Istio CRDs not found at {ISTIO_CRDS}; set LAMIA_SHARED_DIR")
    return ISTIO_CRDS
