"""The fake Slack answers like Slack's Web API and webhooks, and fails on demand."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web import WebClient

from lamia_sandbox.fake_slack import DEFAULT_TOKEN, FakeSlack


def client(slack: FakeSlack, token: str = DEFAULT_TOKEN) -> WebClient:
    return WebClient(token=token, base_url=slack.api_url, timeout=5, retry_handlers=[])


def raw_post(url: str, data: bytes, content_type: str = "application/json",
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read()


def test_post_message_records_it_and_resolves_the_channel_name(fake_slack: FakeSlack) -> None:
    resp = client(fake_slack).chat_postMessage(channel="#releases", text="hello")
    assert resp["ok"] is True
    assert resp["channel"] == "C0LAMIA001"
    [msg] = fake_slack.messages
    assert (msg.channel, msg.text, msg.ts, msg.thread_ts) == ("C0LAMIA001", "hello", resp["ts"], None)
    assert msg.via == "api"


def test_channel_by_id_or_bare_name(fake_slack: FakeSlack) -> None:
    web = client(fake_slack)
    assert web.chat_postMessage(channel="C0LAMIA002", text="a")["channel"] == "C0LAMIA002"
    assert web.chat_postMessage(channel="general", text="b")["channel"] == "C0LAMIA002"


def test_replies_form_a_thread(fake_slack: FakeSlack) -> None:
    web = client(fake_slack)
    first = web.chat_postMessage(channel="#releases", text="started")["ts"]
    web.chat_postMessage(channel="#releases", text="step", thread_ts=first)
    web.chat_postMessage(channel="#releases", text="elsewhere")
    web.chat_postMessage(channel="#releases", text="done", thread_ts=first, reply_broadcast=True)
    thread = fake_slack.thread(first)
    assert [m.text for m in thread] == ["started", "step", "done"]
    assert [m.broadcast for m in thread] == [False, False, True]
    assert len({m.ts for m in fake_slack.messages}) == 4


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
@pytest.mark.parametrize(
    ("token", "channel", "text", "error"),
    [
        ("xoxb-wrong", "#releases", "x", "invalid_auth"),
        (DEFAULT_TOKEN, "#nowhere", "x", "channel_not_found"),
        (DEFAULT_TOKEN, "#releases", "", "no_text"),
    ],
)
def test_api_errors(fake_slack: FakeSlack, token: str, channel: str, text: str, error: str) -> None:
    with pytest.raises(SlackApiError) as info:
        client(fake_slack, token).chat_postMessage(channel=channel, text=text)
    assert info.value.response["error"] == error
    assert info.value.response.status_code == 200
    assert fake_slack.messages == []
    assert [r.error for r in fake_slack.requests] == [error]


def test_missing_token_is_not_authed(fake_slack: FakeSlack) -> None:
    body_in = b'{"channel": "#releases", "text": "x"}'
    status, _, body = raw_post(fake_slack.api_url + "chat.postMessage", body_in)
    assert status == 200
    assert json.loads(body) == {"ok": False, "error": "not_authed"}


def test_form_encoded_call_with_token_in_the_body(fake_slack: FakeSlack) -> None:
    form = {"token": DEFAULT_TOKEN, "channel": "releases", "text": "from curl"}
    data = urllib.parse.urlencode(form).encode()
    url = fake_slack.api_url + "chat.postMessage"
    status, _, body = raw_post(url, data, "application/x-www-form-urlencoded")
    assert status == 200 and json.loads(body)["ok"] is True
    assert fake_slack.messages[0].text == "from curl"


def test_unknown_method(fake_slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as info:
        client(fake_slack).api_call("chat.scheduleMessage", json={"channel": "#releases", "text": "x"})
    assert info.value.response.status_code == 404
    assert info.value.response["error"] == "unknown_method"


def test_auth_test(fake_slack: FakeSlack) -> None:
    resp = client(fake_slack).auth_test()
    assert resp["ok"] is True and resp["team_id"] == "T000"
    with pytest.raises(SlackApiError):
        client(fake_slack, "xoxb-other").auth_test()


def test_chat_update_keeps_the_old_text(fake_slack: FakeSlack) -> None:
    web = client(fake_slack)
    ts = web.chat_postMessage(channel="#releases", text="v2 at 10%")["ts"]
    resp = web.chat_update(channel="#releases", ts=ts, text="v2 at 50%")
    assert resp["ok"] is True
    [msg] = fake_slack.messages
    assert (msg.text, msg.edits) == ("v2 at 50%", ["v2 at 10%"])
    with pytest.raises(SlackApiError) as info:
        web.chat_update(channel="#releases", ts="1.000000", text="x")
    assert info.value.response["error"] == "message_not_found"


def test_webhook_answers_ok_in_plain_text(fake_slack: FakeSlack) -> None:
    status, headers, body = raw_post(fake_slack.webhook_url, json.dumps({"text": "via hook"}).encode())
    assert (status, body) == (200, b"ok")
    assert headers["Content-Type"].startswith("text/html")
    [msg] = fake_slack.messages
    assert (msg.text, msg.via, msg.channel) == ("via hook", "webhook", "C0LAMIA001")


@pytest.mark.parametrize(
    ("path", "data", "status", "body"),
    [
        ("/services/T000/B000/XXX", b"not json", 400, b"invalid_payload"),
        ("/services/T000/B000/XXX", b"{}", 400, b"no_text"),
        ("/services/T000/B000/OTHER", b'{"text": "x"}', 404, b"no_service"),
    ],
)
def test_webhook_errors(fake_slack: FakeSlack, path: str, data: bytes, status: int, body: bytes) -> None:
    assert raw_post(fake_slack.url + path, data)[::2] == (status, body)
    assert fake_slack.messages == []


def test_outage_answers_503_with_a_non_json_page(fake_slack: FakeSlack) -> None:
    fake_slack.outage = True
    status, _, body = raw_post(fake_slack.api_url + "chat.postMessage", b"{}")
    assert status == 503 and body.startswith(b"<html>")
    assert raw_post(fake_slack.webhook_url, b'{"text": "x"}')[0] == 503
    fake_slack.outage = False
    assert client(fake_slack).chat_postMessage(channel="#releases", text="back")["ok"] is True


def test_rate_limit_applies_to_the_next_n_calls(fake_slack: FakeSlack) -> None:
    fake_slack.rate_limit(2, retry_after=7)
    web = client(fake_slack)
    for _ in range(2):
        with pytest.raises(SlackApiError) as info:
            web.chat_postMessage(channel="#releases", text="x")
        assert info.value.response.status_code == 429
        assert info.value.response.headers["Retry-After"] == "7"
        assert info.value.response["error"] == "ratelimited"
    assert web.chat_postMessage(channel="#releases", text="x")["ok"] is True
    assert [r.status for r in fake_slack.requests] == [429, 429, 200]


def test_invalid_auth_mode_refuses_the_right_token(fake_slack: FakeSlack) -> None:
    fake_slack.invalid_auth = True
    with pytest.raises(SlackApiError) as info:
        client(fake_slack).chat_postMessage(channel="#releases", text="x")
    assert info.value.response["error"] == "invalid_auth"
    assert raw_post(fake_slack.webhook_url, b'{"text": "x"}')[::2] == (403, b"invalid_token")


def test_hang_up_closes_without_an_answer(fake_slack: FakeSlack) -> None:
    fake_slack.hang_up = True
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        raw_post(fake_slack.api_url + "chat.postMessage", b"{}")
    assert [(r.status, r.error) for r in fake_slack.requests] == [(0, "hung up")]


def test_reset_restores_health_and_forgets_traffic(fake_slack: FakeSlack) -> None:
    client(fake_slack).chat_postMessage(channel="#releases", text="x")
    fake_slack.outage = True
    fake_slack.rate_limit(3)
    fake_slack.reset()
    assert fake_slack.messages == [] and fake_slack.requests == []
    assert client(fake_slack).chat_postMessage(channel="#releases", text="y")["ok"] is True


def test_stopped_server_refuses_connections() -> None:
    slack = FakeSlack().start()
    url = slack.api_url
    slack.stop()
    with pytest.raises(urllib.error.URLError) as info:
        raw_post(url + "auth.test", b"{}")
    assert isinstance(info.value.reason, ConnectionRefusedError)


def test_command_line_runs_a_server_and_prints_messages() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "lamia_sandbox.fake_slack"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        api_line = proc.stdout.readline()
        assert api_line.startswith("fake Slack API:") and "#releases" in api_line
        api_url = api_line.split()[3]
        webhook_line = proc.stdout.readline()
        assert webhook_line.split()[2].startswith(api_url.removesuffix("/api/") + "/services/")
        WebClient(token=DEFAULT_TOKEN, base_url=api_url).chat_postMessage(channel="#releases", text="demo")
        assert proc.stdout.readline().strip() == "[#releases] demo"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
