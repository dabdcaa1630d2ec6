"""What a valid chat request body is."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

MAX_MESSAGE_CHARS = 4000
# The largest body a valid turn needs, with room to spare: 4000 characters written as JSON
# escapes (\uXXXX, 6 bytes each: 24 kB), a session id, and fields the service ignores.
MAX_BODY_BYTES = 64 * 1024
# What JavaScript's String.prototype.trim() removes, which is also what `\s` means in the OpenAPI
# document's patterns: the service, the original backend and the document then agree on what
# "only whitespace" is (Python's own strip() also removes \x1c-\x1f and \x85).
JS_WHITESPACE = "\t\n\v\f\r \xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000\ufeff"
SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SESSION_ID_RULE = "must be 1-128 characters of A-Z a-z 0-9 . _ : -"


@dataclass(frozen=True)
class ChatTurn:
    session_id: str
    message: str  # trimmed
    # Sent again after a failed reply: not stored twice if it is still the unanswered last message.
    retry: bool = False


class InvalidBody(Exception):
    """The body broke a rule; details name each bad field."""

    def __init__(self, details: dict):
        super().__init__(details)
        self.details = details


def parse(raw: bytes) -> ChatTurn:
    """The turn described by a JSON body, or InvalidBody naming what is wrong.

    The body is parsed whatever the Content-Type says, so clients that omit or mislabel it
    still work; fields other than sessionId, message and retry are ignored.
    """
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # invalid JSON or UTF-8, or absurd nesting
        body = None
    if not isinstance(body, dict):
        raise InvalidBody({"body": "must be a JSON object"})
    details = {}
    session_id, message, retry = body.get("sessionId"), body.get("message"), body.get("retry", False)
    if not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
        details["sessionId"] = SESSION_ID_RULE
    if not isinstance(message, str) or not message.strip(JS_WHITESPACE) or len(message) > MAX_MESSAGE_CHARS:
        details["message"] = f"must be a string of 1-{MAX_MESSAGE_CHARS} characters, not only whitespace"
    elif not is_unicode_text(message):
        details["message"] = "must be valid Unicode text (no lone surrogates)"
    if not isinstance(retry, bool):
        details["retry"] = "must be true or false"
    if details:
        raise InvalidBody(details)
    return ChatTurn(session_id, message.strip(JS_WHITESPACE), retry)


def is_unicode_text(text: str) -> bool:
    """False for strings JSON can carry but UTF-8 cannot (lone surrogates like "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
