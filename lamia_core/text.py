"""How Lamia writes numbers, weights and evidence for people: the step table, `lamia release
watch`, the CLI's tables, Slack and the reasons of decisions all use these, so that a value reads
the same wherever it is seen.

Names end in ``_text`` so that they do not shadow a caller's variables. ``escape`` lets a
caller protect names in its medium (Slack's mrkdwn, Markdown's backticks) without a second
formatter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Protocol

NO_DATA = "no data"

Escape = Callable[[str], str]


def _same(text: str) -> str:
    return text


def number_text(value: float | str | bool | None, *, none: str = NO_DATA) -> str:
    """A measured value: integers as integers, ratios with 4 significant digits, large values
    with one decimal, huge ones in exponent form; ``none`` for no data (never 0)."""
    if value is None:
        return none
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if abs(v) < 1000:
        return f"{v:.4g}"
    if abs(v) < 1e6:
        return f"{v:.1f}"
    return f"{v:.3g}"


def weights_text(values: Mapping[str, int], *, escape: Escape = _same) -> str:
    """``1.4.2=90, 1.5.0=10``: every version, in name order."""
    return ", ".join(f"{escape(v)}={w}" for v, w in sorted(values.items()))


class EvidenceLike(Protocol):
    """What :func:`evidence_text` reads; :class:`lamia_core.policies.Evidence` has it."""

    @property
    def version(self) -> str | None: ...
    @property
    def metric(self) -> str: ...
    @property
    def value(self) -> float | str | None: ...
    @property
    def threshold(self) -> float | None: ...


#: Comparisons that describe a value without judging it; not worth repeating after it.
_PLAIN = frozenset({"", "count"})


def evidence_text(ev: EvidenceLike, *, escape: Escape = _same, none: str = NO_DATA) -> str:
    """``1.5.0: success_rate = 0.9877 (>= 0.8) ✓``: what was measured, against what, and whether
    it passed (no mark when it was not judged)."""
    who = f"{escape(ev.version)}: " if ev.version else ""
    value = ev.value if not isinstance(ev.value, str) else escape(ev.value)
    line = f"{who}{escape(ev.metric)} = {number_text(value, none=none)}"
    comparison = str(getattr(ev, "comparison", "") or "")
    if ev.threshold is not None:
        line += f" ({escape(comparison) + ' ' if comparison else ''}{number_text(ev.threshold)})"
    elif comparison not in _PLAIN:
        line += f" ({escape(comparison)})"
    passed = getattr(ev, "passed", None)
    if passed is not None:
        line += " ✓" if passed else " ✗"
    return line
