"""Post to Slack. The notifier bounds its own retries (honouring Retry-After up
to a cap) and never raises, so this task has no Prefect retries: a Slack outage
must neither fail nor stall a release."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from lamia_core.slack import SlackConfig, SlackNotifier


@task(name="notify", cache_policy=NO_CACHE, persist_result=False)
def notify(
    slack: SlackConfig, text: str, thread_ts: str | None = None, broadcast: bool = False
) -> str | None:
    """Post ``text`` (in ``thread_ts``'s thread, also shown in the channel when ``broadcast``);
    the message's ts, or None if Slack did not take it."""
    return SlackNotifier(slack).post(text, thread_ts=thread_ts, broadcast=broadcast)
