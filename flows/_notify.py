"""Slack notifications of a flow run, in one thread per release.

The first message is posted in line, since its ts names the thread; the rest
are submitted and run beside the release, so that a slow or absent Slack
(bounded retries, honoured Retry-After) never delays a step or a rollback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lamia_core.slack import ReleaseInfo, SlackConfig
from tasks.slack import notify


@dataclass
class ReleaseThread:
    config: SlackConfig | None
    release: ReleaseInfo | None = None
    thread_ts: str | None = None
    _pending: list[Any] = field(default_factory=list)
    _started: bool = False

    @property
    def info(self) -> ReleaseInfo:
        if self.release is None:
            raise ValueError("this thread was opened without release details")
        return self.release

    def post(self, text: str, *, step: bool = False) -> None:
        if self.config is None or (step and not self.config.notify_steps):
            return
        if not self._started:
            self._started = True
            self.thread_ts = notify(self.config, text, None)
            return
        self._pending.append(notify.submit(self.config, text, self.thread_ts))

    def close(self) -> None:
        """Wait for the messages still being posted (each bounded by the notifier's retries)."""
        for future in self._pending:
            future.wait()
        self._pending.clear()
