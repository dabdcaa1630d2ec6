"""The model: an OpenAI-compatible chat-completions client (requests and urllib3), and the offline
demo responder used in development when no OPENAI_API_KEY is set.

Both offer `complete(messages) -> Completion` and `stream(messages) -> ReplyStream`. A
ReplyStream is iterated for text deltas and must be closed (it is a context manager); closing it
releases the upstream connection at once, which stops generation the client no longer waits for.
Both report the output tokens the upstream counted, when it says (`usage`), else None, and the
model's finish reason when it gives one.
"""
from __future__ import annotations

import codecs
import contextlib
import email.utils
import json
import logging
import math
import queue
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import requests
import requests.adapters
import urllib3

from drain import Drain, ServiceStopping

CONNECT_TIMEOUT_SECONDS = 10
# A connection refused or reset while connecting (an upstream whose accept queue is full during
# a burst) never carried a byte of the request, so it is tried again after these pauses, all
# well within the connect timeout.
CONNECT_RETRY_PAUSES_SECONDS = (0.05, 0.1, 0.2, 0.4, 0.8)
MAX_BATCH = 256  # deltas handed over at once, so one write stays small
UPSTREAM_MESSAGE_CHARS = 300  # of an upstream's error message, in the log
_END = object()  # marks the end of a reply on the reader's queue
_WAKE = object()  # put on the reader's queue when draining begins: the consumer re-checks the deadline
# Event-stream lines end with CRLF, LF or CR (WHATWG HTML, "Parsing an event stream").
_LINE_END = re.compile(r"\r\n|\r|\n")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


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


@dataclass(frozen=True)
class Completion:
    text: str
    output_tokens: int | None  # as counted by the upstream, if it reported usage
    finish_reason: str | None = None  # the model's, e.g. "stop", "length", "content_filter"


@dataclass
class StreamFacts:
    """What a stream reports besides its text, filled in while it is read."""

    output_tokens: int | None = None  # as counted by the upstream (a `usage` chunk)
    finish_reason: str | None = None  # the model's, from the chunk that carries it
    skipped_lines: int = 0  # `data:` lines that were not JSON, skipped as the original backend does


def estimate_tokens(text: str) -> int:
    """Output tokens of a reply whose upstream did not report usage (about 4 characters each)."""
    return math.ceil(len(text) / 4)


