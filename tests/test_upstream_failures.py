"""Failed model calls are mapped on purpose and diagnosable: the visitor reads a short human
message, the operator's log names the cause with the upstream's status and message (trimmed, on
one line, never a key)."""

from __future__ import annotations

import json
import time
from email.utils import formatdate

import pytest

from tests.support import chat_headers

UPSTREAM_KEY = "sk-test-upstream-key"  # conftest.deployment_env's OPENAI_API_KEY

# upstream status, its error body, /v1/chat's status, what the visitor reads, what the log says
# (the cause, then the upstream's own words)
CASES = {
    "our key refused": (
        401,
        {"error": {"message": f"Incorrect API key provided: {UPSTREAM_KEY}"}},
        502,
        "The assistant is not available right now.",
        ["refused this service's key (OPENAI_API_KEY)", "Incorrect API key provided: [OPENAI_API_KEY]"],
    ),
    "forbidden": (
        403,
        {"error": {"message": "Project lacks access"}},
        502,
        "The assistant is not available right now.",
        ["refused this service's key", "Project lacks access"],
    ),
    "model unknown (404)": (
        404,
        {"error": {"message": "The model `gpt-9` does not exist"}},
        502,
        "The assistant is not available right now.",
        ["does not know OPENAI_MODEL='gpt-4.1-mini'", "The model `gpt-9` does not exist"],
    ),
    "model unknown (400, vLLM)": (
        400,
        {"object": "error", "message": "The model `x` does not exist."},
        502,
        "The assistant is not available right now.",
        ["does not know OPENAI_MODEL", "The model `x` does not exist."],
    ),
    "request refused": (
        400,
        {"error": {"message": "messages: roles must alternate"}},
        502,
        "The assistant is not available right now.",
        ["refused the request", "messages: roles must alternate"],
    ),
    "rate limited": (
        429,
        {"error": {"message": "Rate limit reached for requests"}},
        503,
        "The assistant is busy. Please try again in a moment.",
        ["is rate limiting this service", "Rate limit reached for requests"],
    ),
    "server error": (
        500,
        {"detail": "Internal error in the engine"},
        502,
        "The model failed to answer. Please try again.",
        ["the model server failed", "Internal error in the engine"],
    ),
    "bad gateway (HTML)": (
        502,
        "<html><body>\r\n<h1>502 Bad Gateway</h1>\r\n</body></html>",
        502,
        "The model failed to answer. Please try again.",
        ["the model server failed", "<h1>502 Bad Gateway</h1>"],
    ),
}


def fail_with(upstream, status, body, retry_after=None):
    upstream.fault, upstream.status, upstream.retry_after = "status", status, retry_after
    upstream.error_body = body.encode() if isinstance(body, str) else json.dumps(body).encode()


@pytest.mark.parametrize("case", CASES)
def test_each_upstream_failure_is_answered_and_logged_as_its_kind(client, upstream, caplog, case):
    status, body, answered, visitor_reads, log_says = CASES[case]
    fail_with(upstream, status, body)
    with caplog.at_level("WARNING"):
        response = client.post("/v1/chat", json={"sessionId": "f", "message": "hi"}, headers=chat_headers())
    assert response.status_code == answered and response.get_json() == {"error": visitor_reads}
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Model call failed")]
    assert len(logged) == 1 and f"HTTP {status}" in logged[0], logged
    assert all(words in logged[0] for words in log_says), logged[0]
    assert UPSTREAM_KEY not in caplog.text and "\n" not in logged[0] and "\r" not in logged[0]


@pytest.mark.parametrize("retry_after, expected", [("7", "7"), ("in 30 s, as an HTTP date", None)])
def test_an_upstream_rate_limit_passes_its_retry_after_on(client, upstream, retry_after, expected):
    if not expected:
        retry_after = formatdate(time.time() + 30, usegmt=True)
    fail_with(upstream, 429, {"error": {"message": "slow down"}}, retry_after)
    response = client.post("/v1/chat", json={"sessionId": "f", "message": "hi"}, headers=chat_headers())
    assert response.status_code == 503
    if expected:
        assert response.headers["Retry-After"] == expected
    else:  # an HTTP date becomes the seconds until it
        assert 28 <= int(response.headers["Retry-After"]) <= 31


def test_a_streamed_turn_whose_upstream_fails_ends_with_the_visitors_message_and_logs_the_cause(
    client, upstream, caplog
):
    fail_with(upstream, 404, {"error": {"message": "no such model"}})
    with caplog.at_level("WARNING"):
        response = client.post("/v1/chat/stream", json={"sessionId": "f", "message": "hi"}, headers=chat_headers())
    lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert lines[-1] == {"type": "error", "error": "The assistant is not available right now."}
    assert "does not know OPENAI_MODEL" in caplog.text and "no such model" in caplog.text


def test_a_long_upstream_message_is_trimmed_in_the_log(client, upstream, caplog):
    fail_with(upstream, 500, {"error": {"message": "x" * 5000}})
    with caplog.at_level("WARNING"):
        client.post("/v1/chat", json={"sessionId": "f", "message": "hi"}, headers=chat_headers())
    assert "x" * 300 in caplog.text and "x" * 301 not in caplog.text


def test_an_upstream_that_stops_answering_is_a_504_and_logged(client, upstream, caplog, make_app):
    client = make_app(LLM_TIMEOUT_SECONDS="0.3").test_client()
    upstream.fault = "hang"
    with caplog.at_level("WARNING"):
        response = client.post("/v1/chat", json={"sessionId": "f", "message": "hi"}, headers=chat_headers())
    assert response.status_code == 504 and response.get_json() == {"error": "The model stopped answering"}
    assert "silent too long" in caplog.text
