"""Commands of this group are registered on the groups in ``flows.cli._app``."""

from __future__ import annotations
