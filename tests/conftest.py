"""Fixtures live in tests/plugins, one module per real server the tests start."""

from hypothesis import HealthCheck, settings

# CI machines are slower and busier than a developer's: property tests are judged on what
# they find, never on how long one example takes.
settings.register_profile("lamia", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lamia")

pytest_plugins = [
    "tests.plugins.kube",
    "tests.plugins.paths",
    "tests.plugins.prometheus",
    "tests.plugins.istio_schema",
    "tests.plugins.fake_slack",
    "tests.plugins.prefect_server",
    "tests.plugins.sandbox",
    "tests.plugins.clusters",
]
