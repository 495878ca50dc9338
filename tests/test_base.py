"""The shared base of Lamia's value objects (lamia_core._base)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from lamia_core._base import Frozen


class Release(Frozen):
    baseline: str
    target: str


def test_a_frozen_model_cannot_be_changed() -> None:
    release = Release(baseline="v9", target="v10")
    with pytest.raises(ValidationError, match="frozen"):
        release.target = "1.5.0-rc.1"  # type: ignore[misc]
    assert release.target == "v10"


def test_a_frozen_model_refuses_a_field_it_does_not_know() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Release(baseline="stable", target="canary", tagret="canary")  # type: ignore[call-arg]
