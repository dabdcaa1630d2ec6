"""Hostile input against a real gunicorn, sent as raw bytes: broken encodings, absurd bodies and
headers, NUL bytes, every method on every route. No answer may be a 5xx, nothing may be
stored, the model is never called and no worker is lost.

Requests that break HTTP itself (oversized or malformed request lines and headers) are refused
by gunicorn's parser before the app sees them; they too are answered with a JSON error (written
by gunicorn.conf.py's hook), like everything that reaches the app.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket

import pytest

from tests.support import ADMIN_KEY, WIDGET_KEY

KEYS = [b"X-Widget-Api-Key: " + WIDGET_KEY.encode(), b"X-Admin-Api-Key: " + ADMIN_KEY.encode()]


@pytest.fixture
def server(module_gunicorn):
    return module_gunicorn


def raw_request(method=b"POST", target=b"/v1/chat", headers=(), body=b"", length=True) -> bytes:
    """A request as bytes, carrying both keys; Content-Length is added unless length=False."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *KEYS, *headers]
    if length and body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def exchange(server, raw: bytes) -> tuple[int | None, str, bytes]:
    """(status, content type, body) of the answer to raw; status None if the server just hung up.

    The client half-closes after sending, so a body cut short ends instead of hanging. The
    server may answer and close before reading everything (a 413): the answer still counts.
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock, method=raw.split(b" ", 1)[0].decode("latin-1"))
        try:
            response.begin()
        except http.client.RemoteDisconnected:
            return None, "", b""
        return response.status, response.getheader("Content-Type", ""), response.read()


def assert_unharmed(server, redis_client, upstream):
    # Admission counters (IP windows, hourly counts) may move; no conversation data may appear.
    assert [key for key in redis_client.keys("*") if "{admission}" not in key] == [], "something was stored"
    assert upstream.requests == [], "the model was called"
    assert server.worker_pids() == server.first_workers, "a worker was lost"


def chunked(body: bytes, piece=65536) -> bytes:
    pieces = [body[i : i + piece] for i in range(0, len(body), piece)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def nested(depth: int) -> bytes:
    return b'{"sessionId": "s", "message": "hi", "x": ' + b"[" * depth + b"]" * depth + b"}"


# Within the 64 kB chat cap (chat_request.MAX_BODY_BYTES), so the parser, not the cap, refuses it.
THREE_THOUSAND_FIELDS = json.dumps({f"field{i}": i for i in range(3_000)}).encode()
CHAT_BODIES = {
    "invalid UTF-8 in the message": (b'{"sessionId": "s", "message": "\xff\xfe hi"}', 400),
    "invalid UTF-8 in the session id": (b'{"sessionId": "\xc3\x28", "message": "hi"}', 400),
    "overlong UTF-8 encoding of /": (b'{"sessionId": "s", "message": "\xc0\xaf"}', 400),
    "escaped lone surrogate": (b'{"sessionId": "s", "message": "\\ud800"}', 400),
    # Chat bodies are capped at 64 kB (chat_request.MAX_BODY_BYTES): these are too large to parse.
    "100 000 nested arrays": (b"[" * 100_000 + b"]" * 100_000, 413),
    "100 000 nested arrays inside a valid request": (nested(100_000), 413),
    "10 000 nested arrays": (b"[" * 10_000 + b"]" * 10_000, 400),
    "3 000 JSON fields and no message": (THREE_THOUSAND_FIELDS, 400),
    "raw NUL inside a JSON string": (b'{"sessionId": "s", "message": "a\x00b"}', 400),
    "escaped NUL in the session id": (b'{"sessionId": "s\\u0000", "message": "hi"}', 400),
    "a body of NUL bytes": (b"\x00" * 4096, 400),
    "truncated JSON": (b'{"sessionId": "s", "mess', 400),
    "a JSON array": (b'["s", "hi"]', 400),
    "a JSON string": (b'"hello"', 400),
    "a body over 2 MB": (b'{"sessionId": "s", "message": "' + b"x" * (2 * 1024 * 1024) + b'"}', 413),
    "a body just over the chat cap of 64 kB": (
        b'{"sessionId": "s", "message": "hi", "pad": "' + b"x" * 65536 + b'"}',
        413,
    ),
}
CONTENT_TYPES = {
    "text/plain": b"hello there",
    "application/xml": b"<chat><sessionId>s</sessionId><message>hi</message></chat>",
    "application/x-www-form-urlencoded": b"&".join(b"f%d=%d" % (i, i) for i in range(3_000)),
    "multipart/form-data; boundary=x": b'--x\r\nContent-Disposition: form-data; name="sessionId"\r\n\r\ns\r\n--x--\r\n',
}
# Broken HTTP: (request bytes, status). None: the server closes without an answer.
BROKEN_HTTP = {
    "a 100 KB header": (raw_request(b"GET", b"/health", [b"X-Big: " + b"a" * 100_000]), 431),
    "200 headers": (raw_request(b"GET", b"/health", [b"X-H%d: 1" % i for i in range(200)]), 431),
    "a 10 KB request target": (raw_request(b"GET", b"/health?" + b"a" * 10_000), 414),
    "NUL in a header value": (raw_request(b"GET", b"/health", [b"X-A: a\x00b"]), 400),
    "control bytes in the key header": (raw_request(headers=[b"X-Api-Key: \x01\x02\x7f" + b"k" * 30]), 400),
    "NUL in the path": (raw_request(b"GET", b"/health\x00.json"), 400),
    "bytes that are not UTF-8 in the request line": (raw_request(b"GET", b"/\xff\xfe"), 400),
    "bytes that are not UTF-8 in the method": (raw_request(b"G\xffT", b"/health"), 400),
    "a negative Content-Length": (raw_request(headers=[b"Content-Length: -1"], body=b"{}", length=False), 400),
    "two Content-Lengths": (
        raw_request(headers=[b"Content-Length: 2", b"Content-Length: 3"], body=b"{}", length=False),
        400,
    ),
    "an HTTP/0.9 request": (b"GET /health\r\n\r\n", 400),
    "a TLS handshake instead of HTTP": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, None),
}
KEY_HEADERS = {
    "bytes that are not UTF-8 in the key": [b"X-Api-Key: \xff\xfe\xfd" + b"k" * 30],
    "an 8 KB bearer token": [b"Authorization: Bearer " + b"k" * 8000],
    "a bearer scheme and no token": [b"Authorization: Bearer"],
}
ROUTES = [
    "/health",
    "/ready",
    "/v1/openapi.json",
    "/widget/chat-widget.js",
    "/v1/chat",
    "/v1/chat/stream",
    "/chat",
    "/v1/admin/conversations",
    "/v1/admin/conversations/0123456789abcdef0123456789abcdef",
    "/no/such/route",
]
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "FOO"]


@pytest.mark.parametrize("path", ["/v1/chat", "/v1/chat/stream"])
@pytest.mark.parametrize("case", CHAT_BODIES)
def test_hostile_chat_body_is_refused_with_a_json_4xx(server, redis_client, upstream, case, path):
    body, expected = CHAT_BODIES[case]
    status, content_type, answer = exchange(server, raw_request(target=path.encode(), body=body))
    assert status == expected, answer[:300]
    assert content_type == "application/json" and "error" in json.loads(answer)
    assert_unharmed(server, redis_client, upstream)


@pytest.mark.parametrize(
    "body, expected",
    [
        (chunked(b'{"sessionId": "s", "message": "' + b"x" * (3 * 1024 * 1024) + b'"}'), 413),
        (chunked(b'{"sessionId": "s", "message": "hi", "pad": "' + b"x" * 70000 + b'"}'), 413),
        (b"zz\r\n{}\r\n0\r\n\r\n", 400),  # a chunk size that is not hex
        (b"2\r\n{}", 400),  # ends before the last chunk
    ],
    ids=[
        "chunked body over 2 MB",
        "chunked body over the 64 kB chat cap",
        "malformed chunk size",
        "missing last chunk",
    ],
)
def test_chunked_body_that_is_too_big_or_broken_is_a_json_4xx(server, redis_client, upstream, body, expected):
    raw = raw_request(headers=[b"Transfer-Encoding: chunked"], body=body, length=False)
    status, content_type, answer = exchange(server, raw)
    assert status == expected, answer[:300]
    assert content_type == "application/json"
    assert_unharmed(server, redis_client, upstream)


@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_non_json_content_types_are_a_json_400(server, redis_client, upstream, content_type):
    raw = raw_request(headers=[b"Content-Type: " + content_type.encode()], body=CONTENT_TYPES[content_type])
    status, answer_type, answer = exchange(server, raw)
    assert status == 400 and answer_type == "application/json"
    assert json.loads(answer)["details"] == {"body": "must be a JSON object"}
    assert_unharmed(server, redis_client, upstream)


@pytest.mark.parametrize("case", BROKEN_HTTP)
def test_broken_http_is_refused_with_a_json_error_before_the_app(server, redis_client, upstream, case):
    raw, expected = BROKEN_HTTP[case]
    status, content_type, answer = exchange(server, raw)
    assert status == expected, answer[:300]
    if status is not None:
        assert content_type == "application/json"
        assert set(json.loads(answer)) == {"error"}
        assert b"\x00" not in answer and b"aaaa" not in answer  # nothing of the request is echoed
    assert_unharmed(server, redis_client, upstream)


@pytest.mark.parametrize("case", KEY_HEADERS)
def test_hostile_key_headers_are_a_json_401(server, redis_client, upstream, case):
    raw = b"\r\n".join(
        [
            b"POST /v1/chat HTTP/1.1",
            b"Host: 127.0.0.1",
            b"Connection: close",
            *KEY_HEADERS[case],
            b"Content-Length: 36",
            b"",
            b'{"sessionId": "s", "message": "hi"}',
        ]
    )
    status, content_type, answer = exchange(server, raw)
    assert (status, json.loads(answer)) == (401, {"error": "Unauthorized"})
    assert_unharmed(server, redis_client, upstream)


@pytest.mark.parametrize("path", ROUTES)
def test_every_method_on_every_route_answers_below_500_and_errors_in_json(server, redis_client, upstream, path):
    for method in METHODS:
        status, content_type, answer = exchange(server, raw_request(method.encode(), path.encode()))
        assert status is not None and status < 500, f"{method} {path}: {status} {answer[:200]!r}"
        if status >= 400 and method != "HEAD":
            assert content_type == "application/json" and "error" in json.loads(answer), f"{method} {path}"
    assert_unharmed(server, redis_client, upstream)
