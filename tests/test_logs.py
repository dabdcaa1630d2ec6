"""Request ids and the request log: one line per request, JSON when asked, never a key or message."""

from __future__ import annotations

import json
import logging
import re
import socket
from urllib.parse import quote

import pytest
import requests

from tests.support import ADMIN_KEY, WIDGET_KEY, admin_headers, chat_headers, wait_until

# The line is written when the response is closed: buffered=True makes the test client read the
# whole answer and close it, as a WSGI server does.


@pytest.fixture
def request_lines(caplog):
    """The structured fields of every request line logged so far."""
    caplog.set_level(logging.INFO)
    return lambda: [r.fields for r in caplog.records if hasattr(r, "fields")]


def test_every_request_gets_an_id_in_its_answer_and_one_log_line(client, request_lines):
    response = client.get("/health", buffered=True)
    request_id = response.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)  # a new uuid4, hex
    (line,) = request_lines()
    assert line["requestId"] == request_id
    assert (line["method"], line["route"], line["status"]) == ("GET", "/health", 200)
    assert line["durationMs"] >= 0


@pytest.mark.parametrize(
    "incoming, kept",
    [
        ("abc-123", True),
        ("3f1c2a9d-8e7b-4c6a-9f0e-1d2c3b4a5968", True),
        ("a.b_c-D", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("has space", False),
        ("semi;colon", False),
        ("", False),
    ],
)
def test_a_plain_incoming_request_id_is_honoured_and_anything_else_replaced(client, request_lines, incoming, kept):
    response = client.get("/health", headers={"X-Request-Id": incoming}, buffered=True)
    assert (response.headers["X-Request-Id"] == incoming) is kept
    assert request_lines()[-1]["requestId"] == response.headers["X-Request-Id"]


def test_errors_and_refusals_get_an_id_and_a_line_too(client, request_lines):
    responses = [
        client.get("/nope", buffered=True),
        client.post("/v1/chat", json={"sessionId": "s", "message": "hi"}, buffered=True),
        client.post("/v1/chat", json={}, headers=chat_headers(Origin="https://evil.example"), buffered=True),
    ]
    assert [r.status_code for r in responses] == [404, 401, 403]
    lines = request_lines()
    assert [line["requestId"] for line in lines] == [r.headers["X-Request-Id"] for r in responses]
    assert [(line["route"], line["status"]) for line in lines] == [("-", 404), ("/v1/chat", 401), ("/v1/chat", 403)]


def test_the_route_is_logged_as_its_template_without_ids(client, request_lines):
    conversation_id = client.post(
        "/v1/chat", json={"sessionId": "s", "message": "hi"}, headers=chat_headers()
    ).get_json()["conversationId"]
    client.get(f"/v1/admin/conversations/{conversation_id}", headers=admin_headers(), buffered=True)
    assert request_lines()[-1]["route"] == "/v1/admin/conversations/<conversation_id>"
    assert conversation_id not in json.dumps(request_lines()[-1])


def test_a_streams_line_is_written_when_it_ends_and_times_the_whole_stream(client, upstream, request_lines):
    upstream.reply = "one two three four five"
    upstream.token_delay = 0.1
    response = client.post(
        "/v1/chat/stream", json={"sessionId": "s", "message": "hi"}, headers=chat_headers(), buffered=False
    )
    next(iter(response.response))  # the start line: the response has begun
    assert request_lines() == []
    b"".join(response.response)
    response.close()
    (line,) = request_lines()
    assert line["route"] == "/v1/chat/stream" and line["durationMs"] >= 450


def test_logs_never_carry_keys_or_message_content(client, caplog, upstream):
    caplog.set_level(logging.DEBUG)
    upstream.reply = "the model's confidential answer"
    client.post("/v1/chat", json={"sessionId": "s", "message": "my secret question"}, headers=chat_headers())
    client.post("/v1/chat?key=" + WIDGET_KEY, json={"sessionId": "s", "message": "my secret question"})
    client.get("/v1/admin/conversations", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    client.get("/v1/admin/conversations", headers={"X-Admin-Api-Key": ADMIN_KEY + "-wrong"})
    text = caplog.text
    for secret in (WIDGET_KEY, ADMIN_KEY, "my secret question", "confidential"):
        assert secret not in text


def test_json_lines_under_gunicorn_one_per_request_and_no_access_log(start_gunicorn, upstream):
    server = start_gunicorn(LOG_FORMAT="json", WEB_CONCURRENCY="2")
    sent = requests.post(
        server.url + "/v1/chat",
        json={"sessionId": "s", "message": "my secret question"},
        headers={"X-Api-Key": WIDGET_KEY, "X-Request-Id": "trace-42"},
        timeout=30,
    )
    assert sent.headers["X-Request-Id"] == "trace-42"

    def logged():
        lines = [json.loads(line) for line in server.output().splitlines() if line.strip()]
        return [line for line in lines if line.get("requestId") == "trace-42"]

    assert wait_until(logged, timeout=10)
    (line,) = logged()
    assert (line["method"], line["route"], line["status"], line["level"]) == ("POST", "/v1/chat", 200, "INFO")
    output = server.output()
    assert "Booting worker" in output  # gunicorn's own lines are JSON too (every line parsed above)
    assert "my secret question" not in output and WIDGET_KEY not in output


# ---- lines that cannot be forged ------------------------------------------------------------

FORGED = "[2026-11-30 10:00:00,000] INFO app: admin signed in from 203.0.113.9"  # no '/': one path segment


def raw_request(server, request_bytes: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request_bytes)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_client_controlled_value_cannot_write_a_second_log_line(start_gunicorn, log_format):
    server = start_gunicorn(LOG_FORMAT=log_format, WEB_CONCURRENCY="1")
    for breaker in ("%0a", "%0d", "%0d%0a", "%e2%80%a8", "%c2%85"):
        path = f"/v1/admin/conversations/x{breaker}{quote(FORGED, safe='')}"
        answer = requests.get(server.url + path, headers={"X-Admin-Api-Key": "wrong-admin-key-0123456789"}, timeout=10)
        assert answer.status_code == 401
    assert wait_until(lambda: server.output().count("401 GET") == 5, timeout=5), server.output()
    lines = server.output().splitlines()
    assert not [line for line in lines if line.startswith("[2026-11-30 10:00:00")], "a forged line reached the log"
    if log_format == "json":
        assert all(json.loads(line) for line in lines if line.startswith("{"))


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_refused_request_line_is_logged_without_its_query_string(start_gunicorn, log_format):
    server = start_gunicorn(LOG_FORMAT=log_format, WEB_CONCURRENCY="1")
    secret = "pasted-widget-key-0123456789abcdef"
    for request_line in (
        f"GET /v1/chat?key={secret} HTTP/1.1 trailing-junk",
        f"GET /v1/chat?key={secret}\x01 HTTP/1.1",
        f"G\x00ET /x?api_key={secret} HTTP/1.1",
    ):
        answer = raw_request(server, request_line.encode("latin-1") + b"\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400")
    assert requests.get(server.url + "/health", timeout=5).status_code == 200
    assert wait_until(lambda: "GET /health 200" in server.output(), timeout=5)  # the worker's later line
    assert secret not in server.output()
