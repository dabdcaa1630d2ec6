"""A fast OpenAI-compatible upstream for benchmarks (aiohttp, one process, many streams).

    python bench/fake_upstream.py --port 9000 --ttft-ms 0 --tokens 20 --tokens-per-second 0

Non-streamed requests get the whole reply at once (after --ttft-ms); streamed ones get one SSE
`data:` line per token, spaced by 1/--tokens-per-second (0 = as fast as it can), then
`data: [DONE]`. It prints "ready" once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web


def build_app(ttft_ms: float, tokens: int, tokens_per_second: float) -> web.Application:
    words = [f" w{i}" for i in range(tokens)]
    reply = "".join(words).strip()
    completion = json.dumps(
        {
            "id": "bench",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 10 + tokens},
        }
    ).encode()
    chunks = [
        b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": w}}]}).encode() + b"\n\n" for w in words
    ]
    gap = 1 / tokens_per_second if tokens_per_second else 0

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if ttft_ms:
            await asyncio.sleep(ttft_ms / 1000)
        if not body.get("stream"):
            return web.Response(body=completion, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
            if gap:
                await asyncio.sleep(gap)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft-ms", type=float, default=0)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--tokens-per-second", type=float, default=0)
    args = parser.parse_args()
    app = build_app(args.ttft_ms, args.tokens, args.tokens_per_second)

    async def serve():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port, backlog=4096).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
