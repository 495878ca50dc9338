"""Lamia's domain: models, languages, metrics, policies, the release engine and adapters.

Nothing here imports Prefect: everything that decides is testable without a
server or a clock. ``tasks`` and ``flows`` build on this package, never the
other way round.
"""

__version__ = "0.1.0"
