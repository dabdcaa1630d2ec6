"""Restarts and deploys lose nothing: a real gunicorn master receives SIGTERM while streams run.

Platforms send SIGTERM on every deploy and restart, then SIGKILL a fixed time later (Heroku:
30 s). Streams that finish within SHUTDOWN_DRAIN_SECONDS finish; the others end with an `error`
line whose code is "restarting", and their partial reply is stored as interrupted, tokens counted.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import requests

import drain
from llm import ReplyStream
from tests.integrity import stored_thread
from tests.support import WIDGET_KEY, wait_until

CHAT = {"X-Widget-Api-Key": WIDGET_KEY}


def open_stream(server, session_id: str, message: str = "hello", retry: bool = False):
    body = {"sessionId": session_id, "message": message, **({"retry": True} if retry else {})}
    response = requests.post(server.url + "/v1/chat/stream", json=body, headers=CHAT, stream=True, timeout=30)
    assert response.status_code == 200
    return response, (json.loads(line) for line in response.iter_lines() if line)


def read_tokens(events, count: int) -> list[dict]:
    seen = []
    for event in events:
        seen.append(event)
        if sum(e["type"] == "token" for e in seen) == count:
            return seen
    raise AssertionError(f"the stream ended before {count} tokens: {seen}")


def tokens_of(events: list[dict]) -> str:
    return "".join(e["token"] for e in events if e["type"] == "token")


def output_tokens_counted_today(redis_client) -> int:
    return sum(int(redis_client.get(key)) for key in redis_client.scan_iter("ocw:{admission}:tokens:*"))


def test_sigterm_ends_a_slow_stream_with_a_restarting_error_and_stores_its_partial_reply(
    start_gunicorn, upstream, redis_client
):
    server = start_gunicorn(WEB_CONCURRENCY="1", SHUTDOWN_DRAIN_SECONDS="2")
    upstream.reply = " ".join(f"word{i}" for i in range(100))  # 100 tokens at 0.2 s: 20 s unless cut
    upstream.token_delay = 0.2
    response, events = open_stream(server, "restart-me")
    seen = read_tokens(events, 3)
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    seen += list(events)
    ended = time.monotonic() - signalled

    assert seen[-1] == {"type": "error", "error": drain.RESTARTING_MESSAGE, "code": "restarting"}
    assert 1.5 < ended < 6, ended  # after the 2 s drain, well before gunicorn's kill (2 + 5 s)
    assert server.process.wait(timeout=15) == 0  # a clean exit, not a kill
    print(f"SIGTERM -> error line {ended:.2f} s (drain 2 s), -> master exit 0 {time.monotonic() - signalled:.2f} s")
    assert wait_until(lambda: upstream.hangups, timeout=5), "the upstream call was not closed"
    _, messages = stored_thread(redis_client, "restart-me")
    assert messages[-1]["role"] == "assistant" and messages[-1]["interrupted"] is True
    assert messages[-1]["content"] == tokens_of(seen).strip()
    assert output_tokens_counted_today(redis_client) > 0  # the model's tokens were paid for
    assert "Traceback" not in server.output()


def test_a_stream_that_finishes_within_the_drain_is_answered_in_full_after_sigterm(
    start_gunicorn, upstream, redis_client
):
    server = start_gunicorn(WEB_CONCURRENCY="1", SHUTDOWN_DRAIN_SECONDS="10")
    upstream.reply = "one two three four five six"
    upstream.token_delay = 0.3
    response, events = open_stream(server, "finish-me")
    seen = read_tokens(events, 1)
    server.process.send_signal(signal.SIGTERM)
    seen += list(events)
    assert seen[-1]["type"] == "done" and seen[-1]["message"] == "one two three four five six"
    assert server.process.wait(timeout=15) == 0
    _, messages = stored_thread(redis_client, "finish-me")
    assert [m["role"] for m in messages] == ["user", "assistant"] and "interrupted" not in messages[-1]


def test_the_widgets_retry_after_a_restart_stores_the_message_once_and_replaces_the_partial_reply(
    start_gunicorn, upstream, redis_client
):
    first = start_gunicorn(WEB_CONCURRENCY="1", SHUTDOWN_DRAIN_SECONDS="1")
    upstream.echo = True
    upstream.token_delay = 0.5
    response, events = open_stream(first, "come-back", "What are your opening hours?")
    read_tokens(events, 2)
    first.process.send_signal(signal.SIGTERM)
    assert list(events)[-1]["code"] == "restarting"
    first.process.wait(timeout=15)

    upstream.token_delay = 0
    second = start_gunicorn(WEB_CONCURRENCY="1")  # the new release
    response, events = open_stream(second, "come-back", "What are your opening hours?", retry=True)
    assert list(events)[-1] == {
        "type": "done",
        "message": "echo: What are your opening hours?",
        "conversationId": redis_client.get("ocw:session:come-back"),
    }
    _, messages = stored_thread(redis_client, "come-back")
    assert [(m["role"], bool(m.get("interrupted"))) for m in messages] == [
        ("user", False),
        ("assistant", True),
        ("assistant", False),
    ]
    # The model was asked the question once more, as the last message, without the cut reply.
    assert [m["role"] for m in upstream.requests[-1]["messages"]] == ["system", "user"]


def test_no_gunicorn_control_socket_is_shared_through_home(start_gunicorn, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    server = start_gunicorn(HOME=str(home), XDG_RUNTIME_DIR=None)
    assert requests.get(server.url + "/health", timeout=5).status_code == 200
    assert list(home.iterdir()) == []  # gunicorn's default puts it in $HOME/.gunicorn/gunicorn.ctl


# ---- the deadline, in one process ----------------------------------------------------------


def slow_deltas(stop: threading.Event):
    yield "first"
    stop.wait(30)
    yield "never read"


def test_a_stream_waiting_on_a_silent_model_wakes_at_the_drain_deadline_not_the_next_heartbeat():
    stop, shutdown = threading.Event(), drain.Drain()
    reply = ReplyStream(slow_deltas(stop), interrupt=stop.set)
    batches = reply.batches(idle_seconds=30, drain=shutdown)
    assert next(batches) == ["first"]
    threading.Timer(0.2, shutdown.begin, args=(0.3,)).start()
    started = time.monotonic()
    try:
        next(batches)
        raise AssertionError("the stream went on past the deadline")
    except drain.ServiceStopping:
        pass
    finally:
        reply.close()
    assert time.monotonic() - started < 5  # 0.5 s expected; a heartbeat would be 30 s


def test_a_stream_that_is_not_draining_only_pings_on_silence():
    stop = threading.Event()
    reply = ReplyStream(slow_deltas(stop), interrupt=stop.set)
    batches = reply.batches(idle_seconds=0.1, drain=drain.Drain())
    assert next(batches) == ["first"]
    assert next(batches) == []  # a heartbeat, not an end
    reply.close()