class ReplyStream:
    """Text deltas of one streamed completion; iterate once, then close.

    `interrupt` (if given) must wake a read blocked on another thread; the deltas generator
    releases its own resources when it ends or is closed.
    """

    def __init__(self, deltas: Iterator[str], interrupt=lambda: None, facts: StreamFacts | None = None):
        self._deltas = deltas
        self.facts = facts if facts is not None else StreamFacts()  # filled in while streaming
        self._interrupt = interrupt
        self._closed = False
        self._read_elsewhere = False

    def __iter__(self) -> Iterator[str]:
        return self._deltas

    @property
    def output_tokens(self) -> int | None:
        return self.facts.output_tokens

    def batches(self, idle_seconds: float, drain: Drain | None = None) -> Iterator[list[str]]:
        """The deltas in lists of those that arrived together; an empty list after every
        idle_seconds of upstream silence. Raises ServiceStopping once `drain`'s deadline passes.

        The upstream is read on a helper thread (a greenlet under gevent) so that silence, and
        the deadline, can be noticed while a read is pending. Handing over what has piled up as
        one list lets the caller write it at once: one socket write for many tokens from a fast
        upstream. That thread owns the deltas generator from then on: it stops at close() and
        finishes it.
        """
        events: queue.SimpleQueue = queue.SimpleQueue()
        self._read_elsewhere = True

        def read_upstream():
            try:
                for delta in self._deltas:
                    if self._closed:
                        break
                    events.put(delta)
                events.put(_END)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                events.put(exc)
            finally:
                self._deltas.close()

        threading.Thread(target=read_upstream, daemon=True, name="upstream-reader").start()
        with drain.watching(lambda: events.put(_WAKE)) if drain else contextlib.nullcontext():
            while True:
                wait, deadline_wait = idle_seconds, False
                left = drain.seconds_left() if drain else None
                if left is not None:
                    if left <= 0:
                        raise ServiceStopping()
                    wait, deadline_wait = min(idle_seconds, left), left < idle_seconds
                try:
                    pending = [events.get(timeout=wait)]
                except queue.Empty:
                    if not deadline_wait:
                        yield []
                    continue
                while not events.empty() and len(pending) < MAX_BATCH:
                    pending.append(events.get())
                batch = [item for item in pending if isinstance(item, str)]
                if batch:
                    yield batch
                for item in pending:  # a _WAKE may follow the end
                    if item is _END:
                        return
                    if isinstance(item, BaseException):
                        raise item

    def close(self) -> None:
        """Stop reading: the upstream connection is closed at once, not when the reply ends."""
        self._closed = True
        self._interrupt()
        if not self._read_elsewhere:
            self._deltas.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Transport(requests.adapters.HTTPAdapter):
    """requests' transport adapter for one upstream, answering with urllib3's response itself.

    HTTPAdapter.send() wraps every urllib3 response in a requests.Response (a headers mapping,
    a cookie jar, hooks), and Session.request() prepares and merges settings on every call: a
    fifth of a chat turn's CPU, for features this client does not use (redirects included).
    This keeps what requests sets up for a connection (proxy, TLS verification and CA bundle,
    pooling) and skips the rest.
    """

    def __init__(self, base_url: str, timeout: urllib3.Timeout, logger: logging.Logger):
        super().__init__()
        self.timeout = timeout
        self.logger = logger
        # Proxy and CA-bundle variables are read once: requests would re-scan the environment
        # on every call.
        environment = requests.Session().merge_environment_settings(base_url, {}, None, None, None)
        self.proxies, self.verify = environment["proxies"], environment["verify"]

    def open(self, method: str, url: requests.PreparedRequest, headers: dict, body: bytes | None = None,
             stream: bool = False) -> urllib3.BaseHTTPResponse:
        """Send a request to url (prepared once); the raw response. Raises urllib3's errors.

        A connection that the upstream refused or reset before it answered anything (its accept
        queue overflowing in a burst, or a kept-alive connection it had closed) is tried again
        after a short pause (CONNECT_RETRY_PAUSES_SECONDS), and logged. Unless stream is set,
        the whole body is read here.
        """
        pool = self.get_connection_with_tls_context(url, self.verify, self.proxies)
        self.cert_verify(pool, url.url, self.verify, None)
        for pause in (*CONNECT_RETRY_PAUSES_SECONDS, None):
            try:
                # Never preloaded here: a failure while reading a body is not one to retry.
                response = pool.urlopen(
                    method, self.request_url(url, self.proxies), body=body, headers=headers,
                    retries=False, redirect=False, assert_same_host=False, timeout=self.timeout,
                    preload_content=False,
                )
                break
            except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ProtocolError) as exc:
                if pause is None or not _unanswered_connection(exc):
                    raise
                self.logger.warning("Model connection %s before any answer; trying again in %.2f s",
                                    _failure_name(exc), pause)
                time.sleep(pause)
        if not stream:
            response.read(cache_content=True)
            response.release_conn()
        return response


def _unanswered_connection(exc: urllib3.exceptions.HTTPError) -> bool:
    """True if exc is a connection refused, reset or closed by the upstream before it sent a
    byte: urllib3 raises ProtocolError("Connection aborted.") only before the status line."""
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return True
    return any(isinstance(arg, (ConnectionResetError, ConnectionRefusedError, BrokenPipeError)) for arg in exc.args)


def _failure_name(exc: urllib3.exceptions.HTTPError) -> str:
    cause = next((arg for arg in exc.args if isinstance(arg, OSError)), exc.__context__)
    return "refused" if isinstance(cause, ConnectionRefusedError) else "reset"


