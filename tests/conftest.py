"""Fixtures live in tests/plugins, one module per real server the tests start."""

pytest_plugins = [
    "tests.plugins.kube",
    "tests.plugins.paths",
    "tests.plugins.prometheus",
    "tests.plugins.istio_schema",
    "tests.plugins.fake_slack",
    "tests.plugins.prefect_server",
    "tests.plugins.sandbox",
]
