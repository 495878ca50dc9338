"""The suite's own set-up (tests/conftest.py): the Hypothesis profile HYPOTHESIS_PROFILE names."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]


def test_the_profile_in_force_is_the_one_named() -> None:
    profile = os.environ.get("HYPOTHESIS_PROFILE", "local")
    assert settings.default == settings.get_profile(profile)
    if profile == "ci":
        # Same examples every run, nothing remembered between runs: CI cannot fail by chance.
        assert settings.default.derandomize and settings.default.database is None
        assert settings.default.print_blob
    assert settings.default.deadline is None


def test_make_exports_the_ci_profile_to_what_it_runs() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_PROFILE"}
    # A recipe added for the occasion sees what `make test` and `make test-fast` give pytest.
    shown = subprocess.run(["make", "-s", "--eval=profile:\n\t@echo $$HYPOTHESIS_PROFILE", "profile"],
                           cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    assert shown.strip() == "ci"
