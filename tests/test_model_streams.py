"""What real OpenAI-compatible servers send, byte for byte, read as a browser would.

The original backend reads the stream with a TextDecoder and JSON.parse per line, skipping lines
it cannot parse; the event-stream grammar (WHATWG HTML, "Parsing an event stream") allows CRLF,
LF and CR line ends and decodes UTF-8 with replacement. Each case is one kind of byte sequence
reported against llama.cpp, vLLM, Azure, LiteLLM, text-generation servers or chat front ends,
sent by the test upstream exactly, through real HTTP, to the client and through the whole app.
"""

from __future__ import annotations

import json

import pytest

from llm import OpenAIClient, StreamFacts, UpstreamError, UpstreamProtocolError
from tests.integrity import stored_thread
from tests.support import chat_headers

PROMPT = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]


def event(payload, end: bytes = b"\n\n") -> bytes:
    """One `data:` event: payload as JSON, or as it is if already bytes."""
    return b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode()) + end


def chunk(content: str | None = None, finish_reason: str | None = None, raw_content: str | None = None) -> bytes:
    """A chat-completions chunk as JSON text; raw_content is put in the JSON string as it is
    (to send escapes such as \\ud83d that json.dumps would not produce from a str)."""
    delta = {} if content is None else {"content": content}
    text = json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})
    if raw_content is not None:
        text = text.replace('"delta": {}', '"delta": {"content": "' + raw_content + '"}')
    return text.encode()


DONE = event(b"[DONE]")


@pytest.fixture
def model(upstream):
    return OpenAIClient(upstream.url, "sk-test", "m", timeout_seconds=2.0)


def read(model) -> tuple[str, StreamFacts]:
    with model.stream(PROMPT) as reply:
        text = "".join(reply)
    return text, reply.facts


# ---- decoding ------------------------------------------------------------------------------


def test_the_two_utf16_halves_of_an_emoji_in_two_chunks_make_one_emoji(model, upstream):
    upstream.stream_bytes = [event(chunk(raw_content="Hi \\ud83d")), event(chunk(raw_content="\\ude00!")), DONE]
    text, _ = read(model)
    assert text == "Hi \U0001f600!"


def test_a_utf16_half_without_its_pair_becomes_a_replacement_character(model, upstream):
    upstream.stream_bytes = [
        event(chunk(raw_content="a\\ud83d")),
        event(chunk("b")),
        event(chunk(raw_content="\\ude00c")),
        event(chunk(raw_content="d\\ud83d")),
        DONE,
    ]
    text, _ = read(model)
    assert text == "a\ufffdb\ufffdcd\ufffd"


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n", b"\r"], ids=["CRLF", "LF", "CR"])
def test_every_line_end_the_event_stream_allows_is_read(model, upstream, line_end):
    upstream.stream_bytes = [
        b"data: " + chunk("one") + line_end * 2,
        b"data: " + chunk(" two") + line_end * 2,
        b"data: [DONE]" + line_end * 2,
    ]
    assert read(model)[0] == "one two"


def test_a_crlf_split_between_two_writes_is_one_line_end(model, upstream):
    upstream.stream_bytes = [
        b"data: " + chunk("one") + b"\r",
        b"\n\r",
        b"\ndata: " + chunk(" two") + b"\r",
        b"\n\r\ndata: [DONE]\r\n\r\n",
    ]
    text, facts = read(model)
    assert text == "one two" and facts.skipped_lines == 0


def test_bytes_that_are_not_utf8_become_replacement_characters_and_the_reply_goes_on(model, upstream):
    upstream.stream_bytes = [event(chunk("caf").replace(b"caf", b"caf\xff\xfe")), event(chunk(" ok")), DONE]
    assert read(model)[0] == "caf\ufffd\ufffd ok"


def test_a_utf8_character_split_between_two_writes_is_decoded_whole(model, upstream):
    whole = event(chunk("d\u00e9j\u00e0 \u4e16\u754c"))
    upstream.stream_bytes = [whole[:-11], whole[-11:], DONE]  # cuts inside a multi-byte character
    assert read(model)[0] == "d\u00e9j\u00e0 \u4e16\u754c"


def test_a_byte_order_mark_before_the_first_line_is_dropped(model, upstream):
    upstream.stream_bytes = [b"\xef\xbb\xbf" + event(chunk("hi")), DONE]
    assert read(model)[0] == "hi"


# ---- lines the reader skips ----------------------------------------------------------------


def test_a_data_line_that_is_not_json_is_skipped_and_counted(model, upstream):
    upstream.stream_bytes = [
        event(chunk("one")),
        event(b"{not json"),
        event(b"<html>502</html>"),
        event(chunk(" two")),
        DONE,
    ]
    text, facts = read(model)
    assert text == "one two" and facts.skipped_lines == 2


def test_comments_unknown_fields_and_data_without_a_space_are_read_as_the_standard_says(model, upstream):
    upstream.stream_bytes = [
        b": keep-alive\n\n",
        b"event: message\nid: 7\nretry: 1000\nx-vendor: 1\n",
        b"data:" + chunk("tight") + b"\n\n",
        b"data\n\n",
        event(chunk(" spaced")),
        DONE,
    ]
    text, facts = read(model)
    assert text == "tight spaced" and facts.skipped_lines == 0


def test_lines_without_blank_lines_between_events_are_read_one_by_one(model, upstream):
    upstream.stream_bytes = [event(chunk("a"), b"\n") + event(chunk("b"), b"\n") + event(b"[DONE]", b"\n")]
    assert read(model)[0] == "ab"


