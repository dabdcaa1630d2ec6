"""Slow and heavy clients cannot take a worker's connections: a deadline on the silence while a
body arrives (a JSON 408), and a bound on the requests one client has open at once (a JSON 429),
through the real gunicorn and raw sockets."""

from __future__ import annotations

import json
import socket

import requests

from tests.support import WIDGET_KEY


def start_body(server, declared_length: int = 200) -> socket.socket:
    """A chat request's headers and one byte of its body, then silence."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(
        b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Widget-Api-Key: "
        + WIDGET_KEY.encode()
        + b"\r\nContent-Length: "
        + str(declared_length).encode()
        + b"\r\n\r\n{"
    )
    return sock


def answer_of(sock: socket.socket) -> tuple[int, dict]:
    received = b""
    while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_body_that_stops_arriving_gets_a_json_408_and_frees_its_connection(start_gunicorn, upstream):
    server = start_gunicorn(WEB_CONCURRENCY="1", REQUEST_BODY_TIMEOUT_SECONDS="1")
    sock = start_body(server)
    status, body = answer_of(sock)
    assert (status, body) == (408, {"error": "Request body not received in time"})
    assert sock.recv(1) == b""  # the server closed the connection
    sock.close()
    assert upstream.requests == []
    assert "408 POST /v1/chat" in server.output()


def test_one_client_cannot_hold_more_than_its_share_of_connections_and_health_keeps_answering(start_gunicorn, upstream):
    server = start_gunicorn(WEB_CONCURRENCY="1", CLIENT_MAX_OPEN_REQUESTS="5", REQUEST_BODY_TIMEOUT_SECONDS="30")
    held = [start_body(server) for _ in range(5)]
    refused = [start_body(server) for _ in range(3)]
    for sock in refused:
        assert answer_of(sock) == (429, {"error": "Too many open requests from this client"})
        sock.close()
    assert requests.get(server.url + "/health", timeout=5).status_code == 200
    for sock in held:  # the held ones finish their bodies and are answered normally
        sock.sendall(b'"sessionId": "s", "message": "hi"}'.ljust(199))
    for sock in held:
        status, body = answer_of(sock)
        assert status == 200 and body["message"] == "Hello from the fake model."
        sock.close()
    # Closed requests free their places.
    again = requests.post(
        server.url + "/v1/chat",
        json={"sessionId": "s", "message": "hi"},
        headers={"X-Widget-Api-Key": WIDGET_KEY},
        timeout=10,
    )
    assert again.status_code == 200
