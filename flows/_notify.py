"""Slack notifications of a flow run, in one thread per release.

Every message, the first included, is submitted and posted beside the release:
a Slack that hangs, answers 429 or is down (bounded retries, honoured
Retry-After) never delays a weight change or a check. The messages go out in
order, one after the other; each after the first waits for the first to be
posted and answers in its thread (or stands alone if the first got no ts).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from lamia_core.slack import ReleaseInfo, SlackConfig
from tasks.slack import notify

log = logging.getLogger(__name__)

#: How long the end of a release waits for its last messages before it lets them go.
CLOSE_TIMEOUT_SECONDS = 30.0


@dataclass
class ReleaseThread:
    config: SlackConfig | None
    release: ReleaseInfo | None = None
    _first: Any = None
    _last: Any = None
    _pending: list[Any] = field(default_factory=list)

    @property
    def info(self) -> ReleaseInfo:
        if self.release is None:
            raise ValueError("this thread was opened without release details")
        return self.release

    def post(self, text: str, *, step: bool = False, outcome: bool = False) -> None:
        """``step`` messages obey ``notify_steps``; an ``outcome`` is also shown in the channel,
        so that people who do not follow the thread see how the release ended."""
        if self.config is None or (step and not self.config.notify_steps):
            return
        if self._first is None:
            self._first = self._last = notify.submit(self.config, text, None)
        else:
            # The first message's future stands for its ts; waiting on the last keeps the order.
            self._last = notify.submit(self.config, text, self._first, outcome,  # type: ignore[call-overload]
                                       wait_for=[self._last])
        self._pending.append(self._last)

    def flush(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, for the messages submitted so far to be posted."""
        deadline = time.monotonic() + timeout
        for future in self._pending:
            future.wait(timeout=max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """Wait for the messages still being posted, at most ``timeout`` seconds in all."""
        deadline = time.monotonic() + timeout
        for future in self._pending:
            future.wait(timeout=max(0.0, deadline - time.monotonic()))
        left = [f for f in self._pending if not f.state.is_final()]
        if left:
            log.warning("%d Slack message(s) still being posted after %gs; the release is over without them",
                        len(left), timeout)
        self._pending.clear()
