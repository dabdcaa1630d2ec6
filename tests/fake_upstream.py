"""A real HTTP server on loopback that speaks the OpenAI chat-completions protocol.

Non-streamed requests get a JSON completion; streamed ones get SSE `data:` lines ending in
`data: [DONE]`. Faults are switched per test by setting attributes:

  reply          text of the answer (split into tokens on spaces, spaces kept)
  fault          None, "status" (answer HTTP `status`), "hang" (never answer),
                 "cut" (close the connection after `cut_after` tokens), "no_done" (end the
                 stream without [DONE]), "malformed" (send a line that is not JSON)
  status         HTTP status used by fault="status"
  token_delay    seconds between streamed tokens (a slow drip)
  report_usage   include `usage` (completion_tokens = number of tokens) in JSON replies, and as
                 a final chunk of streams that ask for it with stream_options.include_usage

It records every request body in `requests`, and `hangups`: times at which it noticed the
client had closed the connection while it was still streaming. `GET /v1/models` lists
`models` (the `status` fault applies to it too), and records its Authorization header in
`model_listings`.
"""
from __future__ import annotations

import json
import select
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # bursts of hundreds of streams connect at once


class FakeUpstream:
    def __init__(self):
        self.server = _Server(("127.0.0.1", 0), self._handler_class())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.reset()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self):
        self.reply = "Hello from the fake model."
        self.fault = None
        self.status = 500
        self.token_delay = 0.0
        self.cut_after = 2
        self.report_usage = True
        self.requests: list[dict] = []
        self.models = ["gpt-4.1-mini", "fake-model"]
        self.model_listings: list[str | None] = []
        self.hangups: list[float] = []
        self.finished_streams = 0
        self.release = threading.Event()  # set to end a "hang"

    def usage(self) -> dict:
        return {"prompt_tokens": 10, "completion_tokens": len(self.tokens()), "total_tokens": 10 + len(self.tokens())}

    def tokens(self) -> list[str]:
        words = self.reply.split(" ")
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
                    return self._json(upstream.status, {"error": {"message": "fault"}})
                return self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in upstream.models]})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                body["_authorization"] = self.headers.get("Authorization")
                upstream.requests.append(body)
                self.body = body
                if upstream.fault == "hang":
                    upstream.release.wait(60)
                    return self._close()
                if upstream.fault == "status":
                    return self._json(upstream.status, {"error": {"message": "fault"}})
                if body.get("stream"):
                    return self._stream()
                reply = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": upstream.reply},
                                 "finish_reason": "stop"}],
                }
                if upstream.report_usage:
                    reply["usage"] = upstream.usage()
                return self._json(200, reply)

            def _json(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _close(self):
                self.close_connection = True

            def _client_gone(self, wait: float) -> bool:
                """Wait up to `wait` seconds; True if the client closed the connection meanwhile."""
                readable, _, _ = select.select([self.connection], [], [], wait)
                if readable and self.connection.recv(1, 0x40) == b"":  # MSG_DONTWAIT
                    upstream.hangups.append(time.monotonic())
                    return True
                return False

            def _event(self, payload) -> None:
                line = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.wfile.write(b"data: " + line + b"\n\n")
                self.wfile.flush()

            def _stream(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    self._event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
                    for i, token in enumerate(upstream.tokens()):
                        if upstream.fault == "cut" and i == upstream.cut_after:
                            return
                        if upstream.fault == "malformed" and i == 1:
                            self._event(b"{not json")
                        if upstream.token_delay and self._client_gone(upstream.token_delay):
                            return
                        self._event({"choices": [{"index": 0, "delta": {"content": token}}]})
                    wants_usage = (self.body.get("stream_options") or {}).get("include_usage")
                    if upstream.report_usage and wants_usage:
                        self._event({"choices": [], "usage": upstream.usage()})
                    if upstream.fault != "no_done":
                        self._event(b"[DONE]")
                    upstream.finished_streams += 1
                except (BrokenPipeError, ConnectionResetError):
                    upstream.hangups.append(time.monotonic())

        return Handler
