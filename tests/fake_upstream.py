"""A real HTTP server on loopback that speaks the OpenAI chat-completions protocol.

Non-streamed requests get a JSON completion; streamed ones get SSE `data:` lines ending in
`data: [DONE]`. Faults are switched per test by setting attributes:

  reply          text of the answer (split into tokens on spaces, spaces kept)
  echo           if True, the answer is "echo: <the last message of the prompt>" instead, so
                 every reply can be told apart and found in storage
  fault          None, "status" (answer HTTP `status`), "hang" (never answer),
                 "cut" (close the connection after `cut_after` tokens, or halfway through
                 a non-streamed body), "no_done" (end the stream without [DONE]),
                 "malformed" (send a line, or a non-streamed body, that is not JSON)
  status         HTTP status used by fault="status"
  token_delay    seconds between streamed tokens, or between five pieces of a non-streamed
                 body (a slow drip)
  report_usage   include `usage` (completion_tokens = number of tokens) in JSON replies, and as
                 a final chunk of streams that ask for it with stream_options.include_usage
  gzip           if True, replies are gzip-compressed (Content-Encoding: gzip); a stream is
                 then sent whole, as one compressed body
  stream_bytes   a list of byte strings: a streamed request is answered 200 with exactly these
                 bytes as its body, each written and flushed on its own (token_delay apart), then
                 the connection is closed (the body is framed by the close)
  finish_reason  the finish_reason of non-streamed replies
  strict_models  if True, a completion for a model not in `models` is answered 404, as OpenAI does
  error_body     bytes of the body the "status" fault answers with (default an OpenAI error)
  retry_after    a Retry-After header for the "status" fault

`POST /v1/embeddings` answers OpenAI's embeddings shape with `embedding(text)` for each input
(default: words hashed into 64 dimensions) and records each body in `embedding_requests`; the
`status` fault applies to it too.

It records every chat request body in `requests`, and in `hangups` a (time, last prompt message)
pair for each stream whose client closed the connection while it was still streaming.
`GET /v1/models` lists `models` (the `status` fault applies to it too), and records its
Authorization header in `model_listings`.
"""

from __future__ import annotations

import gzip
import json
import select
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default backlog of 5 refuses bursts of simultaneous streams


def sse_line(payload) -> bytes:
    """One SSE `data:` event: payload as JSON, or as it is if already bytes."""
    line = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return b"data: " + line + b"\n\n"


def delta_chunk(token: str) -> dict:
    """A streamed chat-completions chunk carrying one token."""
    return {"choices": [{"index": 0, "delta": {"content": token}}]}


def hashed_words(text: str, dimensions: int = 64) -> list[float]:
    """A stand-in embedding: each lower-case word adds 1 to one of `dimensions` coordinates."""
    vector = [0.0] * dimensions
    for word in text.lower().split():
        vector[sum(word.encode()) % dimensions] += 1.0
    return vector


