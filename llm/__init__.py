"""The model: an OpenAI-compatible chat-completions client (requests and urllib3), and the offline
demo responder used in development when no OPENAI_API_KEY is set.

Both offer `complete(messages) -> Completion` and `stream(messages) -> ReplyStream`. A
ReplyStream is iterated for text deltas and must be closed (it is a context manager); closing it
releases the upstream connection at once, which stops generation the client no longer waits for.
Both report the output tokens the upstream counted, when it says (`usage`), else None, and the
model's finish reason when it gives one.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import requests
import urllib3

from .errors import (
    UNAVAILABLE_MESSAGE,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from .event_stream import chat_deltas, finish_reason, output_tokens
from .prompt import build_prompt
from .reply_stream import ReplyStream, StreamFacts
from .transport import Transport, as_upstream_error, hang_up, release, retry_after_seconds, socket_of

if TYPE_CHECKING:
    from config import Settings

__all__ = [
    "UNAVAILABLE_MESSAGE",
    "Completion",
    "DemoResponder",
    "Model",
    "OpenAIClient",
    "ReplyStream",
    "StreamFacts",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamStatusError",
    "UpstreamTimeout",
    "build_prompt",
    "estimate_tokens",
    "from_settings",
]

CONNECT_TIMEOUT_SECONDS = 10


UPSTREAM_MESSAGE_CHARS = 300  # of an upstream's error message, in the log


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass(frozen=True)
class Completion:
    text: str
    output_tokens: int | None  # as counted by the upstream, if it reported usage
    finish_reason: str | None = None  # the model's, e.g. "stop", "length", "content_filter"


def estimate_tokens(text: str) -> int:
    """Output tokens of a reply whose upstream did not report usage (about 4 characters each)."""
    return math.ceil(len(text) / 4)


class OpenAIClient:
    """Chat completions against any OpenAI-compatible server."""

    def __init__(
        self,
        base_url,
        api_key,
        model,
        timeout_seconds,
        max_output_tokens=None,
        stream_usage=True,
        logger: logging.Logger | None = None,
        embedding_model: str | None = None,
    ):
        self.model = model
        self.embedding_model = embedding_model
        self.max_output_tokens = max_output_tokens
        self.stream_usage = stream_usage
        self._api_key = api_key
        # The read timeout bounds the silence between bytes, not the whole reply.
        self._transport = Transport(
            base_url,
            urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=timeout_seconds),
            logger or logging.getLogger(__name__),
        )
        self._headers = {**requests.utils.default_headers(), "Authorization": f"Bearer {api_key}"}
        # requests finds a URL's pool (through a proxy or not) from its prepared form.
        self._completions_url = requests.Request("GET", f"{base_url}/chat/completions").prepare()
        self._models_url = requests.Request("GET", f"{base_url}/models").prepare()
        self._embeddings_url = requests.Request("GET", f"{base_url}/embeddings").prepare()

    def _send(self, method: str, url: requests.PreparedRequest, body: dict | None = None, stream: bool = False):
        """The upstream's 200 response; any other outcome as an UpstreamError.

        Unless stream is set, the whole body is read here, where a read timeout is an upstream
        error; a streamed response must be closed (release).
        """
        headers, data = self._headers, None
        if body is not None:
            headers, data = {**headers, "Content-Type": "application/json"}, json.dumps(body).encode()
        try:
            response = self._transport.open(method, url, headers, data, stream)
            if response.status != 200:
                error_body = response.data if not stream else response.read(65536)
                release(response)
                raise UpstreamStatusError(
                    response.status,
                    self._upstream_message(error_body),
                    self.model,
                    retry_after_seconds(response.headers.get("Retry-After")),
                )
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise as_upstream_error(exc) from exc
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
            raise UpstreamProtocolError(
                "The model sent an unreadable reply", "the model server's reply is not JSON"
            ) from exc
        if isinstance(body, dict) and body.get("error"):  # an error object inside a 200
            raise UpstreamError(
                "The model failed to answer. Please try again.",
                f"the model server reported an error: {self._upstream_message(body)}",
            )
        try:
            choice = body["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise UpstreamProtocolError(
                "The model sent an unreadable reply", "the model server's reply has no choices[0].message.content"
            ) from exc
        return Completion(content if isinstance(content, str) else "", output_tokens(body), finish_reason(choice))

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One embedding per text, in order, from EMBEDDING_MODEL (`POST <base>/embeddings`,
        OpenAI's embeddings API). Raises UpstreamError."""
        response = self._send("POST", self._embeddings_url, {"model": self.embedding_model, "input": texts})
        try:
            data = sorted(json.loads(response.data)["data"], key=lambda item: item["index"])
            vectors = [[float(x) for x in item["embedding"]] for item in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamProtocolError("The model sent unreadable embeddings") from exc
        if len(vectors) != len(texts):
            raise UpstreamProtocolError("The model sent unreadable embeddings", "wrong number of embeddings")
        return vectors

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
        sock = socket_of(response)
        return ReplyStream(chat_deltas(response, facts, self._upstream_message), lambda: hang_up(sock), facts)


class DemoResponder:
    """Offline stand-in for the model: a labelled canned answer, streamed word by word. It is
    Markdown, as models answer, so a first try shows the widget's formatting too."""

    def __init__(self, delay_seconds: float = 0.04):
        self.delay_seconds = delay_seconds

    def reply_text(self, messages: list[dict]) -> str:
        question = " ".join((messages[-1]["content"] if messages else "")[:200].split())
        return (
            "**Demo mode**: no `OPENAI_API_KEY` is set, so this is a canned answer, not a model.\n\n"
            f'You said: "{question}"\n\n'
            "For real replies, set:\n\n"
            "1. `OPENAI_API_KEY`\n"
            "2. `OPENAI_BASE_URL` as well, for any OpenAI-compatible server\n\n"
            "Replies are drawn from *Markdown*, as models write it: lists, `code`, tables and "
            "[links](https://commonmark.org/help/)."
        )

    def complete(self, messages: list[dict], max_tokens: int | None = None) -> Completion:
        return Completion(self.reply_text(messages), None)

    def stream(self, messages: list[dict]) -> ReplyStream:
        words = self.reply_text(messages).split(" ")

        def deltas():
            for i, word in enumerate(words):
                time.sleep(self.delay_seconds)
                yield word if i == 0 else " " + word

        return ReplyStream(deltas())


class Model(Protocol):
    """What the chat routes call: OpenAIClient, or DemoResponder in development."""

    def complete(self, messages: list[dict], max_tokens: int | None = None) -> Completion: ...

    def stream(self, messages: list[dict]) -> ReplyStream: ...


def from_settings(settings: Settings, logger: logging.Logger) -> Model:
    """The demo responder in development without OPENAI_API_KEY, else the OpenAI-compatible client."""
    if settings.demo_mode:
        return DemoResponder()
    return OpenAIClient(
        settings.openai_base_url,
        settings.openai_api_key,
        settings.openai_model,
        settings.llm_timeout_seconds,
        settings.max_output_tokens,
        settings.stream_usage,
        logger,
        settings.embedding_model,
    )
