"""Fault injection for the chaos tests: kill this process outright at a named point of a release.

``LAMIA_CHAOS_KILL_AT=<point>`` makes :func:`point` send this process SIGKILL
there, as a node that dies or an OOM killer would: no cleanup, no signal
handler, nothing written. Unset (always, outside the chaos tests), it does
nothing. The points of a release, in order: ``lease-taken``,
``gateway-written``, ``step-written`` (each weight change but the last),
``mid-sleep``, ``observation``, ``final-write``, ``lease-dropped``.
"""

from __future__ import annotations

import os
import signal

ENV = "LAMIA_CHAOS_KILL_AT"
POINTS = ("lease-taken", "gateway-written", "step-written", "mid-sleep", "observation", "final-write",
          "lease-dropped")


def point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
