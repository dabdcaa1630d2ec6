"""Admin routes: listing order, limit, cursor pagination, summary and thread shapes, delete, 503."""

from __future__ import annotations

import time

import pytest

import services
from tests.support import ADMIN_KEY, WIDGET_KEY, admin_headers, chat_turn

LIST = "/v1/admin/conversations"
SUMMARY_KEYS = {"_id", "_creationTime", "sessionId", "createdAt", "updatedAt", "lastMessage", "messageCount"}
MESSAGE_KEYS = {"_id", "role", "content", "createdAt"}


def add_conversation(app, session, message="hello"):
    """A conversation of one user message, written directly through the app's storage."""
    store = services.of(app).store
    conversation_id = store.conversations.id_for_session(session)
    store.conversations.append_message(conversation_id, session, "user", message)
    return conversation_id


def add_conversations(app, count, spaced=False):
    ids = []
    for i in range(count):
        ids.append(add_conversation(app, f"s-{i}"))
        if spaced:
            time.sleep(0.002)  # distinct millisecond timestamps
    return ids


def get_list(client, **query):
    return client.get(LIST, query_string=query, headers=admin_headers())


def listed_ids(client, **query) -> list[str]:
    response = get_list(client, **query)
    assert response.status_code == 200
    return [c["_id"] for c in response.get_json()["conversations"]]


def walk_pages(client, limit) -> list[dict]:
    """Every page of the listing, following nextCursor until it is null."""
    pages, cursor = [], None
    while True:
        query = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        response = get_list(client, **query)
        assert response.status_code == 200, response.get_data(as_text=True)
        pages.append(response.get_json())
        cursor = pages[-1]["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "pagination does not terminate"


# ---- listing order -------------------------------------------------------------------------


def test_listing_is_newest_updated_first_and_a_new_message_moves_a_conversation_to_the_top(app, client, chat):
    a, b, c = add_conversations(app, 3, spaced=True)
    assert listed_ids(client) == [c, b, a]

    time.sleep(0.002)
    services.of(app).store.conversations.append_message(a, "s-0", "user", "again")
    assert listed_ids(client) == [a, c, b]

    time.sleep(0.002)
    chat(session="s-1")  # b gets a whole new turn through the chat route
    body = get_list(client).get_json()
    assert [s["_id"] for s in body["conversations"]] == [b, a, c]
    updated = [s["updatedAt"] for s in body["conversations"]]
    assert updated == sorted(updated, reverse=True)


def test_empty_listing(client, redis_client):
    response = get_list(client)
    assert response.status_code == 200
    assert response.get_json() == {"conversations": [], "total": 0, "nextCursor": None}


# ---- limit ---------------------------------------------------------------------------------


def test_limit_defaults_to_100(app, client):
    add_conversations(app, 101)
    body = get_list(client).get_json()
    assert len(body["conversations"]) == 100
    assert body["total"] == 101
    assert body["nextCursor"] is not None


@pytest.mark.parametrize("limit, expected", [("1", 1), ("2", 2), ("007", 7), ("150", 150), ("200", 200)])
def test_limit_from_1_to_200_is_accepted(app, client, limit, expected):
    add_conversations(app, 201)
    body = get_list(client, limit=limit).get_json()
    assert len(body["conversations"]) == expected
    assert body["total"] == 201
    assert body["nextCursor"] is not None


@pytest.mark.parametrize("limit", ["0", "201", "-1", "abc", "1.5", "", " 5", "1e2", "99999999999999999999"])
def test_limit_outside_1_to_200_is_400_naming_limit(client, redis_client, limit):
    response = get_list(client, limit=limit)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"]
    assert "limit" in body["details"]


# ---- cursor pagination ---------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 8])
def test_cursor_pagination_returns_every_conversation_exactly_once(app, client, limit):
    ids = add_conversations(app, 7, spaced=True)
    pages = walk_pages(client, limit)
    seen = [s["_id"] for page in pages for s in page["conversations"]]
    assert seen == list(reversed(ids))  # each exactly once, newest first across pages
    assert all(page["total"] == 7 for page in pages)
    assert all(len(page["conversations"]) == limit for page in pages[:-1])
    assert pages[-1]["nextCursor"] is None
    assert len(pages) == -(-7 // limit)


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 9, 10])
@pytest.mark.parametrize(
    "timestamps",
    [
        [1_700_000_000_000] * 9,  # all nine share one updatedAt
        [1_700_000_000_000] * 4 + [1_700_000_000_500] * 3 + [1_700_000_000_250] * 2,  # three groups of ties
    ],
)
def test_cursor_pagination_survives_conversations_with_the_same_updated_at(app, client, monkeypatch, limit, timestamps):
    clock = iter(timestamps)
    services.of(app).store.clock.seconds = lambda: next(clock) / 1000
    ids = add_conversations(app, len(timestamps))
    pages = walk_pages(client, limit)
    seen = [s for page in pages for s in page["conversations"]]
    assert sorted(s["_id"] for s in seen) == sorted(ids)
    assert len(seen) == len(ids)  # no duplicates
    assert [s["updatedAt"] for s in seen] == sorted(timestamps, reverse=True)
    assert all(page["total"] == len(ids) for page in pages)
    assert pages[-1]["nextCursor"] is None


