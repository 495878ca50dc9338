"""Slack notifier: real slack-sdk clients against the fake Slack server; failures never raise."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from pydantic import SecretStr

from lamia_core.errors import InvalidInput
from lamia_core.policies import Evidence
from lamia_core.slack import (
    MAX_EVIDENCE_LINES,
    ReleaseInfo,
    SlackConfig,
    SlackNotifier,
    check_config,
    escape,
    format_evidence,
    format_failed,
    format_held,
    format_promoted,
    format_rolled_back,
    format_started,
    format_step,
)
from lamia_sandbox.fake_slack import DEFAULT_TOKEN, FakeSlack

HOOK = "https://hooks.slack.com/services/x"
RELEASE = ReleaseInfo(namespace="demo", app="reviews", baseline="v1", target="v2")


class Sleeps(list[float]):
    """An injected sleep that records the waits instead of taking them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def bot(slack: FakeSlack, **overrides: Any) -> SlackConfig:
    fields: dict[str, Any] = {
        "token": SecretStr(DEFAULT_TOKEN), "channel": "#releases", "base_url": slack.api_url, "timeout": 2.0,
    }
    return SlackConfig(**{**fields, **overrides})


def hook(slack: FakeSlack, **overrides: Any) -> SlackConfig:
    return SlackConfig(**{"webhook_url": SecretStr(slack.webhook_url), "timeout": 2.0, **overrides})


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "a bot token with a channel, or a webhook URL, is required"),
        ({"token": "xoxb-1"}, "a bot token needs a channel"),
        ({"token": "not-a-token", "channel": "#r"}, "does not look like a Slack token"),
        ({"token": "xoxb-1", "channel": "#r", "webhook_url": HOOK}, "not both"),
        ({"webhook_url": HOOK, "channel": "#r"}, "webhook always posts"),
        ({"webhook_url": "hooks.slack.com/services/x"}, "webhook_url must be an http(s) URL"),
        ({"token": "xoxb-1", "channel": "#r", "base_url": "ftp://x/"}, "base_url must be an http(s) URL"),
        ({"token": "xoxb-1", "channel": "#r", "timeout": 0}, "timeout must be more than 0"),
        ({"token": "xoxb-1", "channel": "#r", "max_retries": -1}, "max_retries must be 0 or more"),
        ({"token": "xoxb-1", "channel": "#r", "max_retry_after": -1}, "max_retry_after must be 0 or more"),
    ],
)
def test_invalid_config_is_invalid_input(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match="Slack config: .*" + re.escape(message)):
        SlackConfig(**fields)


def test_invalid_webhook_url_is_not_echoed() -> None:
    with pytest.raises(InvalidInput) as info:
        SlackConfig(webhook_url="hooks.slack.com/services/T1/B2/secret-part")
    assert "secret-part" not in str(info.value)


def test_notifier_rechecks_an_unvalidated_config() -> None:
    unchecked = SlackConfig.model_construct(token=SecretStr("xoxb-1"), channel=None)
    with pytest.raises(InvalidInput, match="needs a channel"):
        SlackNotifier(unchecked)
    with pytest.raises(InvalidInput):
        check_config(unchecked)


def test_valid_configs() -> None:
    assert not SlackConfig(token="xoxb-1", channel="#r").uses_webhook
    assert SlackConfig(webhook_url="https://hooks.slack.com/services/x").uses_webhook
    assert "xoxb-1" not in repr(SlackConfig(token="xoxb-1", channel="#r"))


# --- formatting ---------------------------------------------------------------------------------


def test_format_started_names_the_release_and_links_the_run() -> None:
    release = ReleaseInfo("demo", "reviews", "v1", "v2", run_url="http://ui/runs/1")
    text = format_started(release, policy="health")
    assert text.splitlines() == [
        ":rocket: Release of *reviews* (demo) started: v1 → v2",
        "Policy: health",
        "<http://ui/runs/1|Flow run>",
    ]


def test_format_escapes_slack_control_characters() -> None:
    assert escape("a<b>&c") == "a&lt;b&gt;&amp;c"
    text = format_started(ReleaseInfo("demo", "<!channel>", "v1", "v2"))
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text


