"""Storage against the real test Redis: key layout, sessions, appends, and the cost of each operation."""

from __future__ import annotations

import re

import pytest
from redis.crc import key_slot

import services
import storage
from tests.support import admin_headers, chat_headers, found

CONVERSATION_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def store(app) -> storage.Storage:
    return services.of(app).store


def make_storage(redis_server, prefix) -> storage.Storage:
    return storage.Storage(storage.connect(redis_server.url), prefix)


def start_conversation(store, session, message="hello"):
    conversation_id = store.conversations.id_for_session(session)
    store.conversations.append_message(conversation_id, session, "user", message)
    return conversation_id


def command_calls(redis_client) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT, without the measuring commands themselves."""
    stats = redis_client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): stat["calls"] for name, stat in stats.items()}
    return {name: n for name, n in calls.items() if not name.startswith(("config", "info"))}


# ---- keys ----------------------------------------------------------------------------------

KEY_BUILDERS = [
    ("conversation", (CONVERSATION_ID,)),
    ("messages", (CONVERSATION_ID,)),
    ("session", ("session-1",)),
    ("index", ()),
    ("client_requests", ("203.0.113.9",)),
    ("session_quota", ("session-1",)),
    ("daily_requests", ("2026-11-27",)),
    ("daily_tokens", ("2026-11-27",)),
    ("hourly_count", ("chatRequests", "2026-11-27T09")),
    ("sign_in_attempts", ("203.0.113.9",)),
    ("dashboard_session", ("dashboard-session-1",)),
    ("message_total", ()),
    ("message_counts", ()),
]


@pytest.mark.parametrize("name, args", KEY_BUILDERS)
@pytest.mark.parametrize("prefix", ["ocw", "tenant-a", "x"])
def test_every_key_starts_with_the_prefix(prefix, name, args):
    key = getattr(storage.Keys(prefix), name)(*args)
    assert key.startswith(prefix + ":")


def test_both_per_conversation_keys_share_the_conversation_hash_tag():
    keys = storage.Keys("ocw")
    conversation, messages = keys.conversation(CONVERSATION_ID), keys.messages(CONVERSATION_ID)
    assert conversation != messages
    for key in (conversation, messages):
        # Redis Cluster hashes only the first {...} of a key.
        assert found(re.search(r"\{([^}]*)\}", key), 1) == CONVERSATION_ID
    assert key_slot(conversation.encode()) == key_slot(messages.encode())


def test_every_key_a_chat_writes_is_under_the_configured_prefix(make_app, redis_client):
    app = make_app(REDIS_PREFIX="tenant-a")
    client = app.test_client()
    response = client.post("/v1/chat", json={"sessionId": "s", "message": "hi"}, headers=chat_headers())
    assert response.status_code == 200
    written = redis_client.keys("*")
    assert len(written) >= 4  # conversation, messages, session, index (+ rate limit)
    assert all(key.startswith("tenant-a:") for key in written), written


def test_different_prefixes_keep_two_deployments_apart_on_one_redis(redis_server, redis_client):
    a, b = make_storage(redis_server, "a"), make_storage(redis_server, "b")
    conversation_id = start_conversation(a, "shared-session")

    page = b.conversations.page(10)
    assert (page.conversations, page.total, page.next_cursor) == ([], 0, None)
    assert b.conversations.get(conversation_id) is None
    assert b.conversations.id_for_session("shared-session") != conversation_id
    assert b.erasure.delete(conversation_id) is False
    assert a.conversations.get(conversation_id) is not None
    assert a.conversations.page(10).total == 1


def test_different_prefixes_through_the_apps(make_app, redis_client):
    first, second = make_app(REDIS_PREFIX="a"), make_app(REDIS_PREFIX="b")
    first.test_client().post("/v1/chat", json={"sessionId": "s", "message": "hi"}, headers=chat_headers())
    body = second.test_client().get("/v1/admin/conversations", headers=admin_headers()).get_json()
    assert body == {"conversations": [], "total": 0, "nextCursor": None}


# ---- sessions ------------------------------------------------------------------------------


def test_a_session_resolves_to_the_same_conversation_every_time(store, redis_client):
    first = store.conversations.id_for_session("s-1")
    assert [store.conversations.id_for_session("s-1") for _ in range(5)] == [first] * 5
    assert storage.CONVERSATION_ID.match(first)


def test_different_sessions_resolve_to_different_conversations(store, redis_client):
    ids = {store.conversations.id_for_session(f"s-{i}") for i in range(20)}
    assert len(ids) == 20


# ---- append --------------------------------------------------------------------------------


def test_assistant_message_to_a_deleted_conversation_does_not_recreate_it(store, redis_client):
    conversation_id = start_conversation(store, "s-1")
    assert store.erasure.delete(conversation_id)

    assert store.conversations.append_message(conversation_id, "s-1", "assistant", "late reply") == []
    assert store.conversations.get(conversation_id) is None
    assert store.conversations.page(10).total == 0
    assert redis_client.zscore(store.keys.index(), conversation_id) is None
    assert redis_client.keys(f"*{conversation_id}*") == []


def test_assistant_message_to_a_conversation_that_never_existed_is_dropped(store, redis_client):
    store.conversations.append_message(CONVERSATION_ID, "s-1", "assistant", "orphan", interrupted=True)
    assert store.conversations.get(CONVERSATION_ID) is None
    assert redis_client.keys("*") == []


def test_append_returns_the_newest_messages_including_the_new_one(store, redis_client):
    conversation_id = store.conversations.id_for_session("s-1")
    for i in range(5):
        store.conversations.append_message(conversation_id, "s-1", "user", f"m{i}")
    recent = store.conversations.append_message(conversation_id, "s-1", "user", "m5", history=3)
    assert [m["content"] for m in recent] == ["m3", "m4", "m5"]


@pytest.mark.parametrize("role", ["user", "assistant"])
def test_interrupted_flag_is_stored_only_when_given(store, redis_client, role):
    conversation_id = start_conversation(store, "s-1")
    store.conversations.append_message(conversation_id, "s-1", role, "finished")
    store.conversations.append_message(conversation_id, "s-1", role, "cut short", interrupted=True)
    _, messages = store.conversations.get(conversation_id)
    assert "interrupted" not in messages[0]
    assert "interrupted" not in messages[1]
    assert messages[2]["content"] == "cut short"
    assert messages[2]["interrupted"] is True


def test_appends_arriving_out_of_clock_order_keep_times_in_list_order(store, redis_client):
    # Two workers stamp their messages, and the later stamp reaches Redis first.
    conversation_id = store.conversations.id_for_session("s-1")
    for stamp, role in ((5000, "user"), (3000, "user"), (4000, "assistant"), (6000, "assistant")):
        store.clock.seconds = lambda stamp=stamp: stamp / 1000
        store.conversations.append_message(conversation_id, "s-1", role, f"at {stamp}")
    summary, messages = store.conversations.get(conversation_id)
    assert [(m["content"], m["createdAt"]) for m in messages] == [
        ("at 5000", 5000),
        ("at 3000", 5000),
        ("at 4000", 5000),
        ("at 6000", 6000),
    ]
    assert summary["createdAt"] == 5000 and summary["updatedAt"] == 6000
    assert redis_client.zscore("ocw:conversations", conversation_id) == 6000


# ---- cost of operations --------------------------------------------------------------------


@pytest.mark.parametrize("page", ["first", "after cursor"])
def test_listing_reads_only_the_page_not_every_conversation(store, redis_client, page):
    for i in range(500):
        store.conversations.append_message(storage.new_id(), f"s-{i}", "user", f"m{i}")
    cursor = store.conversations.page(10).next_cursor if page == "after cursor" else None

    redis_client.config_resetstat()
    result = store.conversations.page(10, cursor)
    calls = command_calls(redis_client)

    assert len(result.conversations) == 10
    assert result.total == 500
    assert calls.get("hgetall") == 10
    assert not {"keys", "scan", "sort", "lrange", "hscan", "zscan"} & set(calls), calls
    assert sum(calls.values()) <= 15, calls


@pytest.mark.parametrize("path", ["/v1/chat", "/v1/chat/stream"])
def test_a_chat_turn_costs_the_same_redis_commands_whatever_the_history_length(app, client, store, redis_client, path):
    for session, count in (("short", 2), ("long", 200)):
        conversation_id = store.conversations.id_for_session(session)
        for i in range(count):
            store.conversations.append_message(conversation_id, session, "user" if i % 2 == 0 else "assistant", f"m{i}")
    for i in range(300):  # and many other conversations around
        store.conversations.append_message(storage.new_id(), f"other-{i}", "user", "x")
    warm_up = client.post(path, json={"sessionId": "warm-up", "message": "hi"}, headers=chat_headers())
    assert warm_up.status_code == 200  # loads every script once and opens the pooled connection
    warm_up.get_data()

    costs = {}
    for session in ("short", "long"):
        redis_client.config_resetstat()
        response = client.post(path, json={"sessionId": session, "message": "hi"}, headers=chat_headers())
        assert response.status_code == 200
        response.get_data()  # a streamed turn stores its reply when the stream ends
        costs[session] = command_calls(redis_client)

    assert costs["short"] == costs["long"]
    assert sum(costs["short"].values()) == sum(costs["long"].values())
    assert "keys" not in costs["long"] and "scan" not in costs["long"]
    assert store.conversations.get(store.conversations.id_for_session("long"))[0]["messageCount"] == 202


def test_admission_counters_share_one_hash_tag_so_one_script_can_check_them_all():
    keys = storage.Keys("ocw")
    admission = [
        keys.client_requests("203.0.113.9"),
        keys.session_quota("s-1"),
        keys.daily_requests("2026-11-27"),
        keys.daily_tokens("2026-11-27"),
        keys.sign_in_attempts("203.0.113.9"),
    ]
    assert {key_slot(key.encode()) for key in admission} == {key_slot(b"{admission}")}


def test_hourly_counts_share_the_admission_hash_tag_and_message_totals_share_theirs():
    keys = storage.Keys("ocw")
    hourly = [keys.hourly_count(name, "2026-11-27T09") for name in storage.COUNTERS]
    assert {key_slot(key.encode()) for key in hourly} == {key_slot(keys.client_requests("203.0.113.9").encode())}
    assert key_slot(keys.message_total().encode()) == key_slot(keys.message_counts().encode())


@pytest.mark.parametrize("length", [3, 500])
def test_session_history_is_one_get_and_one_lrange_whatever_the_length(store, redis_client, length):
    conversation_id = start_conversation(store, "reader")
    for i in range(length - 1):
        store.conversations.append_message(conversation_id, "reader", "assistant", f"m{i}")
    redis_client.config_resetstat()
    messages = store.conversations.history("reader", 100)
    assert len(messages) == min(length, 100)
    assert command_calls(redis_client) == {"get": 1, "lrange": 1}


def test_session_history_of_an_unknown_session_only_reads(store, redis_client):
    store.ping()  # opens the pooled connection, whose handshake is not the read's cost
    redis_client.config_resetstat()
    assert store.conversations.history("unknown", 100) == []
    assert command_calls(redis_client) == {"get": 1}
    assert redis_client.keys("*") == []