def test_cursor_pagination_survives_equal_scores_written_in_the_index(app, client, redis_client):
    ids = add_conversations(app, 7)
    index = services.of(app).store.keys.index()
    redis_client.zadd(index, {conversation_id: 1_700_000_000_000 for conversation_id in ids})
    pages = walk_pages(client, 2)
    seen = [s["_id"] for page in pages for s in page["conversations"]]
    assert sorted(seen) == sorted(ids)
    assert len(seen) == 7
    assert [len(page["conversations"]) for page in pages] == [2, 2, 2, 1]


def test_cursor_keeps_working_when_a_listed_conversation_gets_a_new_message(app, client):
    ids = add_conversations(app, 5, spaced=True)
    first = get_list(client, limit=2).get_json()
    assert [s["_id"] for s in first["conversations"]] == [ids[4], ids[3]]
    time.sleep(0.002)
    services.of(app).store.conversations.append_message(ids[3], "s-3", "user", "moved to the top")
    rest = get_list(client, limit=10, cursor=first["nextCursor"]).get_json()
    assert [s["_id"] for s in rest["conversations"]] == [ids[2], ids[1], ids[0]]


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "abc",
        "123",
        "123:",
        ":abc",
        "-1:abc",
        "1.5:abc",
        "12:a{b}",
        "12:a b",
        "1" * 17 + ":abc",
        "12:" + "a" * 65,
        "12:abc:def",
    ],
)
@pytest.mark.parametrize("filter_by_session", [False, True])
def test_malformed_cursor_is_400_naming_cursor(app, client, cursor, filter_by_session):
    add_conversations(app, 3)
    # Beside sessionId the cursor is not used, but the document still gives it one form.
    query = {"sessionId": "visitor-0"} if filter_by_session else {}
    response = get_list(client, limit=2, cursor=cursor, **query)
    assert response.status_code == 400
    assert "cursor" in response.get_json()["details"]


# ---- summary and thread --------------------------------------------------------------------


def test_summary_has_exactly_the_documented_keys_with_integer_timestamps(client, upstream, chat):
    upstream.reply = "".join(chr(ord("A") + i % 26) for i in range(1000))  # no spaces: one token
    conversation_id = chat(session="shape", message="x" * 1000)
    summary = get_list(client).get_json()["conversations"][0]
    assert set(summary) == SUMMARY_KEYS
    for field in ("_creationTime", "createdAt", "updatedAt", "messageCount"):
        assert type(summary[field]) is int, field
    assert summary["_id"] == conversation_id
    assert summary["sessionId"] == "shape"
    assert summary["_creationTime"] == summary["createdAt"] <= summary["updatedAt"]
    assert summary["createdAt"] > 1_600_000_000_000  # milliseconds, not seconds
    assert summary["messageCount"] == 2
    assert summary["lastMessage"] == upstream.reply[:500]  # the newest message is the reply


def test_last_message_is_the_first_500_chars_of_a_long_user_message(app, client):
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    conversation_id = add_conversation(app, "long", text)
    summary = get_list(client).get_json()["conversations"][0]
    assert summary["_id"] == conversation_id
    assert summary["lastMessage"] == text[:500]
    thread = client.get(f"{LIST}/{conversation_id}", headers=admin_headers()).get_json()
    assert thread["messages"][0]["content"] == text  # the message itself is kept whole


def test_thread_is_the_summary_and_messages_oldest_first(client, upstream, chat):
    upstream.reply = "first answer"
    conversation_id = chat(session="thread", message="first question")
    upstream.reply = "second answer"
    chat(session="thread", message="second question")

    response = client.get(f"{LIST}/{conversation_id}", headers=admin_headers())
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"conversation", "messages"}
    assert body["conversation"] == get_list(client).get_json()["conversations"][0]
    assert body["conversation"]["messageCount"] == 4
    messages = body["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "second question"),
        ("assistant", "second answer"),
    ]
    assert all(set(m) == MESSAGE_KEYS for m in messages)
    assert all(type(m["createdAt"]) is int for m in messages)
    assert [m["createdAt"] for m in messages] == sorted(m["createdAt"] for m in messages)
    assert len({m["_id"] for m in messages}) == 4
    assert messages[-1]["createdAt"] == body["conversation"]["updatedAt"]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_unknown_conversation_is_404(client, redis_client, method):
    response = client.open(f"{LIST}/0123456789abcdef0123456789abcdef", method=method, headers=admin_headers())
    assert response.status_code == 404
    assert response.get_json() == {"error": "Conversation not found"}


