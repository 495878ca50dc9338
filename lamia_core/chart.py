"""A release as a picture: the weights and every gate's value over time, against its threshold.

Pure formatting: steps in, SVG text out (no plotting library, no I/O). The
Prefect UI shows it as a Markdown image with a ``data:`` URI, which its
Markdown renderer keeps while it drops inline ``<svg>``.

Panels share the time axis (seconds since the release started):

- **weights**: each version's weight in % (a step line: weights hold between steps);
- one panel per **gate**, i.e. per measured metric with a numeric value: each
  version's value as a line with a dot per check (green met, red missed, grey
  not judged), and the threshold or boundary it was judged against as a dashed
  step line. A panel whose values span more than two decades is drawn on a log
  scale (the compare policy's evidence ratios against their boundaries).

Request counts against ``min_requests`` and the compare policy's raw counts are
left out: they say whether there was enough data, which the step table says.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

from lamia_core.policies import Evidence

#: Evidence that is about the amount of data, not a gate.
NOT_GATES = frozenset({"min requests", "count", "chooses"})
WIDTH = 960
LEFT = 76
RIGHT = 24
TITLE_H = 34
WEIGHTS_H = 150
GATE_H = 130
GAP = 34
AXIS_H = 34
#: Line colours per version, in order; the target is always the first, the baseline the second.
PALETTE = ("#1565c0", "#6d6d6d", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457")
PASSED = {True: "#2e7d32", False: "#c62828", None: "#9e9e9e"}
FONT = "font-family='DejaVu Sans, Verdana, sans-serif'"


@dataclass(frozen=True)
class ChartStep:
    """One row of a release's history, as the chart needs it."""

    elapsed: float
    """Seconds since the release started."""
    weights: Mapping[str, int]
    decision: str
    evidence: tuple[Evidence, ...] = ()


@dataclass
class Series:
    version: str | None
    points: list[tuple[float, float, bool | None]] = field(default_factory=list)


@dataclass
class Gate:
    """One panel: a metric, each version's values and the threshold they were held to."""

    metric: str
    comparison: str
    series: dict[str | None, Series] = field(default_factory=dict)
    threshold: list[tuple[float, float]] = field(default_factory=list)

    def values(self) -> list[float]:
        return [v for s in self.series.values() for _, v, _ in s.points] + [v for _, v in self.threshold]


def _number(value: float | str | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def gates(steps: Sequence[ChartStep]) -> list[Gate]:
    """The gates measured in ``steps``, in the order they first appear."""
    found: dict[str, Gate] = {}
    for step in steps:
        for ev in step.evidence:
            value = _number(ev.value)
            if value is None or ev.comparison in NOT_GATES:
                continue
            gate = found.setdefault(ev.metric, Gate(ev.metric, ev.comparison))
            if ev.threshold is not None and ev.comparison != "reference":
                gate.comparison = ev.comparison
                gate.threshold.append((step.elapsed, float(ev.threshold)))
            gate.series.setdefault(ev.version, Series(ev.version)).points.append(
                (step.elapsed, value, ev.passed))
    return list(found.values())


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1e5 or abs(x) < 1e-3:
        return f"{x:.0e}"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _nice_step(span: float, ticks: int) -> float:
    raw = span / max(ticks, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), 10 * mag)


@dataclass(frozen=True)
class _Scale:
    lo: float
    hi: float
    top: float
    height: float
    log: bool = False

    def y(self, v: float) -> float:
        if self.log:
            v, lo, hi = math.log10(max(v, 1e-300)), math.log10(self.lo), math.log10(self.hi)
        else:
            lo, hi = self.lo, self.hi
        frac = 0.5 if hi == lo else (v - lo) / (hi - lo)
        return self.top + self.height * (1 - min(max(frac, 0.0), 1.0))

    def ticks(self) -> list[float]:
        if self.log:
            first, last = math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi))
            stride = max(1, math.ceil((last - first) / 5))
            return [10.0 ** e for e in range(first, last + 1, stride)]
        step = _nice_step(self.hi - self.lo, 4)
        start = math.ceil(self.lo / step) * step
        return [start + i * step for i in range(int((self.hi - start) / step + 1e-9) + 1)]


