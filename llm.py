"""The model: an OpenAI-compatible chat-completions client (requests and urllib3), and the offline
demo responder used in development when no OPENAI_API_KEY is set.

Both offer `complete(messages) -> Completion` and `stream(messages) -> ReplyStream`. A
ReplyStream is iterated for text deltas and must be closed (it is a context manager); closing it
releases the upstream connection at once, which stops generation the client no longer waits for.
Both report the output tokens the upstream counted, when it says (`usage`), else None.
"""
from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import math
import time
from dataclasses import dataclass
from typing import Iterator

import requests
import requests.adapters
import urllib3

from drain import Drain, ServiceStopping

CONNECT_TIMEOUT_SECONDS = 10
MAX_BATCH = 256  # deltas handed over at once, so one write stays small
_END = object()  # marks the end of a reply on the reader's queue
_WAKE = object()  # put on the reader's queue when draining begins: the consumer re-checks the deadline


class UpstreamError(Exception):
    """The model upstream failed; the message is safe to show to clients."""

    status_code = 502


class UpstreamTimeout(UpstreamError):
    status_code = 504


class UpstreamStatusError(UpstreamError):
    """The upstream answered with a non-2xx status."""


class UpstreamProtocolError(UpstreamError):
    """The upstream answered with something that is not the chat-completions protocol."""


@dataclass(frozen=True)
class Completion:
    text: str
    output_tokens: int | None  # as counted by the upstream, if it reported usage


def estimate_tokens(text: str) -> int:
    """Output tokens of a reply whose upstream did not report usage (about 4 characters each)."""
    return math.ceil(len(text) / 4)


class ReplyStream:
    """Text deltas of one streamed completion; iterate once, then close.

    `interrupt` (if given) must wake a read blocked on another thread; the deltas generator
    releases its own resources when it ends or is closed.
    """

    def __init__(self, deltas: Iterator[str], interrupt=lambda: None, usage: dict | None = None):
        self._deltas = deltas
        self.usage = usage if usage is not None else {}  # filled in while streaming
        self._interrupt = interrupt
        self._closed = False
        self._read_elsewhere = False

    def __iter__(self) -> Iterator[str]:
        return self._deltas

    @property
    def output_tokens(self) -> int | None:
        return self.usage.get("output_tokens")

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

    def __init__(self, base_url: str, timeout: urllib3.Timeout):
        super().__init__()
        self.timeout = timeout
        # Proxy and CA-bundle variables are read once: requests would re-scan the environment
        # on every call.
        environment = requests.Session().merge_environment_settings(base_url, {}, None, None, None)
        self.proxies, self.verify = environment["proxies"], environment["verify"]

    def open(self, method: str, url: requests.PreparedRequest, headers: dict, body: bytes | None = None,
             stream: bool = False) -> urllib3.BaseHTTPResponse:
        """Send a request to url (prepared once); the raw response. Raises urllib3's errors.

        Unless stream is set, the whole body is read here.
        """
        pool = self.get_connection_with_tls_context(url, self.verify, self.proxies)
        self.cert_verify(pool, url.url, self.verify, None)
        return pool.urlopen(
            method, self.request_url(url, self.proxies), body=body, headers=headers,
            retries=False, redirect=False, assert_same_host=False, timeout=self.timeout,
            preload_content=not stream,
        )


