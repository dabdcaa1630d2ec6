"""Request ids, and one log line per request: method, route, status, duration and request id.

The line is written when the server closes the response, after the last byte of a stream was
sent (or the client left), so the duration is that of the whole response, not of its first
byte. The route is the matched URL rule (`/v1/admin/conversations/<conversation_id>`), so ids,
query strings and keys pasted into a URL stay out of the log; a request that matches no route
logs `-`.
"""

from __future__ import annotations

import re
import time
import uuid

from flask import Flask, current_app, g, request

# An incoming X-Request-Id (Heroku's router sets one) is kept only if it is this plain.
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _start() -> None:
    incoming = request.headers.get("X-Request-Id", "")
    g.request_id = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _finish(response):
    response.headers["X-Request-Id"] = g.request_id
    fields = {
        "requestId": g.request_id,
        "method": request.method,
        "route": request.url_rule.rule if request.url_rule else "-",
        "status": response.status_code,
    }
    # Plain values only: the callback runs after the request context is gone.
    logger, started = current_app.logger, g.request_started

    def log() -> None:
        fields["durationMs"] = round((time.perf_counter() - started) * 1000, 1)
        logger.info(
            "%s %s %s %.1fms request_id=%s",
            fields["method"],
            fields["route"],
            fields["status"],
            fields["durationMs"],
            fields["requestId"],
            extra={"fields": fields},
        )

    response.call_on_close(log)
    return response


def init_app(app: Flask) -> None:
    """Register first, so every other hook (the origin check included) runs with an id."""
    app.before_request(_start)
    app.after_request(_finish)