def test_format_step_sorts_versions() -> None:
    assert format_step(RELEASE, {"v2": 20, "v1": 80}, step=2, steps=5) == (
        ":arrow_right: *reviews* (demo) step 2/5: v1=80, v2=20"
    )
    assert format_step(RELEASE, {"v1": 100}) == ":arrow_right: *reviews* (demo): v1=100"


def test_format_promoted() -> None:
    assert format_promoted(RELEASE, reason="all gates met") == (
        ":white_check_mark: *reviews* (demo): v2 promoted to 100% (all gates met)"
    )


def test_format_rolled_back_shows_reason_and_every_measurement() -> None:
    evidence = [
        Evidence(version="v2", metric="error_rate", value=0.1234567, threshold=0.05, comparison="<=",
                 passed=False),
        Evidence(version="v2", metric="latency_p99", value=None, threshold=500.0, comparison="<="),
        Evidence(version=None, metric="requests", value=42.0, comparison="min requests", passed=True),
    ]
    text = format_rolled_back(RELEASE, "error_rate too high", evidence)
    assert text.splitlines() == [
        ":rewind: *reviews* (demo) rolled back to v1 (v2 gets no traffic): error_rate too high",
        "Measured:",
        # Escaped for mrkdwn; Slack shows "<=".
        "• v2: error_rate = 0.1235 (&lt;= 0.05) ✗",
        "• v2: latency_p99 = no data (&lt;= 500)",
        "• requests = 42 (min requests) ✓",
    ]


def test_format_rolled_back_caps_the_evidence_list() -> None:
    evidence = [Evidence(version="v2", metric=f"m{i}", value=float(i), comparison=">=") for i in range(25)]
    lines = format_rolled_back(RELEASE, "r", evidence).splitlines()
    assert len(lines) == 2 + MAX_EVIDENCE_LINES + 1
    assert lines[-1] == f"• … and {25 - MAX_EVIDENCE_LINES} more"


def test_format_evidence_accepts_any_object_with_the_four_fields() -> None:
    class Plain:
        version = "v3"
        metric = "success_rate"
        value = "v3"
        threshold = None

    assert format_evidence(Plain()) == "v3: success_rate = v3"


def test_format_failed_shows_where_traffic_is() -> None:
    assert format_failed(RELEASE, "cluster unreachable", weights={"v1": 90, "v2": 10}).splitlines() == [
        ":x: Release of *reviews* (demo) to v2 failed: cluster unreachable",
        "Traffic now: v1=90, v2=10",
    ]


# --- posting with a bot token -------------------------------------------------------------------


def test_one_thread_per_release(fake_slack: FakeSlack) -> None:
    notifier = SlackNotifier(bot(fake_slack))
    ts = notifier.post(format_started(RELEASE, policy="health"))
    assert ts is not None
    assert notifier.post(format_step(RELEASE, {"v1": 90, "v2": 10}), thread_ts=ts) is not None
    evidence = [Evidence(version="v2", metric="error_rate", value=0.2, threshold=0.05, comparison="<=",
                         passed=False)]
    text = format_rolled_back(RELEASE, "error_rate too high", evidence)
    assert notifier.post(text, thread_ts=ts, broadcast=True) is not None
    assert notifier.post("another release", broadcast=True) is not None

    thread = fake_slack.thread(ts)
    assert [m.text.split()[0] for m in thread] == [":rocket:", ":arrow_right:", ":rewind:"]
    assert thread[0].thread_ts is None and all(m.thread_ts == ts for m in thread[1:])
    assert "v2: error_rate = 0.2 (&lt;= 0.05)" in thread[2].text
    # The outcome is also shown in the channel, the steps only in the thread; a message that
    # starts no thread is in the channel anyway, so it is not sent as a broadcast.
    assert [m.broadcast for m in thread] == [False, False, True]
    assert fake_slack.messages[-1].broadcast is False
    assert len(fake_slack.messages) == 4 and all(m.channel == "C0LAMIA001" for m in fake_slack.messages)


def test_a_held_release_says_where_traffic_stays() -> None:
    text = format_held(RELEASE, "paused by <@U01>", weights={"v2": 30, "v1": 70})
    assert text == ":pause_button: *reviews* (demo): release held at v1=70, v2=30 (paused by &lt;@U01&gt;)"


