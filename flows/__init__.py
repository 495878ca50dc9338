"""Prefect flows that drive releases, and the ``lamia`` command line."""