class OpenAIClient:
    """Chat completions against any OpenAI-compatible server."""

    def __init__(self, base_url, api_key, model, timeout_seconds, max_output_tokens=None, stream_usage=True,
                 logger: logging.Logger | None = None):
        self.model = model
        self.max_output_tokens = max_output_tokens
        self.stream_usage = stream_usage
        self._api_key = api_key
        # The read timeout bounds the silence between bytes, not the whole reply.
        self._transport = _Transport(base_url, urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=timeout_seconds),
                                     logger or logging.getLogger(__name__))
        self._headers = {**requests.utils.default_headers(), "Authorization": f"Bearer {api_key}"}
        # requests finds a URL's pool (through a proxy or not) from its prepared form.
        self._completions_url = requests.Request("GET", f"{base_url}/chat/completions").prepare()
        self._models_url = requests.Request("GET", f"{base_url}/models").prepare()

    def _send(self, method: str, url: requests.PreparedRequest, body: dict | None = None, stream: bool = False):
        """The upstream's 200 response; any other outcome as an UpstreamError.

        Unless stream is set, the whole body is read here, where a read timeout is an upstream
        error; a streamed response must be closed (_release).
        """
        headers, data = self._headers, None
        if body is not None:
            headers, data = {**headers, "Content-Type": "application/json"}, json.dumps(body).encode()
        try:
            response = self._transport.open(method, url, headers, data, stream)
            if response.status != 200:
                error_body = response.data if not stream else response.read(65536)
                _release(response)
                raise UpstreamStatusError(response.status, self._upstream_message(error_body), self.model,
                                          _retry_after_seconds(response.headers.get("Retry-After")))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _as_upstream_error(exc) from exc
        return response

    def _upstream_message(self, body: bytes | str | dict) -> str:
        """The error message of an upstream's answer, for the log: OpenAI's `{"error":
        {"message"}}`, `{"error": "..."}`, vLLM's and TGI's `{"message"}`/`{"detail"}`, or the
        text itself; on one line, trimmed, and never our key."""
        found = body
        if isinstance(body, (bytes, str)):
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            try:
                found = json.loads(text)
            except ValueError:
                found = text
        for _ in range(3):  # {"error": {"message": ...}} and the like
            if not isinstance(found, dict):
                break
            found = next((found[k] for k in ("error", "message", "detail") if found.get(k)), json.dumps(found))
        message = _CONTROL.sub(" ", found if isinstance(found, str) else json.dumps(found)).strip()
        if self._api_key:
            message = message.replace(self._api_key, "[OPENAI_API_KEY]")
        return message[:UPSTREAM_MESSAGE_CHARS]

    def _completion(self, messages, stream: bool, max_tokens: int | None = None):
        body = {"model": self.model, "messages": messages, "stream": stream}
        if max_tokens or self.max_output_tokens:
            body["max_tokens"] = max_tokens or self.max_output_tokens
        if stream and self.stream_usage:
            # Ask for a final chunk with token counts; some servers refuse it (OPENAI_STREAM_USAGE).
            body["stream_options"] = {"include_usage": True}
        return self._send("POST", self._completions_url, body, stream=stream)

    def complete(self, messages: list[dict], max_tokens: int | None = None) -> Completion:
        """The whole reply of a non-streamed completion (max_tokens: this call's own bound)."""
        response = self._completion(messages, stream=False, max_tokens=max_tokens)
        try:
            body = json.loads(response.data)
        except ValueError as exc:
            raise UpstreamProtocolError("The model sent an unreadable reply",
                                        "the model server's reply is not JSON") from exc
        if isinstance(body, dict) and body.get("error"):  # an error object inside a 200
            raise UpstreamError("The model failed to answer. Please try again.",
                                f"the model server reported an error: {self._upstream_message(body)}")
        try:
            choice = body["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise UpstreamProtocolError("The model sent an unreadable reply",
                                        "the model server's reply has no choices[0].message.content") from exc
        return Completion(content if isinstance(content, str) else "", _output_tokens(body), _finish_reason(choice))

    def list_models(self) -> list[str]:
        """Ids of the models the upstream offers (`GET <base>/models`): proof that it answers
        and accepts the key, at no token cost. Used by the ops CLI's `check`."""
        response = self._send("GET", self._models_url)
        try:
            return [model["id"] for model in json.loads(response.data)["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamProtocolError("The model sent an unreadable model list") from exc

    def stream(self, messages: list[dict]) -> ReplyStream:
        """Connect and return the deltas of a streamed completion (an event stream of chunks)."""
        response = self._completion(messages, stream=True)
        facts = StreamFacts()
        sock = _socket_of(response)
        return ReplyStream(_sse_deltas(response, facts, self._upstream_message), lambda: _hang_up(sock), facts)


def _retry_after_seconds(value: str | None) -> int | None:
    """Retry-After (RFC 9110: delay-seconds or an HTTP date) as whole seconds from now, or None."""
    if not value:
        return None
    if value.strip().isdigit():
        return int(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, math.ceil(when.timestamp() - time.time())) if when.tzinfo else None


def _socket_of(response: urllib3.BaseHTTPResponse) -> socket.socket | None:
    """The socket a streamed response is read from, taken while it is there.

    With `Connection: close` (or HTTP/1.0) the standard library's http.client detaches the socket
    from the connection as soon as the headers are read, so `response.connection.sock` is None
    and only the response's own file still holds it.
    """
    sock = getattr(response.connection, "sock", None)
    if sock is None:
        raw = getattr(getattr(getattr(response, "_fp", None), "fp", None), "raw", None)
        sock = getattr(raw, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _hang_up(sock: socket.socket | None) -> None:
    """End the upstream connection now, even while another thread is blocked reading it.

    close() from here would race with that reader (and does not wake a blocked recv());
    shutdown() ends the read and sends the FIN at once, and the reader then closes the response.
    """
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


def _release(response: urllib3.BaseHTTPResponse) -> None:
    """Close a response that may be unread, and give its place in the pool back."""
    response.close()
    response.release_conn()


def _as_upstream_error(exc: Exception) -> UpstreamError:
    # urllib3 counts a refused connection as a connect timeout; it is not one.
    timed_out = isinstance(exc, urllib3.exceptions.TimeoutError) and not isinstance(
        exc, urllib3.exceptions.NewConnectionError
    )
    if timed_out:
        return UpstreamTimeout("The model stopped answering", f"the model server was silent too long ({exc})")
    return UpstreamError("The connection to the model failed", f"connection to the model server failed ({exc})")


class _Unterminated(str):
    """The last piece of a body that ended in the middle of a line."""


def _event_stream_lines(response: urllib3.BaseHTTPResponse) -> Iterator[str]:
    """Lines of an event-stream body, each as soon as it arrives, decoded and split as the
    WHATWG HTML standard's "Parsing an event stream" does: UTF-8 with U+FFFD for bytes that are
    not UTF-8 (the rest goes on), a leading BOM dropped, and lines ending with CRLF, LF or CR.

    Reading fixed-size blocks (as requests' iter_lines() does) would hold early tokens of an
    unchunked body back until enough later ones arrive; read1() returns whatever is there. A
    body that ends in the middle of a line yields that piece last, as an _Unterminated.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pending, started = "", False
    while data := response.read1(8192):
        text = pending + decoder.decode(data)
        if not started and text:
            text, started = text.removeprefix("\ufeff"), True
        # A CR at the very end may be the first half of a CRLF split across two reads.
        cut = len(text) - 1 if text.endswith("\r") else len(text)
        *complete, rest = _LINE_END.split(text[:cut])
        pending = rest + text[cut:]
        yield from complete
    pending += decoder.decode(b"", final=True)
    if pending.endswith("\r"):
        yield pending[:-1]
    elif pending:
        yield _Unterminated(pending)


def _output_tokens(chunk: dict) -> int | None:
    usage = chunk.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and tokens >= 0 else None


def _finish_reason(choice) -> str | None:
    reason = choice.get("finish_reason") if isinstance(choice, dict) else None
    return reason if isinstance(reason, str) and reason else None


def _sse_deltas(response: urllib3.BaseHTTPResponse, facts: StreamFacts, upstream_message) -> Iterator[str]:
    """Text deltas from a chat-completions event stream, read as tolerantly as a browser would
    and as the original backend does (a TextDecoder and JSON.parse per `data:` line).

    - Comments, blank lines and fields other than `data` are ignored; `data:` lines that are
      not JSON are skipped and counted in facts.skipped_lines (a JSON value split over several
      `data:` lines of one event, as the standard allows, is joined first).
    - A JSON escape can split one character into two UTF-16 halves across chunks (`"\\ud83d"`,
      then `"\\ude00"`): the first half is held back and joined with the second, as a
      JavaScript client's string concatenation does; a half that stays alone becomes U+FFFD.
    - `[DONE]` or a chunk with a `finish_reason` marks a complete reply (servers send one, the
      other or both); a stream that ends with neither, or in the middle of a line, raises
      UpstreamProtocolError. An `error` object in the stream raises UpstreamError.

    Reported output tokens and the finish reason go into facts. The response is closed when the
    generator ends, fails or is closed.
    """
    event_data: list[str] = []  # data lines of the current event not yet readable as JSON
    held = ""  # a first UTF-16 half waiting for its second
    complete = False
    try:
        for line in _event_stream_lines(response):
            if isinstance(line, _Unterminated) and _cut_data_line(line):
                if complete:  # e.g. a usage chunk cut after the finish_reason: the reply is whole
                    facts.skipped_lines += 1
                    break
                raise UpstreamProtocolError("The model stream was cut off",
                                            "the model stream ended in the middle of a line")
            if not line:  # the end of an event
                facts.skipped_lines += len(event_data)
                event_data.clear()
                continue
            field, _, value = line.partition(":")
            if field != "data":
                continue  # a comment (no field name), event, id, retry or an unknown field
            value = value.removeprefix(" ")
            if not value.strip():
                continue  # an empty data line dispatches nothing (the standard), skips nothing
            if value.strip() == "[DONE]":
                complete = True
                break
            chunk = _read_data_line(value, event_data, facts)
            if chunk is None:
                continue
            if chunk.get("error"):
                raise UpstreamError("The model failed to answer. Please try again.",
                                    f"the model server sent an error in its stream: {upstream_message(chunk)}")
            if _output_tokens(chunk) is not None:
                facts.output_tokens = _output_tokens(chunk)
            choice = _first_choice(chunk)
            if _finish_reason(choice) is not None:
                facts.finish_reason, complete = _finish_reason(choice), True
            delta, held = _joined_halves(held + _delta_text(choice))
            if delta:
                yield delta
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise UpstreamTimeout("The model stopped answering", "the model server was silent too long mid-stream") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise UpstreamError("The connection to the model failed", f"the model stream broke ({exc})") from exc
    finally:
        _release(response)
    facts.skipped_lines += len(event_data)
    if held:
        yield "\ufffd"
    if not complete:
        raise UpstreamProtocolError("The model stream ended before the reply was complete",
                                    "the model stream ended with neither [DONE] nor a finish_reason")


def _cut_data_line(line: str) -> bool:
    """True for a `data:` line that the end of the body cut short (it does not parse)."""
    field, _, value = line.partition(":")
    if field != "data" or value.strip() == "[DONE]":
        return False
    try:
        json.loads(value)
    except ValueError:
        return True
    return False


def _read_data_line(value: str, event_data: list[str], facts: StreamFacts) -> dict | None:
    """The chunk a `data:` line completes, or None (kept in event_data, or skipped if not a chunk).

    One JSON object per line is what servers send; the standard also allows one value over
    several data lines of an event, joined with LF.
    """
    try:
        chunk = json.loads(value)
    except ValueError:
        chunk = None
    if isinstance(chunk, dict):
        facts.skipped_lines += len(event_data)  # whatever came before was not part of it
        event_data.clear()
        return chunk
    event_data.append(value)
    try:
        chunk = json.loads("\n".join(event_data))
    except ValueError:
        return None
    event_data.clear()
    if not isinstance(chunk, dict):
        facts.skipped_lines += 1
        return None
    return chunk


def _first_choice(chunk: dict) -> dict:
    choices = chunk.get("choices")
    return choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}


def _delta_text(choice: dict) -> str:
    delta = choice.get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    return content if isinstance(content, str) else ""  # role-only, usage-only and other chunks


def _joined_halves(text: str) -> tuple[str, str]:
    """(text ready to send, a trailing first UTF-16 half held back for the next delta).

    JSON can carry lone UTF-16 halves (surrogates) that UTF-8 cannot: a pair is joined into its
    character, a lone half becomes U+FFFD, so the client's stream stays valid UTF-8.
    """
    if not _SURROGATE.search(text):
        return text, ""
    held = ""
    if "\ud800" <= text[-1] <= "\udbff":
        text, held = text[:-1], text[-1]
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace"), held


class DemoResponder:
    """Offline stand-in for the model: a labelled canned answer, streamed word by word."""

    def __init__(self, delay_seconds: float = 0.04):
        self.delay_seconds = delay_seconds

    def reply_text(self, messages: list[dict]) -> str:
        question = messages[-1]["content"] if messages else ""
        return (
            "[Demo mode: no OPENAI_API_KEY is set, so this is a canned answer, not a model.] "
            f'You said: "{question[:200]}". Set OPENAI_API_KEY (and OPENAI_BASE_URL for any '
            "OpenAI-compatible server) to get real replies."
        )

    def complete(self, messages: list[dict]) -> Completion:
        return Completion(self.reply_text(messages), None)

    def stream(self, messages: list[dict]) -> ReplyStream:
        words = self.reply_text(messages).split(" ")

        def deltas():
            for i, word in enumerate(words):
                time.sleep(self.delay_seconds)
                yield word if i == 0 else " " + word

        return ReplyStream(deltas())