def test_one_json_value_over_several_data_lines_of_an_event_is_joined(model, upstream):
    text = chunk("joined").decode()
    half = text.index('"delta"')  # the standard joins the lines with LF: split where JSON allows one
    upstream.stream_bytes = [f"data: {text[:half]}\ndata: {text[half:]}\n\n".encode(), DONE]
    assert read(model)[0] == "joined"


# ---- the end of a reply --------------------------------------------------------------------


def test_a_finish_reason_without_done_is_a_complete_reply(model, upstream):
    upstream.stream_bytes = [event(chunk("All")), event(chunk(" said", finish_reason="stop"))]
    text, facts = read(model)
    assert text == "All said" and facts.finish_reason == "stop"


def test_done_without_a_finish_reason_is_a_complete_reply(model, upstream):
    upstream.stream_bytes = [event(chunk("All said")), DONE]
    text, facts = read(model)
    assert text == "All said" and facts.finish_reason is None


def test_a_stream_with_neither_done_nor_a_finish_reason_is_a_failure(model, upstream):
    upstream.stream_bytes = [event(chunk("All")), event(chunk(" sa"))]
    with pytest.raises(UpstreamProtocolError), model.stream(PROMPT) as reply:
        list(reply)


def test_a_stream_cut_in_the_middle_of_a_line_is_a_failure(model, upstream):
    upstream.stream_bytes = [event(chunk("All")), event(chunk(" said"))[:20]]
    with pytest.raises(UpstreamProtocolError), model.stream(PROMPT) as reply:
        list(reply)


def test_a_last_line_without_its_line_end_still_counts(model, upstream):
    upstream.stream_bytes = [event(chunk("All said")), b"data: [DONE]"]
    assert read(model)[0] == "All said"


def test_an_error_object_inside_a_200_stream_is_an_upstream_failure_with_its_message(model, upstream):
    upstream.stream_bytes = [event(chunk("Par")), event({"error": {"message": "CUDA out of memory", "code": 500}})]
    with pytest.raises(UpstreamError) as raised, model.stream(PROMPT) as reply:
        list(reply)
    assert "CUDA out of memory" in raised.value.detail and "CUDA" not in str(raised.value)


def test_a_length_finish_reason_is_reported(model, upstream):
    upstream.stream_bytes = [event(chunk("Cut")), event(chunk(" sh", finish_reason="length")), DONE]
    assert read(model)[1].finish_reason == "length"


# ---- through the whole app: tokens, the done line, storage ---------------------------------


def stream_events(client, session_id="bytes") -> list[dict]:
    response = client.post("/v1/chat/stream", json={"sessionId": session_id, "message": "hi"}, headers=chat_headers())
    assert response.status_code == 200
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


def test_an_emoji_split_into_two_chunks_reaches_the_tokens_the_done_line_and_storage_whole(
    client, upstream, redis_client
):
    upstream.stream_bytes = [event(chunk(raw_content="Smile \\ud83d")), event(chunk(raw_content="\\ude00")), DONE]
    events = stream_events(client)
    assert "".join(e["token"] for e in events if e["type"] == "token") == "Smile \U0001f600"
    assert events[-1]["message"] == "Smile \U0001f600"
    assert stored_thread(redis_client, "bytes")[1][-1]["content"] == "Smile \U0001f600"


def test_a_reply_cut_by_max_tokens_says_so_in_the_done_line_storage_and_stats(client, upstream, redis_client):
    upstream.stream_bytes = [event(chunk("Cut")), event(chunk(" sh", finish_reason="length")), DONE]
    events = stream_events(client, "cut-short")
    assert events[-1] == {
        "type": "done",
        "message": "Cut sh",
        "conversationId": events[0]["conversationId"],
        "finishReason": "length",
    }
    assert stored_thread(redis_client, "cut-short")[1][-1]["finishReason"] == "length"
    stats = client.get("/v1/admin/stats", headers={"X-Admin-Api-Key": "admin-key-0123456789abcdefgh"}).get_json()
    assert stats["lastHour"]["incompleteReplies"] == 1


def test_a_whole_reply_cut_by_max_tokens_says_so_in_the_answer(client, upstream, redis_client):
    upstream.reply, upstream.finish_reason = "Cut short", "length"
    response = client.post("/v1/chat", json={"sessionId": "whole-cut", "message": "hi"}, headers=chat_headers())
    assert response.get_json() == {
        "conversationId": response.get_json()["conversationId"],
        "message": "Cut short",
        "finishReason": "length",
    }
    assert stored_thread(redis_client, "whole-cut")[1][-1]["finishReason"] == "length"


def test_a_complete_reply_carries_no_finish_reason(client, upstream):
    upstream.stream_bytes = [event(chunk("Fine", finish_reason="stop")), DONE]
    assert "finishReason" not in stream_events(client, "fine")[-1]
    assert (
        "finishReason"
        not in client.post("/v1/chat", json={"sessionId": "fine2", "message": "hi"}, headers=chat_headers()).get_json()
    )


def test_skipped_stream_lines_are_counted_in_the_log(client, upstream, caplog):
    upstream.stream_bytes = [event(chunk("a")), event(b"{oops"), event(chunk("b")), DONE]
    with caplog.at_level("WARNING"):
        events = stream_events(client, "skips")
    assert events[-1]["message"] == "ab"
    assert "Skipped 1 model stream lines that were not JSON" in caplog.text
