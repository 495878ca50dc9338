"""A local stand-in for Slack's Web API and incoming webhooks, on a loopback port.

It speaks the wire format slack-sdk expects (``POST /api/<method>``, JSON or form
bodies, ``{"ok": ...}`` answers, 429 with ``Retry-After``), records every message
and every request for assertions, and can be switched into the failures a
notifier must survive: an outage (503, or :meth:`FakeSlack.stop` for connection
refused), rate limiting, a revoked token, a slow answer.

``python -m lamia_sandbox.fake_slack --port 8099`` runs one for the demo.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lamia_sandbox._lifecycle import Service, ServingThread

DEFAULT_TOKEN = "xoxb-lamia-test-token"
DEFAULT_CHANNELS = {"C0LAMIA001": "releases", "C0LAMIA002": "general"}
WEBHOOK_PATH = "/services/T000/B000/XXX"
_OUTAGE_PAGE = b"<html><body>503 Service Unavailable</body></html>"


@dataclass
class Message:
    """One message as Slack would store it."""

    channel: str
    """The channel's id (``C...``), whatever name the client used."""
    text: str
    ts: str
    thread_ts: str | None = None
    blocks: list[dict[str, Any]] | None = None
    broadcast: bool = False
    """A thread reply also shown in the channel (``reply_broadcast``)."""
    via: str = "api"
    """``api`` (chat.postMessage) or ``webhook``."""
    edits: list[str] = field(default_factory=list)
    """Earlier texts, oldest first, replaced by chat.update."""


@dataclass(frozen=True)
class Request:
    """One HTTP request the server answered, whatever the answer was."""

    path: str
    status: int
    """The HTTP status answered; 0 when the connection was closed without an answer."""
    error: str | None = None


