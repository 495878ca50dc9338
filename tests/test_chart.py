"""lamia_core/chart.py: a release's picture, checked as the SVG document it is."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

from lamia_core.chart import ChartStep, data_uri, gates, markdown_image, render_svg
from lamia_core.policies import Evidence

SVG = "{http://www.w3.org/2000/svg}"


def compare_steps() -> list[ChartStep]:
    """A compare release of 1.5.0-rc.1 against stable: 25 %, 50 %, then promoted; the boundary of the
    'not clearly worse' evidence rises to the promotion's at max weight."""
    rows = [(0.0, 25, "set_weights", None), (15.0, 50, "set_weights", (3.1, 2.0)),
            (30.0, 50, "hold", (40.0, 100.0)), (45.0, 100, "promote", (350.0, 100.0))]
    steps = []
    for t, w, decision, accept in rows:
        ev: tuple[Evidence, ...] = ()
        if accept is not None:
            rc = "1.5.0-rc.1"
            ev = (
                Evidence(version=rc, metric="errors", value="0 errors in 412 requests", comparison="count"),
                Evidence(version=rc, metric="evidence of worse errors than stable", value=1.0 + t / 10,
                         threshold=267.0, comparison="<", passed=True),
                Evidence(version=rc, metric="evidence of not clearly worse errors", value=accept[0],
                         threshold=accept[1], comparison=">=", passed=accept[0] >= accept[1]),
                Evidence(version=rc, metric="requests", value=412, threshold=5,
                         comparison="min requests", passed=True),
            )
        steps.append(ChartStep(t, {"stable": 100 - w, "1.5.0-rc.1": w, "old": 0}, decision, ev))
    return steps


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_gates_are_the_judged_numeric_evidence_with_their_thresholds_over_time() -> None:
    found = gates(compare_steps())
    metrics = [g.metric for g in found]
    assert metrics == ["evidence of worse errors than stable", "evidence of not clearly worse errors"], \
        "counts and min requests are no gate"
    accept = found[1]
    assert accept.threshold == [(15.0, 2.0), (30.0, 100.0), (45.0, 100.0)]
    assert [(t, v, ok) for t, v, ok in accept.series["1.5.0-rc.1"].points] == [
        (15.0, 3.1, True), (30.0, 40.0, False), (45.0, 350.0, True)]


def test_the_picture_has_a_weights_panel_and_one_panel_per_gate() -> None:
    root = parse(render_svg(compare_steps(), title="reviews: stable → 1.5.0-rc.1",
                            versions=["1.5.0-rc.1", "stable"]))
    labels = texts(root)
    assert labels[0] == "reviews: stable → 1.5.0-rc.1"
    assert "weights (%)" in labels
    assert "evidence of worse errors than stable (log scale)" in labels, "1 .. 267 spans decades"
    assert "evidence of not clearly worse errors (log scale)" in labels
    assert "old" not in labels, "a version without traffic draws no line"
    dots = [c.get("fill") for c in root.iter(f"{SVG}circle")]
    assert dots.count("#c62828") == 1 and dots.count("#2e7d32") == 5, "one red dot: the check that missed"
    thresholds = [p for p in root.iter(f"{SVG}path") if p.get("stroke-dasharray") == "6,4"]
    assert len(thresholds) == 2
    weight_lines = [p for p in root.iter(f"{SVG}path") if p.get("stroke-width") == "2.5"]
    assert len(weight_lines) == 2, "stable and 1.5.0-rc.1"
    finals = [ln for ln in root.iter(f"{SVG}line") if ln.get("stroke-dasharray") == "2,3"]
    assert len(finals) == 1 and finals[0].get("stroke") == "#2e7d32", "the promotion, in green"


def test_a_rollback_is_marked_red_and_a_linear_gate_has_its_threshold_on_the_axis() -> None:
    health = "external_upstream_rq_2xx / upstream_rq_total"
    steps = [
        ChartStep(0.0, {"v9": 90, "v10": 10}, "set_weights"),
        ChartStep(10.0, {"v9": 80, "v10": 20}, "set_weights", (
            Evidence(version="v10", metric=health, value=0.97, threshold=0.8, comparison=">=", passed=True),
            Evidence(version="v9", metric=health, value=0.99, comparison="reference"))),
        ChartStep(20.0, {"v9": 100, "v10": 0}, "rollback", (
            Evidence(version="v10", metric=health, value=0.55, threshold=0.8, comparison=">=", passed=False),
            Evidence(version="v9", metric=health, value=0.99, comparison="reference"))),
    ]
    root = parse(render_svg(steps, title="ratings v9 → v10", versions=["v10", "v9"]))
    labels = texts(root)
    assert health in labels and f"{health} (log scale)" not in labels
    assert "threshold (>=)" in labels and "v9" in labels and "v10" in labels
    dots = [c.get("fill") for c in root.iter(f"{SVG}circle")]
    assert dots == ["#2e7d32", "#c62828", "#9e9e9e", "#9e9e9e"], "v10 met then missed; v9 for reference"
    finals = [ln for ln in root.iter(f"{SVG}line") if ln.get("stroke-dasharray") == "2,3"]
    assert [ln.get("stroke") for ln in finals] == ["#c62828"]


def test_text_from_users_is_escaped_and_the_image_travels_as_a_data_uri() -> None:
    steps = [ChartStep(0.0, {"a": 100}, "set_weights", (
        Evidence(version="a", metric='metric "a" "x" < 2 & ok', value=1.0, threshold=2.0, comparison="<",
                 passed=True),))]
    svg = render_svg(steps, title="<script>alert(1)</script> & co")
    root = parse(svg)  # well-formed although the title and the metric hold markup
    assert "<script>" not in svg and texts(root)[0] == "<script>alert(1)</script> & co"
    uri = data_uri(svg)
    assert base64.b64decode(uri.removeprefix("data:image/svg+xml;base64,")).decode() == svg
    assert markdown_image(svg, "weights [and] gates") == f"![weights (and) gates]({uri})"


def test_no_steps_is_an_empty_but_valid_picture() -> None:
    root = parse(render_svg([], title="nothing yet"))
    assert texts(root)[0] == "nothing yet" and not list(root.iter(f"{SVG}circle"))
