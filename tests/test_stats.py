"""Stats and metrics: what is counted, over which window, shared by every worker, and /metrics."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import services
import storage
from storage.counts import HOURLY_COUNT_LIFETIME_MS
from tests.support import ADMIN_KEY, WIDGET_KEY, admin_headers, chat_headers

STATS = "/v1/admin/stats"
FOREIGN = "https://evil.example"


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def stats(client) -> dict:
    response = client.get(STATS, headers=admin_headers())
    assert response.status_code == 200
    return response.get_json()


def test_stats_count_requests_tokens_and_every_kind_of_refusal_or_failure(make_app, upstream):
    client = make_app(RATE_LIMIT_MAX_REQUESTS="7").test_client()
    body = {"sessionId": "counted", "message": "hi"}
    upstream.reply = "one two three"  # the fake upstream reports 3 output tokens
    for finish_reason in ("stop", "stop", "length"):  # the last reply is cut by max_tokens
        upstream.finish_reason = finish_reason
        assert client.post("/v1/chat", json=body, headers=chat_headers()).status_code == 200
    assert client.post("/v1/chat", json=body, headers=chat_headers(key="not-the-widget-key-at-all")).status_code == 401
    upstream.fault = "status"
    assert client.post("/v1/chat", json=body, headers=chat_headers()).status_code == 502
    failed = client.post("/v1/chat/stream", json=body, headers=chat_headers()).get_data(as_text=True)
    assert '"type": "error"' in failed
    upstream.fault = None
    assert '"type": "done"' in client.post("/v1/chat/stream", json=body, headers=chat_headers()).get_data(as_text=True)
    assert client.post("/v1/chat", json=body, headers=chat_headers()).status_code == 429
    assert client.post("/v1/chat", json=body, headers=chat_headers(Origin=FOREIGN)).status_code == 403
    assert client.get(STATS, headers={"X-Admin-Api-Key": "not-the-admin-key-either"}).status_code == 401

    expected = {
        "chatRequests": 8,
        "outputTokens": 12,
        "unauthorized": 2,
        "rateLimited": 1,
        "refusedOrigins": 1,
        "upstreamErrors": 2,
        "incompleteReplies": 1,
    }
    body = stats(client)
    assert body == {"conversations": 1, "messages": 10, "lastHour": expected, "lastDay": expected}


def test_last_hour_and_last_day_take_the_oldest_hour_pro_rata(app, client):
    store = services.of(app).store
    events = {  # hour -> events in it; the clock then stands at 12:30 on the 27th
        "2026-11-26T11:10": 32,  # 25 hours back: outside both windows
        "2026-11-26T12:10": 16,  # 24 hours back: half of it lies in the last day
        "2026-11-27T10:10": 8,
        "2026-11-27T11:10": 4,  # the previous hour: half of it lies in the last hour
        "2026-11-27T12:10": 2,  # this hour so far
    }
    for moment, count in events.items():
        store.clock.seconds = lambda moment=moment: at(moment)
        for _ in range(count):
            store.counts.add("refusedOrigins")
    store.clock.seconds = lambda: at("2026-11-27T12:30")
    body = stats(client)
    assert body["lastHour"]["refusedOrigins"] == 2 + 4 // 2
    assert body["lastDay"]["refusedOrigins"] == 2 + 4 + 8 + 16 // 2


def test_hourly_counts_expire_on_their_own(client, redis_client):
    client.post("/v1/chat", json={"sessionId": "s", "message": "hi"}, headers=chat_headers())
    counts = [key for key in redis_client.keys("*") if ":count:" in key]
    assert {key.split(":")[3] for key in counts} == {"chatRequests", "outputTokens"}
    for key in counts:
        assert 0 < redis_client.pttl(key) <= HOURLY_COUNT_LIFETIME_MS


def test_message_total_follows_deletions_and_ignores_replies_to_deleted_conversations(app, client):
    store = services.of(app).store
    ids = [
        client.post("/v1/chat", json={"sessionId": f"s{i}", "message": "hi"}, headers=chat_headers()).get_json()[
            "conversationId"
        ]
        for i in range(3)
    ]
    assert stats(client)["messages"] == 6
    assert client.delete(f"/v1/admin/conversations/{ids[0]}", headers=admin_headers()).status_code == 204
    store.conversations.append_message(ids[0], "s0", "assistant", "a reply that arrives too late")
    assert stats(client)["messages"] == 4
    assert client.delete("/v1/admin/sessions/s1", headers=admin_headers()).status_code == 204
    assert (stats(client)["conversations"], stats(client)["messages"]) == (1, 2)


def test_counts_are_shared_by_every_gunicorn_worker(start_gunicorn, upstream):
    server = start_gunicorn(WEB_CONCURRENCY="3")

    def one(i):
        with requests.Session() as session:  # a fresh connection each, spread over the workers
            return session.post(
                server.url + "/v1/chat",
                json={"sessionId": f"w{i}", "message": "hi"},
                headers={"X-Api-Key": WIDGET_KEY},
                timeout=30,
            ).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(one, range(12))) == [200] * 12
    for _ in range(3):
        with requests.Session() as session:
            body = session.get(server.url + STATS, headers={"X-Admin-Api-Key": ADMIN_KEY}, timeout=10).json()
        assert body["lastHour"]["chatRequests"] == 12
        assert (body["conversations"], body["messages"]) == (12, 24)


# ---- /metrics ------------------------------------------------------------------------------


def test_metrics_are_valid_prometheus_text_with_the_same_numbers(client, upstream):
    client.post("/v1/chat", json={"sessionId": "m", "message": "hi"}, headers=chat_headers())
    client.post("/v1/chat", json={"sessionId": "m", "message": "hi"}, headers=chat_headers(Origin=FOREIGN))
    response = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"

    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        assert family.type == "gauge" and family.documentation
        for sample in family.samples:
            samples[(sample.name, sample.labels.get("window"))] = sample.value
    body = stats(client)
    assert samples[("ocw_conversations", None)] == body["conversations"] == 1
    assert samples[("ocw_messages", None)] == body["messages"] == 2
    assert samples[("ocw_chat_requests", "1h")] == body["lastHour"]["chatRequests"] == 1
    assert samples[("ocw_refused_origin_requests", "24h")] == body["lastDay"]["refusedOrigins"] == 1
    assert len(samples) == 2 + 2 * len(storage.COUNTERS)


@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Bearer {WIDGET_KEY}"}, {"Authorization": "Bearer wrong"}])
def test_metrics_need_the_admin_key(client, headers):
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"error": "Unauthorized"}


def test_metrics_answer_503_when_no_admin_key_is_configured(make_app):
    response = (
        make_app(ADMIN_API_KEY=None).test_client().get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    )
    assert response.status_code == 503