class OpenAIClient:
    """Chat completions against any OpenAI-compatible server."""

    def __init__(self, base_url, api_key, model, timeout_seconds, max_output_tokens=None, stream_usage=True):
        self.model = model
        self.max_output_tokens = max_output_tokens
        self.stream_usage = stream_usage
        # The read timeout bounds the silence between bytes, not the whole reply.
        self._transport = _Transport(base_url, urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=timeout_seconds))
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
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _as_upstream_error(exc) from exc
        if response.status != 200:
            _release(response)
            raise UpstreamStatusError(f"The model answered with HTTP {response.status}")
        return response

    def _completion(self, messages, stream: bool):
        body = {"model": self.model, "messages": messages, "stream": stream}
        if self.max_output_tokens:
            body["max_tokens"] = self.max_output_tokens
        if stream and self.stream_usage:
            # Ask for a final chunk with token counts; some servers refuse it (OPENAI_STREAM_USAGE).
            body["stream_options"] = {"include_usage": True}
        return self._send("POST", self._completions_url, body, stream=stream)

    def complete(self, messages: list[dict]) -> Completion:
        """The whole reply of a non-streamed completion."""
        response = self._completion(messages, stream=False)
        try:
            body = json.loads(response.data)
            content = body["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise UpstreamProtocolError("The model sent an unreadable reply") from exc
        return Completion(content if isinstance(content, str) else "", _output_tokens(body))

    def list_models(self) -> list[str]:
        """Ids of the models the upstream offers (`GET <base>/models`): proof that it answers
        and accepts the key, at no token cost. Used by the ops CLI's `check`."""
        response = self._send("GET", self._models_url)
        try:
            return [model["id"] for model in json.loads(response.data)["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamProtocolError("The model sent an unreadable model list") from exc

    def stream(self, messages: list[dict]) -> ReplyStream:
        """Connect and return the deltas of a streamed completion (SSE `data:` lines)."""
        response = self._completion(messages, stream=True)
        usage: dict = {}
        return ReplyStream(_sse_deltas(response, usage), lambda: _hang_up(response), usage)


def _hang_up(response: urllib3.BaseHTTPResponse) -> None:
    """End the upstream connection now, even while another thread is blocked reading it.

    close() from here would race with that reader (and does not wake a blocked recv());
    shutdown() ends the read and sends the FIN at once, and the reader then closes the response.
    """
    sock = getattr(response.connection, "sock", None)
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
        return UpstreamTimeout("The model stopped answering")
    return UpstreamError("The connection to the model failed")


def _lines(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """Lines of a streamed body, each as soon as it arrives.

    Reading fixed-size blocks (as requests' iter_lines() does) would hold early tokens of an
    unchunked body back until enough later ones arrive; read1() returns whatever is there.
    """
    pending = b""
    while data := response.read1(8192):
        *complete, pending = (pending + data).split(b"\n")
        yield from (line.rstrip(b"\r") for line in complete)
    if pending:
        yield pending


def _output_tokens(chunk: dict) -> int | None:
    usage = chunk.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and tokens >= 0 else None


def _sse_deltas(response: urllib3.BaseHTTPResponse, usage: dict) -> Iterator[str]:
    """Text deltas from an SSE chat-completions stream; it must end with `data: [DONE]`.

    Reported output tokens go into usage["output_tokens"]. The response is closed when the
    generator ends, fails or is closed.
    """
    try:
        for line in _lines(response):
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, event names
            data = line[5:].strip()
            if data == b"[DONE]":
                return
            try:
                chunk = json.loads(data)
            except ValueError as exc:
                raise UpstreamProtocolError("The model sent a malformed stream line") from exc
            if not isinstance(chunk, dict):
                raise UpstreamProtocolError("The model sent a malformed stream line")
            if chunk.get("error"):
                raise UpstreamError("The model reported an error")
            if _output_tokens(chunk) is not None:
                usage["output_tokens"] = _output_tokens(chunk)
            delta = _delta_text(chunk)
            if delta:
                yield delta
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise UpstreamTimeout("The model stopped answering") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise UpstreamError("The connection to the model failed") from exc
    finally:
        _release(response)
    raise UpstreamProtocolError("The model stream ended before [DONE]")


def _delta_text(chunk: dict) -> str:
    try:
        content = chunk["choices"][0]["delta"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""  # role-only, usage-only and other content-free chunks
    if not isinstance(content, str):
        return ""
    # JSON can carry lone surrogates that UTF-8 cannot; they would break the client's stream.
    return content.encode("utf-8", "replace").decode("utf-8")


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
