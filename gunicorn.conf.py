"""gunicorn settings, read automatically by `gunicorn wsgi:app` (the Procfile's command).

gevent workers hold many streams each: a stream spends nearly all its time waiting on the
model, and a sync worker would be tied up by a single one.
"""
import json
import os
import sys

from gunicorn import util
from gunicorn.glogging import Logger

import logs
from config import ConfigError, load_settings

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))
# gevent workers keep answering the master's heartbeat while streams run, so this only catches
# a stuck worker; it does not cut long streams.
timeout = 30
graceful_timeout = 25  # Heroku sends SIGKILL 30 s after SIGTERM
keepalive = 5
# No access log: the app writes one line per request itself (requestlog.py), with the request
# id and the route template, and its duration covers the whole of a stream.
accesslog = None


def write_json_error(sock, status: int, reason: str, message: str) -> None:
    """gunicorn's answer to a request its parser refuses (a malformed or oversized request line
    or header: the app never sees it), as JSON like every other error of the service.

    gunicorn would send an HTML page. `message` can quote the client's bytes, so only the
    status and its fixed reason phrase are sent.
    """
    body = json.dumps({"error": reason}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn has no setting for this page; its workers write it with this one function.
util.write_error = write_json_error


class JsonLogger(Logger):
    """gunicorn's own lines (start, workers, errors) as JSON too, when LOG_FORMAT=json."""

    def setup(self, cfg):
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(logs.JsonFormatter())


if os.environ.get("LOG_FORMAT", "").strip().lower() == "json":
    logger_class = JsonLogger


def on_starting(server):
    """Validate the configuration once, and start the embedded Redis that workers will share."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    if settings.redis_url is None:
        import embedded_redis

        embedded_redis.ensure_running(settings.data_dir)
