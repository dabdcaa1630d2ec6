"""What can go wrong with the model upstream, each with the message the client sees and the
detail the operator's log gets."""

from __future__ import annotations


class UpstreamError(Exception):
    """The model upstream failed.

    str(exc) is a short message safe to show to visitors; `detail` names the cause for the
    operator's log (the upstream's status and message, trimmed, never a key); `status_code` is
    the HTTP status `/v1/chat` answers with.
    """

    status_code = 502
    retry_after: int | None = None  # seconds, from the upstream's Retry-After

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail or message


class UpstreamTimeout(UpstreamError):
    status_code = 504


class UpstreamStatusError(UpstreamError):
    """The upstream answered with a status other than 200, mapped on purpose:

    401/403 (our key refused), 404 and a 400 that names the model (model unknown), another 400
    (request refused), 429 (rate limited: 503 with the upstream's Retry-After), 5xx and the rest
    (server error). Visitors see a short message; `detail` names the cause.
    """

    def __init__(self, status: int, upstream_message: str, model: str, retry_after: int | None = None):
        reason = f"HTTP {status}: {upstream_message}" if upstream_message else f"HTTP {status}"
        if status in (401, 403):
            message, cause = UNAVAILABLE_MESSAGE, "the model server refused this service's key (OPENAI_API_KEY)"
        elif status == 404 or (status == 400 and "model" in upstream_message.lower()):
            message, cause = UNAVAILABLE_MESSAGE, f"the model server does not know OPENAI_MODEL={model!r}"
        elif status == 429:
            message = "The assistant is busy. Please try again in a moment."
            cause = "the model server is rate limiting this service"
            self.status_code, self.retry_after = 503, retry_after
        elif 400 <= status < 500:
            message, cause = UNAVAILABLE_MESSAGE, "the model server refused the request"
        else:
            message, cause = "The model failed to answer. Please try again.", "the model server failed"
        super().__init__(message, f"{cause} ({reason})")
        self.upstream_status = status


UNAVAILABLE_MESSAGE = "The assistant is not available right now."


class UpstreamProtocolError(UpstreamError):
    """The upstream answered with something that is not the chat-completions protocol."""
