"""A release's history in the Prefect backend: artifacts, events and tags.

Each run keeps one artifact of each kind, created once and then updated in
place (a new ``create_*_artifact`` under the same key would add another card to
the run page for every step):

- ``lamia-<ns>-<app>-summary`` (Markdown): how the run stands or ended, first;
  the picture; every step with its whole reason (a Markdown table wraps its
  cells, the table artifact's cells are cut at the page's width);
- ``…-chart`` (Markdown): the picture alone (:mod:`lamia_core.chart`), also in
  its description, which is what the run page's Artifacts tab shows of it;
- ``…-steps`` (table): the same rows as data, for programs (`lamia demo`);
- ``…-progress``: the target's weight.

Events are named for what happened, since the Prefect UI titles an event by its
name alone (``lamia.release.weights-shifted`` reads "Lamia release weights
shifted"); their payload carries the step, the weights, the decision and its
reason. The run is tagged with its outcome (``lamia/outcome:promoted``), which
its Prefect state, named as Prefect names its type, does not say
(:mod:`lamia_core.outcome`).

Artifacts and events go through the same API as the flow's own states: when
that API is down the flow is failing anyway, so they get no retries of their own.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.context import FlowRunContext
from prefect.events import emit_event

from lamia_core.chart import ChartStep, markdown_image, render_svg
from lamia_core.engine import Decision, Evidence
from lamia_core.outcome import EVENT_PREFIX, Outcome
from lamia_core.text import evidence_text, weights_text

#: The event each engine decision emits, named so that its title in the Prefect UI says what it is.
STEP_EVENTS = {
    "set_weights": "weights-shifted",
    "hold": "weights-kept",
    "promote": "promotion-decided",
    "rollback": "rollback-decided",
    "finish": "hold-decided",
}


def app_tag(namespace: str, app: str) -> str:
    return f"lamia/app:{namespace}/{app}"


def artifact_key(*parts: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())).strip("-")


def app_resource(namespace: str, app: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"lamia.app.{namespace}.{app}",
        "prefect.resource.name": app,
        "prefect.resource.role": "application",
        "lamia.namespace": namespace,
        "lamia.app": app,
    }


def current_run() -> tuple[str, str]:
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        raise RuntimeError("Lamia's flows record history only inside a flow run")
    return str(ctx.flow_run.id), ctx.flow_run.name


def flow_run_url(flow_run_id: str) -> str | None:
    """The run's page in the Prefect UI, when the UI's address is known."""
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None


def tag_run(flow_run_id: str, *tags: str) -> None:
    """Add tags to the running flow run, so `lamia release history` can find it."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        merged = sorted(set(run.tags) | set(tags))
        client.update_flow_run(UUID(flow_run_id), tags=merged)


def run_outcome(run: Any) -> Outcome | None:
    """How a run ended (a FlowRun read from the API, or its id): its outcome tag, else what its state
    says (:meth:`Outcome.of_run`); None while it runs."""
    if not hasattr(run, "tags"):
        flow_run_id = getattr(getattr(run, "state_details", None), "flow_run_id", None) or run
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(str(flow_run_id)))
    state = run.state
    kind = state.type.value if state is not None else None
    return Outcome.of_run(run.tags, kind, state.name if state is not None else None)


# --- run names ----------------------------------------------------------------------------------


def _params() -> Any:
    ctx = FlowRunContext.get()
    return (ctx.parameters or {}).get("params") if ctx is not None else None


def expose_run_name() -> str:
    """``reviews expose shop.example.com`` (``unexpose`` with remove)."""
    params = _params()
    if params is None:
        return "expose"
    return f"{params.app} {'unexpose' if params.remove else 'expose'} {params.host}"


def reconcile_run_name() -> str:
    """``reconcile prod-eu``, ``reconcile shop``, or ``reconcile every cluster``."""
    params = _params()
    scope = [s for s in (getattr(params, "cluster", None), getattr(params, "namespace", None)) if s]
    return f"reconcile {' '.join(scope) if scope else 'every cluster'}"


# --- text ---------------------------------------------------------------------------------------


def _cell(text: Any) -> str:
    """Text safe in a Markdown table cell: no line break, no column separator."""
    return re.sub(r"\s+", " ", str(text)).replace("|", "\\|")


