"""Log lines as text or JSON (LOG_FORMAT), for the service's logger and for gunicorn's own.

No Flask here: gunicorn.conf.py imports this module in the master process, which must not
import ssl (Flask does) before the gevent workers patch it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"
# Characters that could end a log line or fake another one: C0 and C1 controls, DEL, and the
# Unicode line and paragraph separators.
_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# A query string inside a request line or URL that gunicorn quotes in its own messages
# ("Invalid request from ip=...: Invalid HTTP request line: 'GET /x?key=... HTTP/1.1'").
_QUERY = re.compile(r"\?[^\s'\"]*")


def escaped(text: str) -> str:
    """text on one line: every character that could break it written as a Python escape."""
    return _LINE_BREAKING.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT lines whose message is escaped: a client-controlled value (a path with %0a in
    it, say) can never write a second, forged line. Tracebacks keep their own lines."""

    def __init__(self, fmt: str = TEXT_FORMAT, datefmt: str | None = None):
        super().__init__(fmt, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escaped(record.message)
        return super().formatMessage(record)


class WithoutQueryStrings(logging.Filter):
    """Drops query strings from gunicorn's own messages, which quote a refused request line
    whole: a key pasted into a URL must not reach the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = _QUERY.sub("?[query removed]", message), ()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger and message, plus the record's `fields`
    (structured values such as those of the request line) and any exception; nothing in it can
    break the line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # json.dumps escapes C0 controls only; DEL, C1 controls and U+2028/U+2029 break lines for
        # some readers too.
        return _LINE_BREAKING.sub(lambda match: f"\\u{ord(match.group()):04x}", json.dumps(entry, ensure_ascii=False))


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(logger: logging.Logger, log_format: str) -> None:
    """Write logger's records of level INFO and above to stderr, one line each, in log_format.

    Replaces the handlers rather than adding one, since the app factory may run more than once
    in a process (tests) and Flask names every app's logger after the module.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
