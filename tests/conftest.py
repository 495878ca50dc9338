"""Fixtures live in tests/plugins, one module per real server the tests start."""

pytest_plugins = [
    "tests.plugins.paths",
]
