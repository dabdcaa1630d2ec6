"""Log lines as text or JSON (LOG_FORMAT), for the service's logger and for gunicorn's own.

No Flask here: gunicorn.conf.py imports this module in the master process, which must not
import ssl (Flask does) before the gevent workers patch it.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

TEXT_FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger and message, plus the record's `fields`
    (structured values such as those of the request line) and any exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(logger: logging.Logger, log_format: str) -> None:
    """Write logger's records of level INFO and above to stderr, one line each, in log_format.

    Replaces the handlers rather than adding one, since the app factory may run more than once
    in a process (tests) and Flask names every app's logger after the module.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
