"""Retention: conversations idle longer than CONVERSATION_RETENTION_DAYS disappear on their own."""

from __future__ import annotations

import time

import pytest

import services
from tests.support import admin_headers, chat_turn

RETENTION_DAYS = "0.00001"  # 864 ms
RETENTION_MS = 864
LIST = "/v1/admin/conversations"


def listing(client, **query):
    return client.get(LIST, query_string=query, headers=admin_headers()).get_json()


def stored_keys(redis_client) -> list[str]:
    """Every key holding conversation data or pointing at it (not the hourly counts)."""
    return sorted(key for key in redis_client.keys("*") if key.startswith(("ocw:conv:", "ocw:session:")))


@pytest.fixture
def short_retention(make_app):
    return make_app(CONVERSATION_RETENTION_DAYS=RETENTION_DAYS)


def test_every_key_of_a_conversation_and_its_session_expires_after_the_retention(short_retention, redis_client):
    chat_turn(short_retention.test_client())
    keys = stored_keys(redis_client)
    assert len(keys) == 3  # summary, messages, session mapping
    for key in keys:
        assert 0 < redis_client.pttl(key) <= RETENTION_MS, key


def test_an_idle_conversation_disappears_without_a_cron_job(short_retention, redis_client):
    client = short_retention.test_client()
    conversation_id = chat_turn(client)
    assert listing(client)["total"] == 1

    time.sleep(RETENTION_MS / 1000 + 0.3)
    assert stored_keys(redis_client) == []
    assert client.get(f"{LIST}/{conversation_id}", headers=admin_headers()).status_code == 404
    assert listing(client) == {"conversations": [], "total": 0, "nextCursor": None}
    index = services.of(short_retention).store.keys.index()
    assert redis_client.zcard(index) == 0  # the listing swept its own index
    stats = client.get("/v1/admin/stats", headers=admin_headers()).get_json()
    assert (stats["conversations"], stats["messages"]) == (0, 0)
    assert chat_turn(client) != conversation_id  # the visitor starts afresh


def test_each_message_pushes_the_expiry_back(short_retention, redis_client):
    client = short_retention.test_client()
    conversation_id = chat_turn(client)
    for _ in range(3):
        time.sleep(RETENTION_MS / 2000)
        assert chat_turn(client) == conversation_id  # never idle for a whole retention
    thread = client.get(f"{LIST}/{conversation_id}", headers=admin_headers()).get_json()
    assert thread["conversation"]["messageCount"] == 8


def test_lowering_the_retention_deletes_conversations_kept_under_the_old_one(make_app, redis_client):
    kept_forever = make_app()
    chat_turn(kept_forever.test_client(), session="old-visitor")
    assert all(redis_client.pttl(key) == -1 for key in stored_keys(redis_client))

    time.sleep(RETENTION_MS / 1000 + 0.1)
    strict = make_app(CONVERSATION_RETENTION_DAYS=RETENTION_DAYS).test_client()
    assert listing(strict)["total"] == 0
    assert stored_keys(redis_client) == []


def test_unsetting_the_retention_keeps_active_conversations_forever(short_retention, make_app, redis_client):
    chat_turn(short_retention.test_client())
    chat_turn(make_app().test_client())  # the next message arrives after the retention was unset
    keys = stored_keys(redis_client)
    assert len(keys) == 3
    assert all(redis_client.pttl(key) == -1 for key in keys)


def test_listing_never_returns_an_entry_whose_data_is_gone_and_removes_it(app, client, redis_client, chat):
    store = services.of(app).store
    gone, kept = chat(session="evicted"), chat(session="kept")
    redis_client.delete(store.keys.conversation(gone), store.keys.messages(gone))  # as an eviction would

    body = listing(client)
    assert [c["_id"] for c in body["conversations"]] == [kept]
    # A fresh entry may belong to a conversation still being written (cluster pipelines), so
    # it is removed only once it is a minute old.
    assert redis_client.zscore(store.keys.index(), gone) is not None
    store.clock.seconds = lambda: time.time() + 61
    assert [c["_id"] for c in listing(client)["conversations"]] == [kept]
    assert redis_client.zscore(store.keys.index(), gone) is None
    assert listing(client)["total"] == 1


def test_purge_deletes_only_conversations_idle_since_before_the_cutoff(app, client, redis_client, chat):
    store = services.of(app).store
    now = time.time()
    store.clock.seconds = lambda: now - 10 * 86400
    old = chat(session="old")
    store.clock.seconds = lambda: now
    recent = chat(session="recent")

    assert store.erasure.purge_idle(int((now - 5 * 86400) * 1000)) == 1
    assert store.conversations.get(old) is None
    assert store.conversations.get(recent) is not None
    assert not redis_client.exists(store.keys.session("old"))
    assert store.stats()["messages"] == 2
