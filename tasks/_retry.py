"""Retry policy shared by every task: only temporary errors are worth another try."""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from lamia_core.errors import is_temporary

#: Short backoff: a release must roll back within about one interval, so a task
#: may not sit in retries for long. 0.5 s, 1 s, 2 s (with jitter) = under 4 s in all.
RETRIES = 3
RETRY_DELAYS = exponential_backoff(backoff_factor=0.5)(RETRIES)
RETRY_JITTER = 0.2


def retry_on_temporary(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry_condition_fn: retry TemporaryError, fail fast on anything else."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # a result that cannot even be loaded is not worth retrying
        return False
    return isinstance(exc, BaseException) and is_temporary(exc)


RETRYING: dict[str, Any] = {
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_jitter_factor": RETRY_JITTER,
    "retry_condition_fn": retry_on_temporary,
}