def test_blocks_are_sent(fake_slack: FakeSlack) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*bold*"}}]
    assert SlackNotifier(bot(fake_slack)).post("fallback", blocks=blocks) is not None
    assert fake_slack.messages[0].blocks == blocks


def test_rate_limit_honours_retry_after(fake_slack: FakeSlack) -> None:
    fake_slack.rate_limit(2, retry_after=3)
    sleeps = Sleeps()
    ts = SlackNotifier(bot(fake_slack), sleep=sleeps).post("hello")
    assert ts is not None and fake_slack.messages[0].ts == ts
    assert sleeps == [3.0, 3.0]
    assert [r.status for r in fake_slack.requests] == [429, 429, 200]


def test_retry_after_longer_than_the_cap_drops_the_message(
    fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake_slack.rate_limit(1, retry_after=60)
    sleeps = Sleeps()
    notifier = SlackNotifier(bot(fake_slack, max_retry_after=5.0), sleep=sleeps)
    with caplog.at_level(logging.WARNING, logger="lamia.slack"):
        assert notifier.post("hello") is None
    # slack-sdk's own rate-limit handler would have retried (and slept 60 s) inside this one call.
    assert sleeps == [] and fake_slack.count("chat.postMessage") == 1
    assert any(r.name == "lamia.slack" and "wait 60s" in r.getMessage() for r in caplog.records)


def test_rate_limited_to_the_end_gives_up_after_bounded_attempts(
    fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake_slack.rate_limit(10, retry_after=1)
    sleeps = Sleeps()
    with caplog.at_level(logging.WARNING, logger="lamia.slack"):
        assert SlackNotifier(bot(fake_slack, max_retries=3), sleep=sleeps).post("hello") is None
    assert sleeps == [1.0, 1.0, 1.0]
    assert fake_slack.count("chat.postMessage") == 4
    assert fake_slack.messages == []
    assert any("after 4 attempt(s)" in r.getMessage() for r in caplog.records)


def test_outage_returns_none_and_logs_after_bounded_attempts(
    fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake_slack.outage = True
    sleeps = Sleeps()
    notifier = SlackNotifier(bot(fake_slack), sleep=sleeps)
    with caplog.at_level(logging.WARNING, logger="lamia.slack"):
        assert notifier.post(format_started(RELEASE)) is None
    assert fake_slack.count("chat.postMessage") == 3
    assert sleeps == [0.5, 1.0]
    [record] = [r for r in caplog.records if r.name == "lamia.slack"]
    assert record.levelno == logging.WARNING
    assert "after 3 attempt(s)" in record.getMessage() and "HTTP 503" in record.getMessage()
    assert notifier.last_error == "HTTP 503"


def test_backoff_is_capped_by_max_retry_after(fake_slack: FakeSlack) -> None:
    fake_slack.outage = True
    sleeps = Sleeps()
    SlackNotifier(bot(fake_slack, max_retries=4, max_retry_after=1.5), sleep=sleeps).post("x")
    assert sleeps == [0.5, 1.0, 1.5, 1.5]


def test_outage_then_recovery_delivers(fake_slack: FakeSlack) -> None:
    fake_slack.outage = True

    def recover(seconds: float) -> None:
        fake_slack.outage = False

    ts = SlackNotifier(bot(fake_slack), sleep=recover).post("late but there")
    assert ts is not None and [m.text for m in fake_slack.messages] == ["late but there"]


def test_connection_refused_returns_none(caplog: pytest.LogCaptureFixture) -> None:
    slack = FakeSlack().start()
    config = bot(slack)
    slack.stop()
    sleeps = Sleeps()
    notifier = SlackNotifier(config, sleep=sleeps)
    with caplog.at_level(logging.WARNING, logger="lamia.slack"):
        assert notifier.post("anyone?") is None
    assert sleeps == [0.5, 1.0]
    assert notifier.last_error is not None and "cannot reach Slack" in notifier.last_error
    assert any(r.name == "lamia.slack" and "Connection refused" in r.getMessage() for r in caplog.records)


def test_dropped_connections_are_retried_by_lamia_only(fake_slack: FakeSlack) -> None:
    # slack-sdk's default ConnectionErrorRetryHandler would retry a dropped connection itself,
    # doubling the requests and sleeping outside the injected sleep.
    fake_slack.hang_up = True
    sleeps = Sleeps()
    assert SlackNotifier(bot(fake_slack, max_retries=1), sleep=sleeps).post("x") is None
    assert fake_slack.count("chat.postMessage") == 2
    assert sleeps == [0.5]


def test_slow_slack_times_out(fake_slack: FakeSlack) -> None:
    fake_slack.delay = 5.0
    notifier = SlackNotifier(bot(fake_slack, timeout=0.2, max_retries=1), sleep=Sleeps())
    assert notifier.post("x") is None
    assert notifier.last_error is not None and "timed out" in notifier.last_error


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"token": SecretStr("xoxb-revoked")}, "invalid_auth"),
        ({"channel": "#no-such-channel"}, "channel_not_found"),
    ],
)
def test_permanent_errors_are_logged_not_raised_nor_retried(
    fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture, config: dict[str, Any], error: str
) -> None:
    sleeps = Sleeps()
    notifier = SlackNotifier(bot(fake_slack, **config), sleep=sleeps)
    with caplog.at_level(logging.WARNING, logger="lamia.slack"):
        assert notifier.post("x") is None
    assert fake_slack.count("chat.postMessage") == 1 and sleeps == []
    [record] = [r for r in caplog.records if r.name == "lamia.slack"]
    assert record.levelno == logging.ERROR and error in record.getMessage()