@dataclass
class ReleaseHistory:
    """Collects every step of one run and mirrors it into artifacts and events."""

    namespace: str
    app: str
    kind: str
    baseline: str | None = None
    target: str | None = None
    flow_run_id: str = ""
    flow_run_name: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    started_monotonic: float = field(default_factory=time.monotonic)
    last_evidence: tuple[Evidence, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    _chart: list[ChartStep] = field(default_factory=list)
    _weights: dict[str, int] = field(default_factory=dict)
    _artifacts: dict[str, UUID] = field(default_factory=dict)
    _progress_id: UUID | None = None

    @property
    def key(self) -> str:
        return artifact_key("lamia", self.namespace, self.app)

    @property
    def is_release(self) -> bool:
        return self.baseline is not None and self.target is not None

    @property
    def event_prefix(self) -> str:
        """``lamia.release`` for a release; a manual change's events say which (``lamia.set-weights``)."""
        return EVENT_PREFIX if self.is_release or self.kind == "canary-release" else f"lamia.{self.kind}"

    def resource(self) -> dict[str, str]:
        return app_resource(self.namespace, self.app)

    def related(self) -> list[dict[str, str]]:
        if not self.flow_run_id:
            return []
        return [
            {
                "prefect.resource.id": f"prefect.flow-run.{self.flow_run_id}",
                "prefect.resource.role": "flow-run",
                "prefect.resource.name": self.flow_run_name,
            }
        ]

    def emit(self, suffix: str, payload: dict[str, Any]) -> None:
        emit_event(
            event=f"{self.event_prefix}.{suffix}",
            resource=self.resource(),
            related=self.related(),
            payload={"kind": self.kind, "baseline": self.baseline, "target": self.target, **payload},
        )

    # --- the run's life ---------------------------------------------------------------------------

    def started(self, weights: dict[str, int], details: dict[str, Any]) -> None:
        self.flow_run_id, self.flow_run_name = current_run()
        self.details = dict(details)
        self._weights = dict(weights)
        tag_run(self.flow_run_id, "lamia", app_tag(self.namespace, self.app), f"lamia/kind:{self.kind}")
        if self.target is not None:
            self._progress_id = cast(
                UUID,
                create_progress_artifact(
                    progress=float(weights.get(self.target, 0)),
                    key=artifact_key(self.key, "progress"),
                    description=f"Weight of {self.target} in % ({self.app} in {self.namespace})",
                ),
            )
        self._publish_summary(None, "started")
        self.emit("started", {"weights": weights, **details})

    def step(
        self, decision: Decision, weights: dict[str, int], acted_in: float | None = None
    ) -> dict[str, Any]:
        """Record one decision of the engine, and the weights in force after it.

        ``acted_in`` is how long Lamia took from waking up to the weights being
        applied (observe, decide, write): the orchestration's share of a step.
        """
        row = self._row(decision.action, weights, decision.reason, decision.evidence, acted_in,
                        decision.wake_at)
        if decision.evidence:
            self.last_evidence = tuple(decision.evidence)
        if self._progress_id is not None and self.target is not None:
            update_progress_artifact(self._progress_id, float(weights.get(self.target, 0)))
        self.emit(
            STEP_EVENTS.get(decision.action, f"step.{decision.action}"),
            {
                "step": row["step"],
                "decision": decision.action,
                "reason": decision.reason,
                "weights": weights,
                "evidence": [e.model_dump(mode="json") for e in decision.evidence],
                "acted_in_s": row["acted_in_s"],
            },
        )
        return row

    def note(
        self, what: str, weights: dict[str, int], reason: str, details: dict[str, Any]
    ) -> dict[str, Any]:
        """A row that is not the engine's decision (e.g. ``interrupted``), with an event of that name."""
        return self._noted(what, what, weights, reason, details)

    def finished(self, outcome: Outcome, weights: dict[str, int], reason: str) -> None:
        self._weights = dict(weights)
        if self.flow_run_id:
            tag_run(self.flow_run_id, outcome.tag)
        self._publish_summary(outcome, reason)
        if self._progress_id is not None and self.target is not None:
            update_progress_artifact(self._progress_id, float(weights.get(self.target, 0)))
        self.emit(outcome.value, {"outcome": outcome.value, "reason": reason, "weights": weights,
                                  "steps": len(self.rows), "duration_s": round(self._elapsed(), 2)})

    # --- rows and artifacts -----------------------------------------------------------------------

    def _noted(self, event: str, decision: str, weights: dict[str, int], reason: str,
               details: dict[str, Any] | None) -> dict[str, Any]:
        row = self._row(decision, weights, reason, (), None)
        self.emit(event, {"step": row["step"], "decision": decision, "reason": reason, "weights": weights,
                          **(details or {})})
        return row

    def _elapsed(self) -> float:
        return time.monotonic() - self.started_monotonic

    def _row(self, decision: str, weights: dict[str, int], reason: str, evidence: tuple[Evidence, ...],
             acted_in: float | None, next_check: float | None = None) -> dict[str, Any]:
        now = datetime.now(UTC)
        elapsed = self._elapsed()
        row: dict[str, Any] = {
            "step": len(self.rows) + 1,
            "time": now.strftime("%H:%M:%S"),
            "elapsed_s": round(elapsed, 2),
            "weights": weights_text(weights) or "-",
            "decision": decision,
            "reason": reason,
            "evidence": "; ".join(evidence_text(e) for e in evidence) or "-",
            "acted_in_s": None if acted_in is None else round(acted_in, 3),
            # When the next check is due, for `lamia release watch` and `status`.
            "next_check": None if next_check is None else datetime.fromtimestamp(next_check, UTC).strftime(
                "%H:%M:%S"),
        }
        self.rows.append(row)
        self._weights = dict(weights)
        self._chart.append(ChartStep(elapsed=elapsed, weights=dict(weights), decision=decision,
                                     evidence=tuple(evidence)))
        self._put("steps", "table", json.dumps(self.rows),
                  f"Every step of the {self.kind} of {self.app} in {self.namespace}")
        image = self._image()
        self._put("chart", "markdown", self._chart_markdown(image), image)
        self._publish_summary(None, reason, image)
        return row

    def _put(self, name: str, kind: str, data: Any, description: str) -> None:
        """Create the run's artifact ``name`` the first time, and update that same one afterwards."""
        key = artifact_key(self.key, name)
        known = self._artifacts.get(name)
        if known is None:
            if kind == "table":
                made = create_table_artifact(table=self.rows, key=key, description=description)
            else:
                made = create_markdown_artifact(markdown=str(data), key=key, description=description)
            self._artifacts[name] = cast(UUID, made)
            return
        with get_client(sync_client=True) as client:
            client.update_artifact(known, ArtifactUpdate(data=data, description=description))

    def _title(self) -> str:
        if self.is_release:
            return f"{self.app} in {self.namespace}: {self.baseline} → {self.target}"
        return f"{self.kind} of {self.app} in {self.namespace}"

    def _image(self) -> str:
        versions = [v for v in (self.target, self.baseline) if v]
        policy = self.details.get("policy")
        svg = render_svg(self._chart, title=self._title() + (f" ({policy})" if policy else ""),
                         versions=versions)
        return markdown_image(svg, f"weights and gates of the {self.kind} of {self.app}")

    def _chart_markdown(self, image: str) -> str:
        return "\n".join([
            f"# {_cell(self._title())}", "", image, "",
            "Top: each version's weight in %. Below, one panel per gate: each version's value at every check "
            "(green met, red missed, grey not judged) and, dashed, the threshold or boundary it was judged "
            "against. Dotted vertical lines: the final decision.",
        ])

    def _publish_summary(self, outcome: Outcome | None, reason: str, image: str | None = None) -> None:
        steps, seconds = len(self.rows), self._elapsed()
        running = f"running, step {steps}" if steps else "started"
        status = outcome.heading if outcome is not None else running
        headline = f"**{status}**: {self._title()}, {steps} step{'s' * (steps != 1)} in {seconds:.1f} s"
        lines = [
            f"# {_cell(self._title())}: {status}", "",
            f"- **{'outcome' if outcome is not None else 'last'}**: {_cell(reason)}",
            f"- weights now: {weights_text(self._weights, escape=lambda v: f'`{v}`') or '-'}",
        ]
        if self.details.get("policy"):
            lines.append(f"- policy: {self.details['policy']}")
        lines.append(f"- steps: {steps}, duration {seconds:.1f} s")
        if self._chart:
            lines += ["", image or self._image()]
        if self.rows:
            lines += ["", "| step | time | weights | decision | reason |", "|---|---|---|---|---|"]
            lines += [f"| {r['step']} | {r['time']} | {_cell(r['weights'])} | {_cell(r['decision'])} | "
                      f"{_cell(r['reason'])} |" for r in self.rows]
        self._put("summary", "markdown", "\n".join(lines), headline)
