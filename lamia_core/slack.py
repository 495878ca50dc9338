"""Slack notifications that never fail or stall a release.

One thread per release: the "started" message's ``ts`` is the thread the later
messages answer in (a bot token is needed for that; an incoming webhook cannot
thread, so its messages stand alone in the channel). Every Slack failure ends
in a log line on ``lamia.slack`` and a ``None`` result, never an exception:
outages and rate limits get a bounded number of retries, and a ``Retry-After``
longer than ``max_retry_after`` is not waited for at all, so the worst a dead
Slack costs a release is ``(max_retries + 1) * timeout`` plus the capped waits.

slack-sdk's own retry handlers are switched off (``retry_handlers=[]``): its
default connection-error handler sleeps with ``time.sleep`` outside our count,
and its rate-limit handler would wait whatever ``Retry-After`` says.

The message texts come from pure ``format_*`` functions.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import WebClient
from slack_sdk.webhook import WebhookClient

from lamia_core.errors import InvalidInput
from lamia_core.text import EvidenceLike, evidence_text, weights_text

log = logging.getLogger("lamia.slack")

#: Error codes Slack answers with HTTP 200 that are worth another try.
_RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
#: Evidence lines shown in one message; Slack truncates very long texts anyway.
MAX_EVIDENCE_LINES = 20


class SlackConfig(BaseModel):
    """Where and how to post: a bot token and a channel, or an incoming-webhook URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: SecretStr | None = None
    """Bot token (``xoxb-...``); with ``channel``. Messages are threaded."""
    channel: str | None = None
    """Channel name (``#releases``) or id (``C0123...``)."""
    webhook_url: SecretStr | None = None
    """Incoming-webhook URL, instead of a token; its messages cannot be threaded."""
    base_url: str | None = None
    """Web API base URL; only to point at a test server (``http://127.0.0.1:PORT/api/``)."""
    timeout: float = 5.0
    """Seconds to wait for one answer."""
    max_retries: int = 2
    """Retries after the first attempt, for outages and rate limits."""
    max_retry_after: float = 5.0
    """The longest ``Retry-After`` honoured; a longer one drops the message instead of stalling."""
    notify_steps: bool = True
    """Post each weight change, not only the start and the outcome."""

    @model_validator(mode="after")
    def _valid(self) -> SlackConfig:
        check_config(self)
        return self

    @property
    def uses_webhook(self) -> bool:
        return self.token is None


def check_config(config: SlackConfig) -> None:
    """InvalidInput naming the field when ``config`` cannot work (also for unvalidated copies)."""
    token = config.token.get_secret_value().strip() if config.token else ""
    webhook = config.webhook_url.get_secret_value().strip() if config.webhook_url else ""
    if token and webhook:
        raise InvalidInput("Slack config: give either a bot token with a channel, or a webhook URL, not both")
    if not token and not webhook:
        raise InvalidInput("Slack config: a bot token with a channel, or a webhook URL, is required")
    if token:
        if not token.startswith("xox") or any(c.isspace() for c in token):
            raise InvalidInput("Slack config: token does not look like a Slack token (xoxb-...)")
        if not (config.channel or "").strip():
            raise InvalidInput("Slack config: a bot token needs a channel (e.g. #releases)")
    elif config.channel:
        raise InvalidInput("Slack config: channel is set but a webhook always posts to its own channel")
    if webhook:
        _check_url("webhook_url", webhook)
    if config.base_url is not None:
        _check_url("base_url", config.base_url)
    if not config.timeout > 0:
        raise InvalidInput(f"Slack config: timeout must be more than 0 seconds, not {config.timeout}")
    if config.max_retries < 0:
        raise InvalidInput(f"Slack config: max_retries must be 0 or more, not {config.max_retries}")
    if config.max_retry_after < 0:
        raise InvalidInput(f"Slack config: max_retry_after must be 0 or more, not {config.max_retry_after}")


