"""A fresh fake Slack server per test (it starts in milliseconds)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lamia_sandbox.fake_slack import FakeSlack


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as slack:
        yield slack
