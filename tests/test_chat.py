"""Chat routes: validation, storage of each turn, the prompt sent upstream, the NDJSON stream, a session's history."""

from __future__ import annotations

import json
import threading

import pytest

import services
from tests.support import chat_headers, post_chat

STREAM_ROUTES = ["/v1/chat/stream", "/chat"]


def events(response) -> list[dict]:
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


def stored_messages(app, session="s-1"):
    store = services.of(app).store
    found = store.conversations.get(store.conversations.id_for_session(session))
    assert found is not None, f"no conversation for {session}"
    return found


@pytest.mark.parametrize(
    "body, field",
    [
        ({"message": "hi"}, "sessionId"),
        ({"sessionId": "", "message": "hi"}, "sessionId"),
        ({"sessionId": "x" * 129, "message": "hi"}, "sessionId"),
        ({"sessionId": "bad id", "message": "hi"}, "sessionId"),
        ({"sessionId": "a{b}", "message": "hi"}, "sessionId"),
        ({"sessionId": 5, "message": "hi"}, "sessionId"),
        ({"sessionId": "s"}, "message"),
        ({"sessionId": "s", "message": ""}, "message"),
        ({"sessionId": "s", "message": "   \n\t"}, "message"),
        ({"sessionId": "s", "message": "x" * 4001}, "message"),
        ({"sessionId": "s", "message": ["hi"]}, "message"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat", *STREAM_ROUTES])
def test_invalid_chat_body_is_400_naming_the_field_and_stores_nothing(
    client, redis_client, upstream, path, body, field
):
    response = client.post(path, json=body, headers=chat_headers())
    assert response.status_code == 400
    assert response.get_json()["error"] == "Invalid request body"
    assert field in response.get_json()["details"]
    assert all(key.startswith(("ocw:{admission}:ip:", "ocw:{admission}:count:")) for key in redis_client.keys("*"))
    assert upstream.requests == []


@pytest.mark.parametrize(
    "data, content_type",
    [
        (b"not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"null", "application/json"),
        (b"sessionId=s&message=hi", "application/x-www-form-urlencoded"),
        (b"\xff\xfe{", "application/json"),
    ],
)
def test_non_json_body_is_400(client, upstream, data, content_type):
    response = client.post("/v1/chat", data=data, headers=chat_headers(**{"Content-Type": content_type}))
    assert response.status_code == 400
    assert response.get_json()["details"] == {"body": "must be a JSON object"}
    assert upstream.requests == []


def test_body_over_2_mb_is_413(client, upstream):
    body = json.dumps({"sessionId": "s", "message": "x", "pad": "y" * (2 * 1024 * 1024)})
    response = client.post("/v1/chat", data=body, headers=chat_headers(**{"Content-Type": "application/json"}))
    assert response.status_code == 413
    assert response.get_json() == {"error": "Request body too large"}
    assert upstream.requests == []


def test_message_of_exactly_4000_characters_is_accepted(client):
    assert post_chat(client, message="x" * 4000).status_code == 200


def test_unknown_fields_are_ignored(client):
    response = client.post(
        "/v1/chat", json={"sessionId": "s", "message": "hi", "extra": {"a": 1}}, headers=chat_headers()
    )
    assert response.status_code == 200


def test_chat_reply_is_returned_and_both_messages_stored(app, client, upstream):
    upstream.reply = "  The answer.  "
    response = post_chat(client, message="  Question?  ")
    assert response.status_code == 200
    body = response.get_json()
    assert body["message"] == "The answer."
    summary, messages = stored_messages(app)
    assert body["conversationId"] == summary["_id"]
    assert [(m["role"], m["content"]) for m in messages] == [("user", "Question?"), ("assistant", "The answer.")]
    assert summary["messageCount"] == 2
    assert summary["lastMessage"] == "The answer."
    assert summary["_creationTime"] == summary["createdAt"] <= summary["updatedAt"]
    assert all(isinstance(m["createdAt"], int) for m in messages)


def test_one_conversation_per_session_across_turns(app, client):
    first = post_chat(client).get_json()["conversationId"]
    second = post_chat(client).get_json()["conversationId"]
    other = post_chat(client, session="s-2").get_json()["conversationId"]
    assert first == second != other


def test_simultaneous_first_requests_of_a_session_share_one_conversation(app, upstream):
    upstream.token_delay = 0.01
    ids, errors = [], []

    def first_message(i):
        try:
            response = post_chat(app.test_client(), session="race", message=f"m{i}")
            ids.append(response.get_json()["conversationId"])
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=first_message, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(ids) == 12 and len(set(ids)) == 1
    summary, messages = stored_messages(app, "race")
    assert summary["messageCount"] == len(messages) == 24
    assert services.of(app).store.conversations.page(10).total == 1


def test_model_gets_system_prompt_then_history_newest_last(make_app, upstream):
    app = make_app(SYSTEM_PROMPT="Be brief.", MAX_HISTORY_MESSAGES="3", OPENAI_MODEL="model-x")
    client = app.test_client()
    for text in ["one", "two", "three"]:
        upstream.reply = f"re {text}"
        post_chat(client, message=text)
    sent = upstream.requests[-1]
    assert sent["model"] == "model-x"
    assert sent["_authorization"] == "Bearer sk-test-upstream-key"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "re two"},
        {"role": "user", "content": "three"},
    ]


def test_default_system_prompt_and_no_max_tokens_unless_configured(client, make_app, upstream):
    post_chat(client)
    assert upstream.requests[-1]["messages"][0] == {
        "role": "system",
        "content": "You are a concise and helpful AI assistant embedded in a support chat widget.",
    }
    assert "max_tokens" not in upstream.requests[-1]
    post_chat(make_app(MAX_OUTPUT_TOKENS="77").test_client())
    assert upstream.requests[-1]["max_tokens"] == 77


def test_empty_reply_becomes_the_fallback_message_and_is_stored(app, client, upstream):
    upstream.reply = "   "
    assert post_chat(client).get_json()["message"] == "I could not generate a response right now."
    assert stored_messages(app)[1][-1]["content"] == "I could not generate a response right now."


@pytest.mark.parametrize("status", [500, 401])
def test_upstream_error_status_is_502_and_user_message_kept(app, client, upstream, status):
    upstream.fault, upstream.status = "status", status
    response = post_chat(client, message="keep me")
    assert response.status_code == 502
    assert "error" in response.get_json()
    assert [(m["role"], m["content"]) for m in stored_messages(app)[1]] == [("user", "keep me")]


def user_messages_sent_upstream(upstream) -> list[str]:
    return [m["content"] for m in upstream.requests[-1]["messages"] if m["role"] == "user"]


@pytest.mark.parametrize("path", ["/v1/chat", *STREAM_ROUTES])
def test_a_retry_of_a_message_left_unanswered_is_not_stored_or_sent_twice(app, client, upstream, path):
    upstream.fault = "status"  # the first attempt stores the message, then the model fails
    post_chat(client, path=path, message="are you there?").get_data()
    upstream.fault = None
    body = {"sessionId": "s-1", "message": "  are you there?  ", "retry": True}
    response = client.post(path, json=body, headers=chat_headers())
    response.get_data()  # a stream stores its reply as it is read
    assert response.status_code == 200
    stored = [(m["role"], m["content"]) for m in stored_messages(app)[1]]
    assert stored == [("user", "are you there?"), ("assistant", "Hello from the fake model.")]
    assert user_messages_sent_upstream(upstream) == ["are you there?"]
    assert stored_messages(app)[0]["messageCount"] == 2


@pytest.mark.parametrize(
    "first_reply_fails, retried",
    [
        (False, "hi"),  # the message was answered: sending it again is a new turn
        (True, "something else"),  # not the message left unanswered
    ],
)
def test_a_retry_that_repeats_nothing_unanswered_is_stored_as_usual(app, client, upstream, first_reply_fails, retried):
    upstream.fault = "status" if first_reply_fails else None
    post_chat(client, message="hi")
    upstream.fault = None
    body = {"sessionId": "s-1", "message": retried, "retry": True}
    assert client.post("/v1/chat", json=body, headers=chat_headers()).status_code == 200
    users = [m["content"] for m in stored_messages(app)[1] if m["role"] == "user"]
    assert users == ["hi", retried]


@pytest.mark.parametrize("retry", ["yes", 1, None, {}])
def test_retry_must_be_a_boolean(client, upstream, retry):
    body = {"sessionId": "s-1", "message": "hi", "retry": retry}
    response = client.post("/v1/chat", json=body, headers=chat_headers())
    assert response.status_code == 400
    assert response.get_json()["details"] == {"retry": "must be true or false"}
    assert upstream.requests == []


def test_upstream_timeout_is_504_and_user_message_kept(make_app, upstream):
    app = make_app(LLM_TIMEOUT_SECONDS="0.5")
    upstream.fault = "hang"
    response = post_chat(app.test_client(), message="keep me")
    assert response.status_code == 504
    assert [m["content"] for m in stored_messages(app)[1]] == ["keep me"]


def test_unreachable_upstream_is_502(make_app):
    from tests.support import free_port

    app = make_app(OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    assert post_chat(app.test_client()).status_code == 502


@pytest.mark.parametrize("path", STREAM_ROUTES)
def test_stream_sends_start_tokens_done_and_stores_the_reply(app, client, upstream, path):
    upstream.reply = "Hello there friend "
    response = post_chat(client, path=path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store, no-transform"
    assert response.headers["X-Accel-Buffering"] == "no"
    lines = events(response)
    conversation_id = stored_messages(app)[0]["_id"]
    assert lines[0] == {"type": "start", "conversationId": conversation_id}
    assert [e["token"] for e in lines[1:-1]] == ["Hello", " there", " friend", " "]  # untrimmed
    assert lines[-1] == {"type": "done", "message": "Hello there friend", "conversationId": conversation_id}
    assert stored_messages(app)[1][-1]["content"] == "Hello there friend"


@pytest.mark.parametrize("fault", ["status", "cut", "no_done"])
def test_stream_upstream_failure_ends_with_error_line_and_keeps_user_message(app, client, upstream, fault):
    upstream.fault = fault
    upstream.reply = "one two three four"
    lines = events(post_chat(client, path="/v1/chat/stream", message="keep me"))
    assert lines[0]["type"] == "start"
    assert lines[-1]["type"] == "error" and lines[-1]["error"]
    assert all(e["type"] == "token" for e in lines[1:-1])
    messages = stored_messages(app)[1]
    assert messages[0]["content"] == "keep me"
    partial = "".join(e["token"] for e in lines[1:-1]).strip()
    if partial:  # what did arrive is kept, marked as unfinished
        assert messages[1:] == [dict(messages[1], role="assistant", content=partial, interrupted=True)]
    else:
        assert len(messages) == 1


def test_stream_silence_beyond_timeout_ends_with_error_line(make_app, upstream):
    app = make_app(LLM_TIMEOUT_SECONDS="0.5")
    upstream.fault = "hang"
    lines = events(post_chat(app.test_client(), path="/v1/chat/stream"))
    assert [e["type"] for e in lines] == ["start", "error"]


def test_stream_sends_pings_during_upstream_silence(make_app, upstream):
    app = make_app(STREAM_HEARTBEAT_SECONDS="0.1")
    upstream.reply = "slow reply"
    upstream.token_delay = 0.35
    lines = events(post_chat(app.test_client(), path="/v1/chat/stream"))
    kinds = [e["type"] for e in lines]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("ping") >= 2
    assert lines[-1]["message"] == "slow reply"


def test_client_leaving_mid_stream_closes_upstream_and_stores_partial_as_interrupted(app, upstream):
    upstream.reply = " ".join(f"w{i}" for i in range(200))
    upstream.token_delay = 0.02
    response = post_chat(app.test_client(), path="/v1/chat/stream", buffered=False)
    chunks = iter(response.response)
    received = [json.loads(next(chunks)) for _ in range(4)]  # start + 3 tokens
    response.close()  # the client goes away
    assert [e["type"] for e in received] == ["start", "token", "token", "token"]
    from tests.support import wait_until

    assert wait_until(lambda: upstream.hangups, timeout=3), "upstream connection was not closed"
    assert upstream.finished_streams == 0
    messages = stored_messages(app)[1]
    assert messages[-1]["role"] == "assistant" and messages[-1]["interrupted"] is True
    assert messages[-1]["content"].startswith("w0 w1 w2")
    assert len(messages[-1]["content"].split()) < 200


@pytest.mark.parametrize(
    "body, field",
    [
        ({"sessionId": "abc\n", "message": "hi"}, "sessionId"),
        ({"sessionId": "٣٤٥", "message": "hi"}, "sessionId"),
        ({"sessionId": "s", "message": "\ud800 lone surrogate"}, "message"),
    ],
)
def test_lookalike_session_ids_and_unencodable_text_are_400(client, upstream, body, field):
    response = client.post("/v1/chat", json=body, headers=chat_headers())
    assert response.status_code == 400
    assert field in response.get_json()["details"]
    assert upstream.requests == []


def test_absurdly_nested_json_is_400_not_500(client, upstream):
    body = b'{"sessionId": "s", "message": "hi", "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # under the 64 kB cap
    response = client.post("/v1/chat", data=body, headers=chat_headers(**{"Content-Type": "application/json"}))
    assert response.status_code == 400
    assert upstream.requests == []


def test_json_without_content_type_is_accepted(client):
    response = client.post("/v1/chat", data=b'{"sessionId": "s", "message": "hi"}', headers=chat_headers())
    assert response.status_code == 200


def test_non_ascii_and_nul_text_round_trips(app, client, upstream):
    upstream.reply = "Grüße 👋 ok"
    assert post_chat(client, message="héllo\u0000 世界").get_json()["message"] == "Grüße 👋 ok"
    assert [m["content"] for m in stored_messages(app)[1]] == ["héllo\u0000 世界", "Grüße 👋 ok"]


@pytest.mark.parametrize(
    "message, stored", [("\x1f", "\x1f"), ("\x85hi\x1c", "\x85hi\x1c"), ("\ufeff hi \u3000", "hi")]
)
def test_whitespace_is_what_javascript_trims_so_the_document_and_original_agree(app, client, message, stored):
    assert post_chat(client, message=message).status_code == 200
    assert stored_messages(app)[1][0]["content"] == stored


def test_a_message_of_only_javascript_whitespace_is_400(client):
    assert post_chat(client, message="\ufeff\u2028 \t").status_code == 400


# ---- history -------------------------------------------------------------------------------


def get_history(client, session="s-1", **headers):
    return client.get("/v1/chat/history", query_string={"sessionId": session}, headers=chat_headers(**headers))


def test_history_is_the_sessions_messages_oldest_first_as_stored(app, client, upstream):
    for text in ("first", "second"):
        upstream.reply = f"re {text}"
        post_chat(client, message=text)
    post_chat(client, session="someone-else", message="not yours")
    store = services.of(app).store
    store.conversations.append_message(
        store.conversations.id_for_session("s-1"), "s-1", "assistant", "cut sh", interrupted=True
    )

    response = get_history(client)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    messages = response.get_json()["messages"]
    assert messages == stored_messages(app)[1]
    assert [m["content"] for m in messages] == ["first", "re first", "second", "re second", "cut sh"]
    assert messages[-1]["interrupted"] is True and "interrupted" not in messages[0]


def test_history_is_at_most_the_newest_100_messages(app, client):
    store = services.of(app).store
    conversation_id = store.conversations.id_for_session("long")
    for i in range(130):
        store.conversations.append_message(conversation_id, "long", "user", f"m{i}")
    messages = get_history(client, "long").get_json()["messages"]
    assert [m["content"] for m in messages] == [f"m{i}" for i in range(30, 130)]


def test_history_of_an_unknown_session_is_empty_and_stores_nothing(client, redis_client):
    response = get_history(client, "never-seen")
    assert response.status_code == 200
    assert response.get_json() == {"messages": []}
    assert all("{admission}" in key for key in redis_client.keys("*"))


def test_history_of_a_deleted_conversation_is_empty(app, client):
    conversation_id = post_chat(client).get_json()["conversationId"]
    assert services.of(app).store.erasure.delete(conversation_id)
    assert get_history(client).get_json() == {"messages": []}


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"sessionId": ""},
        {"sessionId": "bad id"},
        {"sessionId": "x" * 129},
        {"sessionId": "abc\n"},
        {"sessionId": "a{b}"},
    ],
)
def test_history_session_id_follows_the_chat_rule_or_400(client, redis_client, query):
    response = client.get("/v1/chat/history", query_string=query, headers=chat_headers())
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "Invalid query",
        "details": {"sessionId": "must be 1-128 characters of A-Z a-z 0-9 . _ : -"},
    }


def test_history_counts_against_the_chat_rate_limit(make_app):
    client = make_app(RATE_LIMIT_MAX_REQUESTS="2").test_client()
    assert [get_history(client).status_code for _ in range(3)] == [200, 200, 429]
    assert post_chat(client).status_code == 429