def _value_scale(values: Sequence[float], top: float, height: float) -> _Scale:
    lo, hi = min(values), max(values)
    if lo > 0 and hi / lo > 100:
        decades = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
        return _Scale(*decades, top, height, log=True)
    if lo == hi:
        pad = abs(lo) * 0.1 or 1.0
        return _Scale(lo - pad, hi + pad, top, height)
    pad = (hi - lo) * 0.08
    # A non-negative quantity keeps its axis at or above zero.
    low = max(lo - pad, 0.0) if lo >= 0 else lo - pad
    return _Scale(low, hi + pad, top, height)


def _path(points: Sequence[tuple[float, float]], *, step: bool) -> str:
    """An SVG path through ``points``; ``step`` holds each value until the next point's time."""
    if not points:
        return ""
    (x0, y0), rest = points[0], points[1:]
    moves = [f"H{x:.1f} V{y:.1f}" if step else f"L{x:.1f},{y:.1f}" for x, y in rest]
    return " ".join([f"M{x0:.1f},{y0:.1f}", *moves])


def render_svg(steps: Sequence[ChartStep], *, title: str, versions: Sequence[str] = ()) -> str:
    """The chart of ``steps`` as a standalone SVG document.

    ``versions`` orders the weight lines and their colours (target first, then the
    baseline); versions not named follow in alphabetical order.
    """
    # A little room after the last step, so that its dot and the final decision's line stay visible.
    span = max(max((s.elapsed for s in steps), default=0.0) * 1.03, 1.0)
    plot_w = WIDTH - LEFT - RIGHT
    panels = gates(steps)
    height = TITLE_H + WEIGHTS_H + GAP + len(panels) * (GATE_H + GAP) + AXIS_H
    # A version that never had traffic in this release would only draw a line along zero.
    served = {v for s in steps for v, w in s.weights.items() if w > 0}
    named = [v for v in dict.fromkeys(versions) if v in served]
    order = named + sorted(served - set(named))
    colour = {v: PALETTE[i % len(PALETTE)] for i, v in enumerate(order)}

    def x(t: float) -> float:
        return LEFT + plot_w * t / span

    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
        f"viewBox='0 0 {WIDTH} {height}' {FONT} font-size='12'>",
        f"<rect width='{WIDTH}' height='{height}' fill='#ffffff'/>",
        f"<text x='{LEFT}' y='22' font-size='15' font-weight='bold' fill='#212121'>{escape(title)}</text>",
    ]
    top = TITLE_H
    tick = _nice_step(span, 8)
    x_ticks = [i * tick for i in range(int(span / tick) + 1)]

    def frame(label: str, scale: _Scale, fmt: str = "") -> None:
        out.append(f"<text x='{LEFT}' y='{scale.top - 8:.1f}' font-weight='bold' fill='#212121'>"
                   f"{escape(label)}</text>")
        out.append(f"<rect x='{LEFT}' y='{scale.top:.1f}' width='{plot_w}' height='{scale.height}' "
                   "fill='#fafafa' stroke='#bdbdbd'/>")
        for t in x_ticks:
            out.append(f"<line x1='{x(t):.1f}' x2='{x(t):.1f}' y1='{scale.top:.1f}' "
                       f"y2='{scale.top + scale.height:.1f}' stroke='#eeeeee'/>")
        for v in scale.ticks():
            y = scale.y(v)
            out.append(f"<line x1='{LEFT}' x2='{LEFT + plot_w}' y1='{y:.1f}' y2='{y:.1f}' stroke='#eeeeee'/>")
            out.append(f"<text x='{LEFT - 6}' y='{y + 4:.1f}' text-anchor='end' fill='#616161'>"
                       f"{escape(_fmt(v) + fmt)}</text>")

    def legend(entries: Sequence[tuple[str, str, bool]], y: float) -> None:
        pos = float(LEFT + plot_w)
        for text, col, dashed in reversed(entries):
            pos -= 7.2 * len(text) + 34
            dash = " stroke-dasharray='6,4'" if dashed else ""
            out.append(f"<line x1='{pos:.1f}' x2='{pos + 20:.1f}' y1='{y - 4:.1f}' y2='{y - 4:.1f}' "
                       f"stroke='{col}' stroke-width='2.5'{dash}/>")
            out.append(f"<text x='{pos + 25:.1f}' y='{y:.1f}' fill='#424242'>{escape(text)}</text>")

    weights = _Scale(0.0, 100.0, top + 20, WEIGHTS_H - 20)
    frame("weights (%)", weights)
    for v in order:
        pts = [(x(s.elapsed), weights.y(float(s.weights.get(v, 0)))) for s in steps]
        if pts:
            pts.append((x(span), pts[-1][1]))
            out.append(f"<path d='{_path(pts, step=True)}' fill='none' stroke='{colour[v]}' "
                       "stroke-width='2.5'/>")
    legend([(v, colour[v], False) for v in order], weights.top - 8)
    top += WEIGHTS_H + GAP

    for gate in panels:
        scale = _value_scale(gate.values(), top + 20, GATE_H - 20)
        frame(f"{gate.metric}{' (log scale)' if scale.log else ''}", scale)
        entries: list[tuple[str, str, bool]] = []
        if gate.threshold:
            pts = [(x(t), scale.y(v)) for t, v in gate.threshold]
            pts.append((x(span), pts[-1][1]))
            out.append(f"<path d='{_path(pts, step=True)}' fill='none' stroke='#212121' stroke-width='1.5' "
                       "stroke-dasharray='6,4'/>")
            entries.append((f"threshold ({gate.comparison})", "#212121", True))
        for s in gate.series.values():
            col = colour.get(s.version or "", PALETTE[0])
            pts = [(x(t), scale.y(v)) for t, v, _ in s.points]
            out.append(f"<path d='{_path(pts, step=False)}' fill='none' stroke='{col}' stroke-width='2'/>")
            for (t, val, ok), (px, py) in zip(s.points, pts, strict=True):
                verdict = {True: "met", False: "missed", None: "not judged"}[ok]
                tip = f"{s.version or gate.metric} at {t:.0f} s: {_fmt(val)} ({verdict})"
                out.append(f"<circle cx='{px:.1f}' cy='{py:.1f}' r='4' fill='{PASSED[ok]}' stroke='#ffffff'>"
                           f"<title>{escape(tip)}</title></circle>")
            entries.append((s.version or "value", col, False))
        legend(entries, scale.top - 8)
        top += GATE_H + GAP

    axis_y = top - GAP + 16
    for t in x_ticks:
        out.append(f"<text x='{x(t):.1f}' y='{axis_y:.1f}' text-anchor='middle' fill='#616161'>"
                   f"{_fmt(t)}</text>")
    out.append(f"<text x='{LEFT + plot_w}' y='{axis_y + 16:.1f}' text-anchor='end' fill='#616161'>"
               "seconds since the release started</text>")
    for step in steps:
        if step.decision in ("promote", "rollback", "finish"):
            at = x(step.elapsed)
            col = PASSED[step.decision != "rollback"]
            out.append(f"<line x1='{at:.1f}' x2='{at:.1f}' y1='{TITLE_H}' y2='{top - GAP:.1f}' "
                       f"stroke='{col}' stroke-width='1.5' stroke-dasharray='2,3'/>")
    out.append("</svg>")
    return "\n".join(out)


def data_uri(svg: str) -> str:
    """The SVG as a ``data:`` URI, the form of image the Prefect UI's Markdown renderer shows."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")


def markdown_image(svg: str, alt: str) -> str:
    # Brackets in the alt text would end the Markdown link early.
    return f"![{alt.replace('[', '(').replace(']', ')')}]({data_uri(svg)})"


__all__ = ["ChartStep", "Gate", "data_uri", "gates", "markdown_image", "render_svg"]