class FakeUpstream:
    def __init__(self, certificate: str | None = None, backlog: int | None = None):
        """certificate: a PEM file with a key and a certificate to serve HTTPS with.
        backlog: the listening socket's accept queue (default 1024); a short one makes a burst of
        connections overflow it, as a busy model server's does."""
        server_class = type("_ShortQueueServer", (_Server,), {"request_queue_size": backlog}) if backlog else _Server
        self.server = server_class(("127.0.0.1", 0), self._handler_class())
        self.port = self.server.server_address[1]
        scheme = "http"
        if certificate:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificate)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.port}/v1"
        self.reset()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self):
        self.reply = "Hello from the fake model."
        self.echo = False
        self.fault = None
        self.status = 500
        self.token_delay = 0.0
        self.cut_after = 2
        self.report_usage = True
        self.gzip = False
        self.stream_bytes: list[bytes] | None = None
        self.finish_reason = "stop"
        self.strict_models = False
        self.error_body: bytes | None = None
        self.retry_after: str | None = None
        self.requests: list[dict] = []
        self.models = ["gpt-4.1-mini", "fake-model"]
        self.model_listings: list[str | None] = []
        self.hangups: list[tuple[float, str]] = []
        self.embedding = hashed_words
        self.embedding_requests: list[dict] = []
        self.finished_streams = 0
        self.release = threading.Event()  # set to end a "hang"

    def answer(self, body: dict) -> str:
        return f"echo: {body['messages'][-1]['content']}" if self.echo else self.reply

    def usage(self, body: dict) -> dict:
        completion = len(self.tokens(body))
        return {"prompt_tokens": 10, "completion_tokens": completion, "total_tokens": 10 + completion}

    def tokens(self, body: dict) -> list[str]:
        words = self.answer(body).split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler_class(self):
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.rstrip("/") != "/v1/models":
                    return self._json(404, {"error": {"message": "not found"}})
                upstream.model_listings.append(self.headers.get("Authorization"))
                if upstream.fault == "status":
                    return self._error_status()
                return self._json(
                    200, {"object": "list", "data": [{"id": m, "object": "model"} for m in upstream.models]}
                )

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                if self.path.rstrip("/") == "/v1/embeddings":
                    return self._embeddings(body)
                body["_authorization"] = self.headers.get("Authorization")
                upstream.requests.append(body)
                self.last_message = body["messages"][-1]["content"]
                if upstream.fault == "hang":
                    upstream.release.wait(60)
                    return self._close()
                if upstream.fault == "status":
                    return self._error_status()
                if upstream.strict_models and body.get("model") not in upstream.models:
                    return self._json(
                        404,
                        {
                            "error": {
                                "message": f"The model `{body.get('model')}` does not exist",
                                "code": "model_not_found",
                            }
                        },
                    )
                if body.get("stream") and upstream.stream_bytes is not None:
                    return self._exact_stream()
                if body.get("stream"):
                    return self._stream(body)
                reply: dict = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": upstream.answer(body)},
                            "finish_reason": upstream.finish_reason,
                        }
                    ],
                }
                if upstream.report_usage:
                    reply["usage"] = upstream.usage(body)
                return self._json(200, reply)

            def _json(self, status, payload):
                data = json.dumps(payload).encode()
                if upstream.fault == "malformed":
                    data = b"{not json" + data
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                data = self._encoded(data)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if upstream.fault == "cut":
                    self.wfile.write(data[: len(data) // 2])
                    return self._close()
                step = len(data) // 5 + 1 if upstream.token_delay else len(data)  # drip: five pieces
                try:
                    for start in range(0, len(data), step):
                        time.sleep(upstream.token_delay)
                        self.wfile.write(data[start : start + step])
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self._close()  # the client gave up waiting

            def _error_status(self):
                data = upstream.error_body or json.dumps({"error": {"message": "fault", "type": "test"}}).encode()
                self.send_response(upstream.status)
                self.send_header("Content-Type", "application/json")
                if upstream.retry_after is not None:
                    self.send_header("Retry-After", upstream.retry_after)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _embeddings(self, body: dict):
                upstream.embedding_requests.append(body)
                if upstream.fault == "status":
                    return self._error_status()
                data = [
                    {"object": "embedding", "index": i, "embedding": upstream.embedding(text)}
                    for i, text in enumerate(body["input"])
                ]
                return self._json(200, {"object": "list", "data": data, "model": body.get("model")})

            def _exact_stream(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for piece in upstream.stream_bytes or []:
                        if upstream.token_delay and self._client_gone(upstream.token_delay):
                            return
                        self.wfile.write(piece)
                        self.wfile.flush()
                    upstream.finished_streams += 1
                except (BrokenPipeError, ConnectionResetError):
                    self._hung_up()

            def _close(self):
                self.close_connection = True

            def _encoded(self, data: bytes) -> bytes:
                """data as the body will carry it: gzip-compressed, with its header, if asked."""
                if not upstream.gzip:
                    return data
                self.send_header("Content-Encoding", "gzip")
                return gzip.compress(data)

            def _client_gone(self, wait: float) -> bool:
                """Wait up to `wait` seconds; True if the client closed the connection meanwhile."""
                # poll(), not select(): a burst of streams puts this process past 1024 sockets,
                # and select() refuses descriptors above that.
                poller = select.poll()
                poller.register(self.connection, select.POLLIN)
                readable = poller.poll(wait * 1000)
                if readable and self.connection.recv(1, 0x40) == b"":  # MSG_DONTWAIT
                    self._hung_up()
                    return True
                return False

            def _event(self, payload) -> None:
                self.wfile.write(sse_line(payload))
                self.wfile.flush()

            def _stream(self, body):
                if upstream.gzip:
                    return self._compressed_stream(body)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    self._event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
                    for i, token in enumerate(upstream.tokens(body)):
                        if upstream.fault == "cut" and i == upstream.cut_after:
                            return
                        if upstream.fault == "malformed" and i == 1:
                            self._event(b"{not json")
                        if upstream.token_delay and self._client_gone(upstream.token_delay):
                            return
                        self._event(delta_chunk(token))
                    if upstream.report_usage and (body.get("stream_options") or {}).get("include_usage"):
                        self._event({"choices": [], "usage": upstream.usage(body)})
                    if upstream.fault != "no_done":
                        self._event(b"[DONE]")
                    upstream.finished_streams += 1
                except (BrokenPipeError, ConnectionResetError):
                    self._hung_up()

            def _compressed_stream(self, body):
                """The deltas and [DONE] as one gzip-compressed SSE body."""
                lines = [sse_line(delta_chunk(token)) for token in upstream.tokens(body)] + [sse_line(b"[DONE]")]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                data = self._encoded(b"".join(lines))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.finished_streams += 1

            def _hung_up(self):
                upstream.hangups.append((time.monotonic(), self.last_message))

        return Handler
