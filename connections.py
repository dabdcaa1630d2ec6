"""What one client may hold of a worker: a deadline on the silence while its request body
arrives, and a bound on how many requests one client has open at once; and whether a client
is still connected.

gevent workers give a request body no time limit: about 2,000 connections that each sent a chat
request's headers and one byte of its body held every connection of two workers, and /health
stopped answering. gunicorn bounds the headers (`keepalive`, 5 s); this bounds the rest.
"""

from __future__ import annotations

import select
import socket
from collections import Counter

from flask import Flask, current_app, g, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

import auth
import errors
import services
from errors import json_error
from greenlets import let_others_run

# Requests a client can open without holding anything that matters (monitoring).
EXEMPT_PATHS = ("/health", "/ready")
EXTENSION = "ocw.connections"
BODY_PIECE_BYTES = 64 * 1024


class OpenRequests:
    """How many requests each client (auth.client_identity) has open in this worker process.

    One per process: gevent runs a worker's requests as greenlets of one thread, so the counts
    need no lock.
    """

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def open(self, client: str, limit: int) -> bool:
        """Count a new request of client; False (and nothing counted) if it already has limit."""
        if self._open[client] >= limit:
            return False
        self._open[client] += 1
        return True

    def close(self, client: str) -> None:
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]


def _admit_connection():
    """Before anything else reads the request: bound its client's open requests, then give the
    body a deadline on silence. Both need the connection, gunicorn's socket: without one (a WSGI
    test client) there is nothing to hold or to time out."""
    settings = services.current().settings
    sock = request.environ.get("gunicorn.socket")
    if sock is None:
        return None
    if settings.client_max_open_requests and request.path not in EXEMPT_PATHS:
        client = auth.client_ip()
        if not current_app.extensions[EXTENSION].open(client, settings.client_max_open_requests):
            current_app.logger.warning(
                "429 %s: %d requests already open from %s", request.method, settings.client_max_open_requests, client
            )
            return json_error(429, "Too many open requests from this client", headers={"Retry-After": "1"})
        g.open_request_client = client
    if request.content_length or request.headers.get("Transfer-Encoding"):
        g.body_socket_timeout = sock.gettimeout()
        sock.settimeout(settings.request_body_timeout_seconds)
    return None


def _release_connection(response):
    """Give the socket back its own timeout before the response is written (a stream's writes
    must not inherit the body's deadline), and un-count the request when it is closed."""
    if "body_socket_timeout" in g:
        request.environ["gunicorn.socket"].settimeout(g.pop("body_socket_timeout"))
    client = g.pop("open_request_client", None)
    if client is not None:
        open_requests = current_app.extensions[EXTENSION]
        response.call_on_close(lambda: open_requests.close(client))
    return response


def _body_stopped(exc: ClientDisconnected):
    """A body that did not arrive whole: 408 when its next bytes did not come within
    REQUEST_BODY_TIMEOUT_SECONDS, else 400 (the client left).

    werkzeug turns every error of the body's stream into ClientDisconnected; the socket's timeout
    is the one it was raised from. A request's only blocking socket read is its body (Redis and
    the model client raise errors of their own). The read side is shut so that gunicorn closes
    the connection after this answer instead of reading the rest of the body as a next request.
    """
    if not isinstance(exc.__context__, TimeoutError):
        return json_error(400, errors.MESSAGES[400])
    sock = request.environ.get("gunicorn.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass
    current_app.logger.warning(
        "408 %s %s from %s: request body not received in time", request.method, request.path, auth.client_ip()
    )
    return json_error(408, "Request body not received in time")


def peer_closed(client: socket.socket | None) -> bool:
    """True if the other end of a connection has closed it (its FIN or RST is waiting to be read).

    Never blocks: a zero-timeout select, then a peek only at a socket that has something to read
    (a client that is still there sends nothing while its response streams).
    """
    if client is None:
        return False
    try:
        readable, _, _ = select.select([client], [], [], 0)
        return bool(readable) and client.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # reset, or already closed
        return True


def read_body(max_bytes: int) -> bytes:
    """The request body, read BODY_PIECE_BYTES at a time with a switch to the worker's other
    requests in between: gunicorn's body reader is Python, and megabytes read in one call keep
    them waiting for tens of milliseconds. Raises RequestEntityTooLarge past max_bytes."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise RequestEntityTooLarge()
    pieces, total = [], 0
    while piece := request.stream.read(BODY_PIECE_BYTES):
        total += len(piece)
        if total > max_bytes:
            raise RequestEntityTooLarge()
        pieces.append(piece)
        let_others_run()
    return b"".join(pieces)


def init_app(app: Flask) -> None:
    """Register after requestlog (so refusals are logged with an id) and before the blueprints."""
    app.extensions[EXTENSION] = OpenRequests()
    app.before_request(_admit_connection)
    app.after_request(_release_connection)
    app.register_error_handler(ClientDisconnected, _body_stopped)
