"""gunicorn settings, read automatically by `gunicorn wsgi:app` (the Procfile's command).

gevent workers hold many streams each: a stream spends nearly all its time waiting on the
model, and a sync worker would be tied up by a single one.
"""

import json
import math
import os
import signal
import sys

from gunicorn import util
from gunicorn.glogging import Logger

import drain
import logs
from config import ConfigError, load_settings

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))
# gevent workers keep answering the master's heartbeat while streams run, so this only catches
# a stuck worker; it does not cut long streams.
timeout = 30
# After SIGTERM, streams get SHUTDOWN_DRAIN_SECONDS (default 20) to finish, then end themselves
# cleanly (drain.py); gunicorn waits that long plus this margin before it kills a worker.
# Heroku sends SIGKILL 30 s after SIGTERM: 20 + 5 stays inside it. Set from on_starting.
DRAIN_MARGIN_SECONDS = 5
keepalive = 5
# gunicorn's control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl), so
# every instance a user runs would share it, and starting or stopping one removes another's.
# Nothing here uses it.
control_socket_disable = True
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


class ServiceLogger(Logger):
    """gunicorn's own lines (start, workers, refused requests) in the service's LOG_FORMAT, on
    one line each, and without the query strings of the request lines it quotes."""

    def setup(self, cfg):
        super().setup(cfg)
        json_lines = os.environ.get("LOG_FORMAT", "").strip().lower() == "json"
        for handler in self.error_log.handlers:
            own = handler.formatter  # gunicorn's line format, with the worker's pid
            handler.setFormatter(logs.JsonFormatter() if json_lines else logs.TextFormatter(own._fmt, own.datefmt))
            handler.addFilter(logs.WithoutQueryStrings())


logger_class = ServiceLogger


def on_starting(server):
    """Validate the configuration once, set the shutdown timing from it, and start the embedded
    Redis that workers will share."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    server.cfg.set("graceful_timeout", math.ceil(settings.shutdown_drain_seconds) + DRAIN_MARGIN_SECONDS)
    if settings.redis_url is None:
        import embedded_redis

        try:
            embedded_redis.ensure_running(settings.data_dir, settings.env)
        except embedded_redis.SharedDataDir as exc:
            print(exc, file=sys.stderr)
            sys.exit(1)


def post_worker_init(worker):
    """On SIGTERM, start the drain as well as gunicorn's own graceful stop, and keep no
    connection alive past the response in flight.

    gunicorn's handler only stops the worker from accepting; streams in flight would run until
    gunicorn kills the worker mid-body. The drain ends them cleanly before then. A client's next
    request (the widget's retry after a restart) must then reach a worker that stays: gunicorn
    closes a kept-alive connection only after a request that began once the worker was stopping,
    so a stream that began before would leave its connection to the stopping worker open.
    """
    # Imported here, in the worker once gevent has patched it: services brings redis-py and
    # requests, which import ssl, and the master must not (see logs.py).
    import services

    seconds = services.of(worker.wsgi).settings.shutdown_drain_seconds
    stop_accepting = worker.handle_exit

    def on_sigterm(signum, frame):
        stop_accepting(signum, frame)
        drain.current.begin(seconds)

    signal.signal(signal.SIGTERM, on_sigterm)
    handle_request = worker.handle_request

    def handle_request_then_close_if_stopping(*args):
        handled = handle_request(*args)
        if not worker.alive:
            raise StopIteration("the worker is stopping")  # gunicorn's way to close the connection
        return handled

    worker.handle_request = handle_request_then_close_if_stopping