class FakeSlack(Service):
    """A fake Slack on ``127.0.0.1``; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        channels: dict[str, str] | None = None,
        port: int = 0,
        webhook_path: str = WEBHOOK_PATH,
    ) -> None:
        self.token = token
        self.channels = dict(DEFAULT_CHANNELS if channels is None else channels)
        self.webhook_path = webhook_path
        self._requested_port = port
        self._serving: ServingThread | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ts = itertools.count(1)
        self._rate_limited = 0
        self._retry_after = 1
        self.messages: list[Message] = []
        self.requests: list[Request] = []
        self.outage = False
        """When true every request gets a 503 with an HTML body, like a load balancer in trouble."""
        self.invalid_auth = False
        """When true every API call fails with ``invalid_auth`` (a revoked token)."""
        self.delay = 0.0
        """Seconds to wait before answering (to exercise client timeouts)."""
        self.hang_up = False
        """When true the server reads each request and closes the connection without an answer."""

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        if self._serving is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", self._requested_port), _handler_for(self))
        self._serving = ServingThread(server, "fake-slack", poll_interval=0.02)
        return self

    def stop(self) -> None:
        """Stops answering; the port is closed, so clients get connection refused."""
        serving, self._serving = self._serving, None
        if serving is None:
            return
        self._stopping.set()
        serving.stop()

    @property
    def port(self) -> int:
        if self._serving is None:
            raise RuntimeError("fake Slack is not running")
        return self._serving.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What to give slack-sdk's ``base_url`` (it appends the method name)."""
        return f"{self.url}/api/"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}{self.webhook_path}"

    # --- failure modes ------------------------------------------------------------------------

    def rate_limit(self, n: int, retry_after: int = 1) -> None:
        """The next ``n`` requests get 429 with ``Retry-After: retry_after``."""
        with self._lock:
            self._rate_limited = n
            self._retry_after = retry_after

    def reset(self) -> None:
        """Back to a healthy server with no recorded traffic."""
        with self._lock:
            self._rate_limited = 0
            self.outage = False
            self.invalid_auth = False
            self.delay = 0.0
            self.hang_up = False
            self.messages.clear()
            self.requests.clear()

    # --- assertions ---------------------------------------------------------------------------

    def channel_id(self, channel: str) -> str | None:
        """``#releases``, ``releases`` or ``C0LAMIA001`` → ``C0LAMIA001``; None when unknown."""
        if channel in self.channels:
            return channel
        name = channel.removeprefix("#")
        return next((cid for cid, cname in self.channels.items() if cname == name), None)

    def thread(self, ts: str) -> list[Message]:
        """The message ``ts`` followed by its replies, in order."""
        with self._lock:
            return [m for m in self.messages if m.ts == ts or m.thread_ts == ts]

    def count(self, path_suffix: str) -> int:
        """How many requests hit a path ending with ``path_suffix`` (e.g. ``chat.postMessage``)."""
        with self._lock:
            return sum(1 for r in self.requests if r.path.endswith(path_suffix))

    # --- request handling (called from the server's threads) ----------------------------------

    def _next_ts(self) -> str:
        # Real ts values are "<epoch seconds>.<6 digits>" and unique per channel.
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.delay:
            self._stopping.wait(self.delay)
        with self._lock:
            if self.outage:
                return 503, {"Content-Type": "text/html"}, _OUTAGE_PAGE
            if self._rate_limited > 0:
                self._rate_limited -= 1
                return 429, {"Retry-After": str(self._retry_after)}, _json(ok=False, error="ratelimited")
            if path == self.webhook_path:
                return self._webhook(body)
            if path.startswith("/services/"):
                return 404, {"Content-Type": "text/html"}, b"no_service"
            if not path.startswith("/api/"):
                return 404, {"Content-Type": "text/plain"}, b"not found"
            method = path.removeprefix("/api/")
            params = _params(headers, body)
            api = {"auth.test": self._auth_test, "chat.postMessage": self._post, "chat.update": self._update}
            if method not in api:
                return 404, {}, _json(ok=False, error="unknown_method")
            bearer = headers.get("authorization", "").removeprefix("Bearer ").strip()
            token = bearer or str(params.get("token") or "")
            if not token:
                return 200, {}, _json(ok=False, error="not_authed")
            if self.invalid_auth or token != self.token:
                return 200, {}, _json(ok=False, error="invalid_auth")
            return api[method](params)

    def _auth_test(self, params: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        return 200, {}, _json(ok=True, url="https://lamia-test.slack.com/", team="Lamia", user="lamia",
                              team_id="T000", user_id="U0LAMIA", bot_id="B0LAMIA")

    def _post(self, params: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        channel = self.channel_id(str(params.get("channel") or ""))
        if channel is None:
            return 200, {}, _json(ok=False, error="channel_not_found")
        text = str(params.get("text") or "")
        blocks = _blocks(params.get("blocks"))
        if not text and not blocks:
            return 200, {}, _json(ok=False, error="no_text")
        thread_ts = params.get("thread_ts") or None
        broadcast = params.get("reply_broadcast") in (True, "true", "1")
        msg = Message(channel=channel, text=text, ts=self._next_ts(), thread_ts=thread_ts, blocks=blocks,
                      broadcast=bool(thread_ts) and broadcast)
        self.messages.append(msg)
        return 200, {}, _json(ok=True, channel=channel, ts=msg.ts,
                              message={"text": text, "ts": msg.ts, "thread_ts": thread_ts, "type": "message"})

    def _update(self, params: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        channel = self.channel_id(str(params.get("channel") or ""))
        if channel is None:
            return 200, {}, _json(ok=False, error="channel_not_found")
        ts = str(params.get("ts") or "")
        msg = next((m for m in self.messages if m.channel == channel and m.ts == ts), None)
        if msg is None:
            return 200, {}, _json(ok=False, error="message_not_found")
        msg.edits.append(msg.text)
        msg.text = str(params.get("text") or "")
        msg.blocks = _blocks(params.get("blocks")) or msg.blocks
        return 200, {}, _json(ok=True, channel=channel, ts=ts, text=msg.text)

    def _webhook(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        # Slack's webhooks answer in plain text: "ok", or an error code with a 4xx status.
        if self.invalid_auth:
            return 403, {"Content-Type": "text/html"}, b"invalid_token"
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return 400, {"Content-Type": "text/html"}, b"invalid_payload"
        if not isinstance(payload, dict):
            return 400, {"Content-Type": "text/html"}, b"invalid_payload"
        text = str(payload.get("text") or "")
        blocks = _blocks(payload.get("blocks"))
        if not text and not blocks:
            return 400, {"Content-Type": "text/html"}, b"no_text"
        # A webhook is bound to one channel: the first one.
        channel = next(iter(self.channels))
        msg = Message(channel=channel, text=text, ts=self._next_ts(), blocks=blocks, via="webhook")
        self.messages.append(msg)
        return 200, {"Content-Type": "text/html"}, b"ok"

    def _record(self, path: str, status: int, body: bytes) -> None:
        error: str | None = None
        try:
            answer = json.loads(body)
        except ValueError:
            answer = None
        if isinstance(answer, dict):
            error = None if answer.get("ok") else str(answer.get("error"))
        elif status == 0:
            error = "hung up"
        elif status != 200:
            error = body.decode(errors="replace")[:80]
        with self._lock:
            self.requests.append(Request(path=path, status=status, error=error))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and went away is part of what the fake simulates, not a bug.
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError):
            super().handle_error(request, client_address)


def _json(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def _blocks(raw: Any) -> list[dict[str, Any]] | None:
    # Form-encoded calls carry blocks as a JSON string.
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if isinstance(raw, list) and all(isinstance(b, dict) for b in raw):
        return raw
    return None


def _params(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    ctype = headers.get("content-type", "")
    if "application/json" in ctype:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return {k: v[-1] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}


def _handler_for(slack: FakeSlack) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeSlack/1"
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urllib.parse.urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            if slack.hang_up:
                slack._record(parts.path, 0, b"")
                self.close_connection = True
                return
            if parts.query:
                # slack-sdk sends some arguments in the query string; treat them as body fields.
                query = urllib.parse.urlencode(urllib.parse.parse_qsl(parts.query))
                if "application/json" not in headers.get("content-type", ""):
                    body = (body + b"&" + query.encode()) if body else query.encode()
            status, extra, payload = slack._handle(parts.path, headers, body)
            slack._record(parts.path, status, payload)
            self.send_response(status)
            self.send_header("Content-Type", extra.pop("Content-Type", "application/json; charset=utf-8"))
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a fake Slack Web API on 127.0.0.1 (for the demo).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    args = parser.parse_args(argv)
    slack = FakeSlack(token=args.token, port=args.port).start()
    print(f"fake Slack API:  {slack.api_url}  (token {args.token}, channels "
          + ", ".join(f"#{n}" for n in slack.channels.values()) + ")")
    print(f"fake webhook:    {slack.webhook_url}", flush=True)
    shown = 0
    try:
        while True:
            time.sleep(0.5)
            for m in slack.messages[shown:]:
                where = f"#{slack.channels[m.channel]}" + (f" (thread {m.thread_ts})" if m.thread_ts else "")
                print(f"[{where}] {m.text}", flush=True)
            shown = len(slack.messages)
    except KeyboardInterrupt:
        pass
    finally:
        slack.stop()


if __name__ == "__main__":
    main()