@pytest.mark.parametrize("conversation_id", ["a{b}", "x" * 65, "a:b", "*", "a%20b", "%00", "ocw:conversations"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_ids_with_odd_characters_are_404_json(app, client, method, conversation_id):
    add_conversation(app, "present")
    response = client.open(f"{LIST}/{conversation_id}", method=method, headers=admin_headers())
    assert response.status_code == 404
    assert response.get_json() == {"error": "Conversation not found"}
    assert get_list(client).get_json()["total"] == 1


@pytest.mark.parametrize("path", ["..%2F..", "..%2F..%2Fconversations", "%2F", "a%2Fb"])
@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_ids_with_encoded_slashes_are_404_json(app, client, method, path):
    add_conversation(app, "present")
    response = client.open(f"{LIST}/{path}", method=method, headers=admin_headers())
    assert response.status_code == 404
    assert response.is_json
    assert response.get_json()["error"]
    assert get_list(client).get_json()["total"] == 1


# ---- delete --------------------------------------------------------------------------------


def test_delete_removes_conversation_messages_session_mapping_and_index_entry(app, client, redis_client, chat):
    doomed = chat(session="doomed")
    chat(session="doomed")
    kept = chat(session="kept")
    assert get_list(client).get_json()["total"] == 2
    keys = services.of(app).store.keys

    response = client.delete(f"{LIST}/{doomed}", headers=admin_headers())
    assert response.status_code == 204
    assert response.get_data() == b""

    assert client.get(f"{LIST}/{doomed}", headers=admin_headers()).status_code == 404
    body = get_list(client).get_json()
    assert [s["_id"] for s in body["conversations"]] == [kept]
    assert body["total"] == 1
    assert redis_client.keys(f"*{doomed}*") == []
    assert redis_client.zscore(keys.index(), doomed) is None
    assert not redis_client.exists(keys.session("doomed"))
    assert redis_client.exists(keys.session("kept"))

    reborn = chat(session="doomed")
    assert reborn != doomed
    thread = client.get(f"{LIST}/{reborn}", headers=admin_headers()).get_json()
    assert thread["conversation"]["messageCount"] == 2  # a fresh conversation, not the old history


def test_deleting_twice_is_404_the_second_time(client, chat):
    conversation_id = chat()
    assert client.delete(f"{LIST}/{conversation_id}", headers=admin_headers()).status_code == 204
    response = client.delete(f"{LIST}/{conversation_id}", headers=admin_headers())
    assert response.status_code == 404
    assert response.get_json() == {"error": "Conversation not found"}


def test_delete_leaves_other_conversations_untouched(client, chat):
    kept = chat(session="kept", message="keep me")
    doomed = chat(session="doomed")
    before = client.get(f"{LIST}/{kept}", headers=admin_headers()).get_json()
    client.delete(f"{LIST}/{doomed}", headers=admin_headers())
    assert client.get(f"{LIST}/{kept}", headers=admin_headers()).get_json() == before


# ---- admin key unset -----------------------------------------------------------------------

ADMIN_ROUTES = [
    ("GET", LIST),
    ("GET", LIST + "?limit=5"),
    ("GET", LIST + "?limit=abc"),
    ("GET", LIST + "/0123456789abcdef0123456789abcdef"),
    ("DELETE", LIST + "/0123456789abcdef0123456789abcdef"),
]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        admin_headers(),
        {"Authorization": f"Bearer {ADMIN_KEY}"},
        {"X-Admin-Api-Key": WIDGET_KEY},
        {"X-Admin-Api-Key": "wrong-key-wrong-key-wrong-key"},
    ],
    ids=["no-key", "admin-header", "bearer", "widget-key", "wrong-key"],
)
@pytest.mark.parametrize("method, path", ADMIN_ROUTES)
def test_admin_routes_answer_503_when_admin_key_is_unset(make_app, method, path, headers):
    client = make_app(ADMIN_API_KEY=None).test_client()
    response = client.open(path, method=method, headers=headers)
    assert response.status_code == 503
    assert response.get_json() == {"error": "ADMIN_API_KEY is not configured on this deployment"}


def test_chat_still_works_when_admin_key_is_unset(make_app):
    client = make_app(ADMIN_API_KEY=None).test_client()
    chat_turn(client)
