"""Bounds on what the public widget key can cost: per session, per day, per turn."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import redis.client
import redis.connection
import requests

import services
from tests.support import WIDGET_KEY, chat_headers, post_chat

BUDGET_EXHAUSTED = {"error": "Daily budget exhausted"}


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def test_session_quota_answers_429_with_retry_after_before_the_model(make_app, upstream):
    client = make_app(SESSION_MAX_MESSAGES="3", SESSION_WINDOW_SECONDS="3600").test_client()
    assert [post_chat(client).status_code for _ in range(3)] == [200, 200, 200]
    refused = post_chat(client)
    assert refused.status_code == 429
    assert refused.get_json() == {"error": "Too many messages in this conversation, try again later"}
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    assert len(upstream.requests) == 3
    assert post_chat(client, session="another-visitor").status_code == 200


def test_session_quota_window_resets(make_app):
    client = make_app(SESSION_MAX_MESSAGES="1", SESSION_WINDOW_SECONDS="0.3").test_client()
    assert post_chat(client).status_code == 200
    assert post_chat(client).status_code == 429
    time.sleep(0.4)
    assert post_chat(client).status_code == 200


def test_requests_without_the_key_or_with_a_bad_body_spend_no_quota_or_budget(make_app, upstream):
    client = make_app(SESSION_MAX_MESSAGES="2", DAILY_MAX_REQUESTS="2").test_client()
    for _ in range(5):
        assert post_chat(client, key="not-the-key-but-long-enough").status_code == 401
        assert (
            client.post("/v1/chat", json={"sessionId": "s-1", "message": ""}, headers=chat_headers()).status_code == 400
        )
    assert [post_chat(client).status_code for _ in range(2)] == [200, 200]


def test_daily_request_budget_refuses_until_the_next_utc_day_without_calling_the_model(make_app, upstream):
    app = make_app(DAILY_MAX_REQUESTS="2")
    services.of(app).store.clock.seconds = lambda: at("2026-11-27T23:59:00")
    client = app.test_client()
    assert [post_chat(client, session=f"s{i}").status_code for i in range(2)] == [200, 200]
    for path in ("/v1/chat", "/v1/chat/stream", "/chat"):
        refused = client.post(path, json={"sessionId": "s9", "message": "hi"}, headers=chat_headers())
        assert refused.status_code == 429
        assert refused.get_json() == BUDGET_EXHAUSTED
        assert refused.headers["Retry-After"] == "60"
    assert len(upstream.requests) == 2


def test_daily_budget_starts_afresh_on_the_next_utc_day(make_app, upstream):
    app = make_app(DAILY_MAX_REQUESTS="1", DAILY_MAX_TOKENS="1000")
    storage = services.of(app).store
    client = app.test_client()
    storage.clock.seconds = lambda: at("2026-11-27T23:59:59.500")
    assert post_chat(client).status_code == 200
    refused = post_chat(client)
    assert refused.get_json() == BUDGET_EXHAUSTED and refused.headers["Retry-After"] == "1"
    storage.clock.seconds = lambda: at("2026-11-28T00:00:00.100")
    assert post_chat(client).status_code == 200


def test_daily_token_budget_counts_reported_usage(make_app, upstream, redis_client):
    app = make_app(DAILY_MAX_TOKENS="5")
    client = app.test_client()
    upstream.reply = "one two three"  # the fake upstream reports 3 completion tokens
    assert post_chat(client).status_code == 200
    day = services.of(app).store.clock.utc_day()[0]
    assert redis_client.get(f"ocw:{{admission}}:tokens:{day}") == "3"
    with client.post("/v1/chat/stream", json={"sessionId": "s2", "message": "hi"}, headers=chat_headers()) as streamed:
        assert streamed.get_data(as_text=True).splitlines()[-1].startswith('{"type": "done"')
    assert redis_client.get(f"ocw:{{admission}}:tokens:{day}") == "6"
    assert post_chat(client).get_json() == BUDGET_EXHAUSTED
    assert len(upstream.requests) == 2


def test_daily_token_budget_estimates_tokens_when_the_upstream_reports_none(make_app, upstream, redis_client):
    app = make_app(DAILY_MAX_TOKENS="1000")
    upstream.report_usage = False
    upstream.reply = "x" * 41
    assert post_chat(app.test_client()).status_code == 200
    day = services.of(app).store.clock.utc_day()[0]
    assert redis_client.get(f"ocw:{{admission}}:tokens:{day}") == "11"  # ceil(41 / 4)


def test_interrupted_replies_are_counted_too(app, upstream, redis_client):
    upstream.reply = " ".join(["word"] * 100)
    upstream.token_delay = 0.01
    response = app.test_client().post(
        "/v1/chat/stream", json={"sessionId": "s", "message": "hi"}, headers=chat_headers(), buffered=False
    )
    chunks = iter(response.response)
    for _ in range(4):
        next(chunks)
    response.close()
    day = services.of(app).store.clock.utc_day()[0]
    assert int(redis_client.get(f"ocw:{{admission}}:tokens:{day}")) > 0


def test_budget_counters_expire_on_their_own(app, redis_client):
    assert post_chat(app.test_client()).status_code == 200
    for key in redis_client.keys("ocw:{admission}:*"):
        assert redis_client.pttl(key) > 0, key


def test_history_is_bounded_in_characters_dropping_the_oldest_first(make_app, upstream):
    client = make_app(MAX_HISTORY_CHARS="35").test_client()
    upstream.reply = "r" * 10
    for message in ("a" * 10, "b" * 10):
        post_chat(client, message=message)
    post_chat(client, message="c" * 10)
    sent = [m["content"] for m in upstream.requests[-1]["messages"][1:]]
    assert sent == ["b" * 10, "r" * 10, "c" * 10]  # 30 characters; the reply before "b" would exceed 35


def test_a_history_bound_that_cuts_between_a_question_and_its_reply_drops_the_reply(make_app, upstream):
    client = make_app(MAX_HISTORY_CHARS="25").test_client()
    upstream.reply = "r" * 10
    for message in ("a" * 10, "b" * 10):
        post_chat(client, message=message)
    post_chat(client, message="c" * 10)
    sent = upstream.requests[-1]["messages"][1:]
    assert sent == [{"role": "user", "content": "c" * 10}]  # a history must start with a user message


def test_history_bound_always_keeps_the_new_message(make_app, upstream):
    client = make_app(MAX_HISTORY_CHARS="5").test_client()
    post_chat(client, message="an earlier message")
    post_chat(client, message="a new message longer than the bound")
    sent = upstream.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent[-1]["content"] == "a new message longer than the bound"


def test_a_turn_costs_three_redis_round_trips_of_nine_commands_once_the_session_exists(app, monkeypatch):
    client = app.test_client()
    assert post_chat(client).status_code == 200  # first turn of the session: one extra step
    round_trips, pipelined = [], []
    real_send = redis.connection.AbstractConnection.send_packed_command
    real_execute = redis.client.Pipeline.execute

    def counting_send(self, command, check_health=True):
        round_trips.append(command)
        return real_send(self, command, check_health)

    def counting_execute(self, raise_on_error=True):
        pipelined.append(len(self.command_stack))
        return real_execute(self, raise_on_error)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting_send)
    monkeypatch.setattr(redis.client.Pipeline, "execute", counting_execute)
    assert post_chat(client).status_code == 200
    assert len(round_trips) == 3  # admission + session lookup; user message + history; reply
    # Each command costs the worker packing and parsing: admission script + GETEX; message
    # script, index, totals; the same for the reply, plus its token counters.
    assert pipelined == [2, 3, 4]


@pytest.mark.parametrize(
    "limit, env",
    [
        ("session", {"SESSION_MAX_MESSAGES": "7"}),
        ("daily requests", {"DAILY_MAX_REQUESTS": "7"}),
    ],
)
def test_limits_are_exact_across_gunicorn_workers(start_gunicorn, upstream, limit, env):
    server = start_gunicorn(WEB_CONCURRENCY="3", **env)

    def one(i):
        with requests.Session() as session:  # a fresh connection each, spread over the workers
            session_id = "shared" if limit == "session" else f"visitor-{i}"
            return session.post(
                server.url + "/v1/chat",
                json={"sessionId": session_id, "message": "hi"},
                headers={"X-Api-Key": WIDGET_KEY},
                timeout=30,
            ).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(one, range(24)))
    assert statuses.count(200) == 7 and statuses.count(429) == 17
    assert len(upstream.requests) == 7


def test_spent_token_budget_never_reaches_the_model_from_any_worker(start_gunicorn, upstream):
    server = start_gunicorn(WEB_CONCURRENCY="3", DAILY_MAX_TOKENS="10")
    upstream.reply = "a b c d"  # 4 tokens per reply: the third turn crosses the budget

    def one(i):
        with requests.Session() as session:
            return session.post(
                server.url + "/v1/chat",
                json={"sessionId": f"v{i}", "message": "hi"},
                headers={"X-Api-Key": WIDGET_KEY},
                timeout=30,
            )

    assert [one(i).status_code for i in range(3)] == [200, 200, 200]
    refusals = [one(i) for i in range(3, 12)]
    assert all(r.status_code == 429 and r.json() == BUDGET_EXHAUSTED for r in refusals)
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refusals)
    assert len(upstream.requests) == 3


def test_simultaneous_turns_cannot_overrun_the_token_budget_by_more_than_one_reservation(
    start_gunicorn, upstream, redis_client
):
    """Each admitted turn reserves MAX_OUTPUT_TOKENS of the budget at admission (before, 100
    simultaneous turns against DAILY_MAX_TOKENS=20 admitted 63 and spent 378 tokens)."""
    server = start_gunicorn(
        WEB_CONCURRENCY="3", DAILY_MAX_TOKENS="20", MAX_OUTPUT_TOKENS="6", RATE_LIMIT_MAX_REQUESTS="1000"
    )
    upstream.reply = "a b c d e f"  # 6 tokens, as reported by the upstream
    upstream.token_delay = 0.05  # every turn is still in flight when the others are admitted
    start = threading.Barrier(100)

    def one(i):
        start.wait()
        with requests.Session() as session:
            return session.post(
                server.url + "/v1/chat",
                json={"sessionId": f"rush-{i}", "message": "hi"},
                headers={"X-Api-Key": WIDGET_KEY},
                timeout=60,
            ).status_code

    with ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(one, range(100)))
    spent = sum(int(redis_client.get(key)) for key in redis_client.scan_iter("ocw:{admission}:tokens:*"))
    assert statuses.count(200) == 4 and statuses.count(429) == 96  # reserved 6, 12, 18, 24: then 24 >= 20
    assert spent == 24 <= 20 + 6  # the budget plus one turn's reservation, at most


def test_a_turn_that_fails_gives_its_reservation_back(make_app, upstream, redis_client):
    app = make_app(DAILY_MAX_TOKENS="1000", MAX_OUTPUT_TOKENS="400")
    day = services.of(app).store.clock.utc_day()[0]
    upstream.fault, upstream.status = "status", 500
    assert post_chat(app.test_client()).status_code == 502
    streamed = (
        app.test_client()
        .post("/v1/chat/stream", json={"sessionId": "s2", "message": "hi"}, headers=chat_headers())
        .get_data(as_text=True)
    )
    assert '"type": "error"' in streamed
    assert redis_client.get(f"ocw:{{admission}}:tokens:{day}") == "0"
    upstream.fault = None
    upstream.reply = "one two three"
    assert post_chat(app.test_client()).status_code == 200
    assert redis_client.get(f"ocw:{{admission}}:tokens:{day}") == "3"  # settled: the real count, not the 400