def _check_url(name: str, url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        # The webhook URL is a secret: say what is wrong without echoing it.
        shown = url if name == "base_url" else f"{parts.scheme or '(no scheme)'}://..."
        raise InvalidInput(f"Slack config: {name} must be an http(s) URL with a host, not {shown!r}")


# --- formatting (pure) --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseInfo:
    """What every message of a release names."""

    namespace: str
    app: str
    baseline: str
    target: str
    run_url: str | None = None
    """Link to the flow run in the Prefect UI, shown in the first message."""


def escape(text: str) -> str:
    """Slack's mrkdwn escaping, so names with ``<``, ``>`` or ``&`` are shown, not parsed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def format_weights(weights: Mapping[str, int]) -> str:
    return weights_text(weights, escape=escape)


def _who(r: ReleaseInfo) -> str:
    return f"*{escape(r.app)}* ({escape(r.namespace)})"


def format_started(r: ReleaseInfo, *, policy: str | None = None) -> str:
    text = f":rocket: Release of {_who(r)} started: {escape(r.baseline)} → {escape(r.target)}"
    if policy:
        text += f"\nPolicy: {escape(policy)}"
    if r.run_url:
        text += f"\n<{r.run_url}|Flow run>"
    return text


def format_step(r: ReleaseInfo, weights: Mapping[str, int], *, step: int | None = None,
                steps: int | None = None) -> str:
    where = "" if step is None else f" step {step}/{steps}" if steps else f" step {step}"
    return f":arrow_right: {_who(r)}{where}: {format_weights(weights)}"


def format_promoted(r: ReleaseInfo, *, reason: str | None = None) -> str:
    text = f":white_check_mark: {_who(r)}: {escape(r.target)} promoted to 100%"
    return text + (f" ({escape(reason)})" if reason else "")


def format_evidence(ev: EvidenceLike) -> str:
    return evidence_text(ev, escape=escape)


def format_rolled_back(r: ReleaseInfo, reason: str, evidence: Sequence[EvidenceLike] = ()) -> str:
    text = (f":rewind: {_who(r)} rolled back to {escape(r.baseline)} "
            f"({escape(r.target)} gets no traffic): {escape(reason)}")
    if evidence:
        lines = [f"• {format_evidence(ev)}" for ev in evidence[:MAX_EVIDENCE_LINES]]
        if len(evidence) > MAX_EVIDENCE_LINES:
            lines.append(f"• … and {len(evidence) - MAX_EVIDENCE_LINES} more")
        text += "\nMeasured:\n" + "\n".join(lines)
    return text


def format_held(r: ReleaseInfo, reason: str, *, weights: Mapping[str, int]) -> str:
    return f":pause_button: {_who(r)}: release held at {format_weights(weights)} ({escape(reason)})"


def format_interrupted(r: ReleaseInfo, reason: str, *, weights: Mapping[str, int] | None = None) -> str:
    text = (f":warning: Release of {_who(r)} to {escape(r.target)} interrupted by another writer: "
            f"{escape(reason)}")
    if weights:
        text += f"\nTraffic now (as they set it): {format_weights(weights)}"
    return text


def format_failed(r: ReleaseInfo, error: str, *, weights: Mapping[str, int] | None = None) -> str:
    text = f":x: Release of {_who(r)} to {escape(r.target)} failed: {escape(error)}"
    if weights is not None:
        text += f"\nTraffic now: {format_weights(weights)}"
    return text


# --- posting --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Attempt:
    ok: bool
    ts: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    reason: str = ""


class SlackNotifier:
    """Posts to Slack with bounded retries; every method returns None instead of raising."""

    def __init__(self, config: SlackConfig, *, sleep: Callable[[float], None] = time.sleep) -> None:
        check_config(config)
        self.config = config
        self._sleep = sleep
        self.last_error: str | None = None
        """Why the last post did not get through (None after a success)."""
        # slack-sdk hints timeout as int; urllib takes any number of seconds.
        timeout: Any = config.timeout
        self._web: WebClient | None = None
        self._webhook: WebhookClient | None = None
        if config.token is not None:
            kwargs: dict[str, Any] = {"base_url": config.base_url} if config.base_url else {}
            self._web = WebClient(token=config.token.get_secret_value().strip(), timeout=timeout,
                                  retry_handlers=[], **kwargs)
        else:
            assert config.webhook_url is not None
            self._webhook = WebhookClient(config.webhook_url.get_secret_value().strip(), timeout=timeout,
                                          retry_handlers=[])

    @property
    def threads(self) -> bool:
        """Whether messages can answer in a thread (a webhook cannot)."""
        return self._web is not None

    def post(
        self,
        text: str,
        *,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
        broadcast: bool = False,
    ) -> str | None:
        """Post ``text`` (in ``thread_ts``'s thread; ``broadcast`` also shows the reply in the
        channel). Returns the message's ts, or None: webhooks have none, and failures are logged."""
        attempts = self.config.max_retries + 1
        result = _Attempt(ok=False)
        for attempt in range(1, attempts + 1):
            result = self._attempt(text, blocks, thread_ts, broadcast)
            if result.ok:
                self.last_error = None
                return result.ts
            self.last_error = result.reason
            if not result.retryable:
                log.error("Slack refused the message: %s; the release goes on without it", result.reason)
                return None
            if attempt == attempts:
                break
            if result.retry_after is not None:
                if result.retry_after > self.config.max_retry_after:
                    log.warning(
                        "Slack is rate limiting and asks to wait %gs, more than the %gs allowed; "
                        "message dropped, the release goes on",
                        result.retry_after, self.config.max_retry_after,
                    )
                    return None
                wait = result.retry_after
            else:
                wait = min(0.5 * 2 ** (attempt - 1), self.config.max_retry_after)
            self._sleep(wait)
        log.warning("Slack did not take the message after %d attempt(s) (%s); the release goes on without it",
                    attempts, result.reason)
        return None

    # --- one HTTP attempt ---------------------------------------------------------------------

    def _attempt(self, text: str, blocks: list[dict[str, Any]] | None, thread_ts: str | None,
                 broadcast: bool) -> _Attempt:
        try:
            if self._web is not None:
                return self._api_attempt(self._web, text, blocks, thread_ts, broadcast)
            assert self._webhook is not None
            return self._webhook_attempt(self._webhook, text, blocks)
        except SlackApiError as exc:
            return _from_api_error(exc)
        except (OSError, http.client.HTTPException) as exc:
            # URLError, refused connections and socket timeouts are all OSErrors.
            return _Attempt(ok=False, retryable=True, reason=f"cannot reach Slack: {_describe(exc)}")
        except (SlackClientError, ValueError) as exc:
            return _Attempt(ok=False, reason=f"Slack client error: {exc}")

    def _api_attempt(self, web: WebClient, text: str, blocks: list[dict[str, Any]] | None,
                     thread_ts: str | None, broadcast: bool) -> _Attempt:
        resp = web.chat_postMessage(
            channel=str(self.config.channel).strip(),
            text=text,
            blocks=blocks,
            thread_ts=thread_ts,
            reply_broadcast=True if broadcast and thread_ts else None,
        )
        ts = resp.get("ts")
        return _Attempt(ok=True, ts=str(ts) if ts else None)

    def _webhook_attempt(self, hook: WebhookClient, text: str,
                         blocks: list[dict[str, Any]] | None) -> _Attempt:
        resp = hook.send(text=text, blocks=blocks)
        if resp.status_code == 200:
            return _Attempt(ok=True)
        body = (resp.body or "").strip()[:200]
        reason = f"webhook answered HTTP {resp.status_code}: {body or '(empty)'}"
        if resp.status_code == 429:
            return _Attempt(ok=False, retryable=True, retry_after=_retry_after(resp.headers), reason=reason)
        return _Attempt(ok=False, retryable=resp.status_code >= 500, reason=reason)


def _from_api_error(exc: SlackApiError) -> _Attempt:
    resp = exc.response
    status = int(resp.status_code)
    data = resp.data if isinstance(resp.data, dict) else {}
    error = str(data.get("error") or f"HTTP {status}")
    if status >= 500 and error.startswith("Received a response in a non-JSON format"):
        error = f"HTTP {status}"
    reason = f"{error} (HTTP {status})" if not error.startswith("HTTP") else error
    if status == 429 or error in ("ratelimited", "rate_limited"):
        return _Attempt(ok=False, retryable=True, retry_after=_retry_after(resp.headers), reason=reason)
    return _Attempt(ok=False, retryable=status >= 500 or error in _RETRYABLE_ERRORS, reason=reason)


def _retry_after(headers: Mapping[str, Any]) -> float:
    """Seconds from a ``Retry-After`` header; 1 when it is missing or is an HTTP date."""
    for key, value in headers.items():
        if key.lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) and value else value
            try:
                return max(float(raw), 0.0)
            except (TypeError, ValueError):
                return 1.0
    return 1.0


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc) or type(exc).__name__
