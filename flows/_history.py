"""A release's history in the Prefect backend: artifacts, events and tags.

Artifacts and events go through the same API as the flow's own states: when
that API is down the flow is failing anyway, so they get no retries of their own.
"""

from __future__ import annotations

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
from prefect.context import FlowRunContext
from prefect.events import emit_event

from lamia_core.engine import Decision, Evidence
from lamia_core.outcome import EVENT_PREFIX, Outcome
from lamia_core.text import evidence_text, weights_text


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
    _progress_id: UUID | None = None

    @property
    def key(self) -> str:
        return artifact_key("lamia", self.namespace, self.app)

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
            event=f"{EVENT_PREFIX}.{suffix}",
            resource=self.resource(),
            related=self.related(),
            payload={"kind": self.kind, "baseline": self.baseline, "target": self.target, **payload},
        )

    def started(self, weights: dict[str, int], details: dict[str, Any]) -> None:
        self.flow_run_id, self.flow_run_name = current_run()
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
            "step",
            {
                "step": row["step"],
                "decision": decision.action,
                "reason": decision.reason,
                "weights": weights,
                "evidence": [e.model_dump(mode="json") for e in decision.evidence],
            },
        )
        return row

    def note(
        self, what: str, weights: dict[str, int], reason: str, details: dict[str, Any]
    ) -> dict[str, Any]:
        """A row that is not the engine's decision (e.g. ``interrupted``), with an event of that name."""
        row = self._row(what, weights, reason, (), None)
        self.emit(what, {"step": row["step"], "reason": reason, "weights": weights, **details})
        return row

    def _row(self, decision: str, weights: dict[str, int], reason: str, evidence: tuple[Evidence, ...],
             acted_in: float | None, next_check: float | None = None) -> dict[str, Any]:
        now = datetime.now(UTC)
        row: dict[str, Any] = {
            "step": len(self.rows) + 1,
            "time": now.strftime("%H:%M:%S"),
            "elapsed_s": round(time.monotonic() - self.started_monotonic, 2),
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
        create_table_artifact(
            table=self.rows,
            key=artifact_key(self.key, "steps"),
            description=f"Every step of the {self.kind} of {self.app} in {self.namespace}",
        )
        return row

    def finished(self, outcome: Outcome, weights: dict[str, int], reason: str) -> None:
        lines = [
            f"# {self.kind} of `{self.app}` in `{self.namespace}`: **{outcome.value}**",
            "",
            f"- reason: {reason}",
            f"- final weights: {weights_text(weights, escape=lambda v: f'`{v}`')}",
        ]
        if self.baseline or self.target:
            lines.append(f"- baseline `{self.baseline}`, target `{self.target}`")
        lines.append(f"- steps: {len(self.rows)}, duration {time.monotonic() - self.started_monotonic:.1f} s")
        if self.rows:
            lines += ["", "| step | time | weights | decision | reason |", "|---|---|---|---|---|"]
            lines += [
                f"| {r['step']} | {r['time']} | {r['weights']} | {r['decision']} | {r['reason']} |"
                for r in self.rows
            ]
        create_markdown_artifact(
            markdown="\n".join(lines),
            key=artifact_key(self.key, "summary"),
            description=f"Outcome of the {self.kind} of {self.app}",
        )
        if self._progress_id is not None and self.target is not None:
            update_progress_artifact(self._progress_id, float(weights.get(self.target, 0)))
        self.emit(outcome.value, {"outcome": outcome.value, "reason": reason, "weights": weights})