def test_invalid_auth_mode(fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    fake_slack.invalid_auth = True
    with caplog.at_level(logging.ERROR, logger="lamia.slack"):
        assert SlackNotifier(bot(fake_slack)).post("x") is None
    assert any("invalid_auth" in r.getMessage() for r in caplog.records)


def test_no_retries_means_one_attempt(fake_slack: FakeSlack) -> None:
    fake_slack.outage = True
    sleeps = Sleeps()
    assert SlackNotifier(bot(fake_slack, max_retries=0), sleep=sleeps).post("x") is None
    assert fake_slack.count("chat.postMessage") == 1 and sleeps == []


# --- posting through a webhook ------------------------------------------------------------------


def test_webhook_posts_plain_messages(fake_slack: FakeSlack) -> None:
    notifier = SlackNotifier(hook(fake_slack))
    assert not notifier.threads
    # A webhook has no ts to thread on: the release's messages stand alone in the channel.
    assert notifier.post(format_started(RELEASE)) is None
    assert notifier.last_error is None
    notifier.post(format_step(RELEASE, {"v1": 50, "v2": 50}))
    notifier.post(format_promoted(RELEASE), thread_ts="1700000000.000001", broadcast=True)
    assert [(m.via, m.thread_ts) for m in fake_slack.messages] == [("webhook", None)] * 3
    assert "promoted to 100%" in fake_slack.messages[2].text


def test_webhook_rate_limit_honours_retry_after(fake_slack: FakeSlack) -> None:
    fake_slack.rate_limit(1, retry_after=2)
    sleeps = Sleeps()
    notifier = SlackNotifier(hook(fake_slack), sleep=sleeps)
    assert notifier.post("x") is None and notifier.last_error is None
    assert sleeps == [2.0] and len(fake_slack.messages) == 1


def test_webhook_outage_is_bounded(fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    fake_slack.outage = True
    sleeps = Sleeps()
    with caplog.at_level(logging.WARNING, logger="lamia.slack"):
        SlackNotifier(hook(fake_slack), sleep=sleeps).post("x")
    assert fake_slack.count("/services/T000/B000/XXX") == 3 and sleeps == [0.5, 1.0]
    assert any("HTTP 503" in r.getMessage() for r in caplog.records)


def test_revoked_webhook_is_logged_not_retried(
    fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    fake_slack.invalid_auth = True
    sleeps = Sleeps()
    with caplog.at_level(logging.ERROR, logger="lamia.slack"):
        notifier = SlackNotifier(hook(fake_slack), sleep=sleeps)
        assert notifier.post("x") is None
    assert fake_slack.count("/services/T000/B000/XXX") == 1 and sleeps == []
    assert notifier.last_error == "webhook answered HTTP 403: invalid_token"
    assert any("invalid_token" in r.getMessage() for r in caplog.records)
