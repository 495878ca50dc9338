"""Fixtures live in tests/plugins, one module per real server the tests start."""

import os

from hypothesis import HealthCheck, settings

# Property tests are judged on what they find, never on how long one example takes: machines
# are shared and busy. Two profiles, chosen by HYPOTHESIS_PROFILE (the Makefile sets "ci"):
# - ci: the same examples on every run (derandomize, no example database), so CI turns red only
#   on a real defect, and a failure prints the blob that reproduces it;
# - local, the default by hand: new random examples each run, failures remembered in
#   .hypothesis/, so exploring goes on where CI stays put.
_QUIET = [HealthCheck.too_slow]
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, deadline=None,
                          suppress_health_check=_QUIET)
settings.register_profile("local", deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "local"))

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
