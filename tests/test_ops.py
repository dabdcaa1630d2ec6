"""Admin operations: a session's conversation, NDJSON export, erasure of an end user's data."""

from __future__ import annotations

import gc
import json
import logging
import time
import tracemalloc

import pytest

import services
import storage
from storage.conversations import BATCH
from tests.support import admin_headers

LIST = "/v1/admin/conversations"
EXPORT = "/v1/admin/export"


def export(client, **query) -> list[dict]:
    response = client.get(EXPORT, query_string=query, headers=admin_headers())
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


# ---- the conversation of one session -------------------------------------------------------


def test_listing_by_session_gives_that_sessions_conversation_in_list_form(client, chat):
    wanted = chat("wanted")
    chat("other")
    body = client.get(LIST, query_string={"sessionId": "wanted"}, headers=admin_headers()).get_json()
    assert body["total"] == 1 and body["nextCursor"] is None
    assert [c["_id"] for c in body["conversations"]] == [wanted]
    assert body["conversations"][0]["sessionId"] == "wanted"


def test_listing_by_an_unknown_session_is_an_empty_list(client, redis_client):
    body = client.get(LIST, query_string={"sessionId": "nobody"}, headers=admin_headers()).get_json()
    assert body == {"conversations": [], "total": 0, "nextCursor": None}


@pytest.mark.parametrize("session_id", ["", "a b", "x" * 129, "é"])
def test_listing_by_a_malformed_session_id_is_400_naming_it(client, session_id):
    response = client.get(LIST, query_string={"sessionId": session_id}, headers=admin_headers())
    assert response.status_code == 400
    assert "sessionId" in response.get_json()["details"]


# ---- export --------------------------------------------------------------------------------


def test_export_is_one_line_per_conversation_with_its_messages_least_recently_updated_first(client, upstream, chat):
    upstream.reply = "an answer"
    first = chat("first", "question one")
    time.sleep(0.002)
    second = chat("second", "question two")
    lines = export(client)
    assert [line["conversation"]["_id"] for line in lines] == [first, second]
    assert [(m["role"], m["content"]) for m in lines[0]["messages"]] == [
        ("user", "question one"),
        ("assistant", "an answer"),
    ]
    assert lines[0]["conversation"] == client.get(f"{LIST}/{first}", headers=admin_headers()).get_json()["conversation"]


def test_export_since_a_time_skips_conversations_not_updated_since(app, client, chat):
    store = services.of(app).store
    store.clock.seconds = lambda: 1_700_000_000.000
    chat("old")
    store.clock.seconds = lambda: 1_700_000_100.000
    recent = chat("recent")
    assert [line["conversation"]["_id"] for line in export(client, updatedSince="1700000100000")] == [recent]
    assert len(export(client, updatedSince="0")) == 2
    assert export(client, updatedSince="1700000100001") == []


def test_export_walks_every_conversation_once_across_batches_even_with_equal_timestamps(app, client, redis_client):
    store = services.of(app).store
    ids = [store.conversations.id_for_session(f"s{i}") for i in range(BATCH * 2 + 30)]
    for i, conversation_id in enumerate(ids):
        store.clock.seconds = lambda i=i: 1_700_000_000 + (i // 70)  # runs of 70 conversations share a millisecond
        store.conversations.append_message(conversation_id, f"s{i}", "user", "hi")
    exported = [line["conversation"]["_id"] for line in export(client)]
    assert sorted(exported) == sorted(ids) and len(exported) == len(ids)


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "", "1" * 17])
def test_export_with_a_malformed_updated_since_is_400_naming_it(client, value):
    response = client.get(EXPORT, query_string={"updatedSince": value}, headers=admin_headers())
    assert response.status_code == 400
    assert "updatedSince" in response.get_json()["details"]


def peak_export_memory(app, updated_since: int) -> tuple[int, int]:
    """(lines, peak bytes allocated) while the route streams the export, one line at a time."""
    gc.collect()
    tracemalloc.start()
    try:
        response = app.test_client().get(
            EXPORT, query_string={"updatedSince": updated_since}, headers=admin_headers(), buffered=False
        )
        lines = sum(1 for _ in response.response)
        response.close()
        return lines, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_export_memory_stays_flat_whatever_the_number_of_conversations(app, redis_client):
    store = services.of(app).store
    for i in range(5000):  # 20 MB of messages: one 4 kB message each, a millisecond apart
        store.clock.seconds = lambda i=i: 1_700_000_000 + i / 1000
        store.conversations.append_message(storage.new_id(), f"s{i}", "user", "x" * 4000)
    last_thousand = 1_700_000_000_000 + 4000
    small_lines, small_peak = peak_export_memory(app, last_thousand)
    large_lines, large_peak = peak_export_memory(app, 0)
    assert (small_lines, large_lines) == (1000, 5000)
    # One batch of 100 conversations is 400 kB of messages; all of them would be 20 MB.
    assert large_peak < 2_000_000, large_peak
    assert large_peak < small_peak * 1.5, (small_peak, large_peak)


# ---- erasure of one end user's data --------------------------------------------------------


def test_erasing_a_session_removes_everything_stored_for_that_end_user(app, client, redis_client, caplog, chat):
    erased = chat("data-subject", "my address is 1 Main Street")
    chat("data-subject", "and my phone number")
    kept = chat("someone-else")
    keys = services.of(app).store.keys
    assert redis_client.exists(keys.session_quota("data-subject"))

    with caplog.at_level(logging.INFO):
        response = client.delete("/v1/admin/sessions/data-subject", headers=admin_headers())
    assert response.status_code == 204 and response.get_data() == b""

    assert [key for key in redis_client.keys("*") if erased in key or "data-subject" in key] == []
    assert redis_client.zscore(keys.index(), erased) is None
    assert redis_client.hget(keys.message_counts(), erased) is None
    assert [c["_id"] for c in client.get(LIST, headers=admin_headers()).get_json()["conversations"]] == [kept]
    log = caplog.text
    assert "Erased session" in log and erased in log
    assert "data-subject" not in log and "Main Street" not in log and "phone" not in log


def test_erasing_a_session_with_nothing_stored_is_404(client, redis_client):
    response = client.delete("/v1/admin/sessions/never-seen", headers=admin_headers())
    assert response.status_code == 404
    assert response.get_json() == {"error": "Session not found"}


def test_erasing_twice_is_404_the_second_time_and_the_session_may_start_afresh(client, chat):
    erased = chat("twice")
    assert client.delete("/v1/admin/sessions/twice", headers=admin_headers()).status_code == 204
    assert client.delete("/v1/admin/sessions/twice", headers=admin_headers()).status_code == 404
    assert chat("twice") != erased


@pytest.mark.parametrize("session_id", ["a%20b", "x" * 129, "%C3%A9"])
def test_erasing_a_malformed_session_id_is_400_naming_it(client, session_id):
    response = client.delete(f"/v1/admin/sessions/{session_id}", headers=admin_headers())
    assert response.status_code == 400
    assert response.get_json()["details"] == {"sessionId": "must be 1-128 characters of A-Z a-z 0-9 . _ : -"}


def test_deleting_a_conversation_is_logged_without_its_content(client, caplog, chat):
    conversation_id = chat("logged", "something private")
    with caplog.at_level(logging.INFO):
        assert client.delete(f"{LIST}/{conversation_id}", headers=admin_headers()).status_code == 204
    assert f"Deleted conversation {conversation_id}" in caplog.text
    assert "something private" not in caplog.text and "logged" not in caplog.text.replace("Deleted", "")
