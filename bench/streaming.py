"""Cost of relaying a stream: service CPU per relayed token with many concurrent streams and an
upstream as fast as it can go, and the time to first token the service adds.

    python bench/streaming.py                       # 100 streams x 200 tokens, as in PERFORMANCE.md
    python bench/streaming.py --streams 5 --tokens 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
from harness import (
    WIDGET_KEY,
    chat_body,
    cpu_seconds,
    fake_upstream,
    openai_body,
    redis_server,
    report,
    service,
    summary_ms,
)


async def stream_once(session: aiohttp.ClientSession, url: str, body: dict, is_ndjson: bool) -> tuple[float, int]:
    """(seconds to the first token, tokens received) of one streamed reply."""
    started, tokens = time.perf_counter(), 0
    first: float | None = None
    async with session.post(url, json=body) as response:
        assert response.status == 200, response.status
        async for line in response.content:
            line = line.strip()
            if is_ndjson:
                if not line:
                    continue
                event = json.loads(line)
                if event["type"] == "token":
                    tokens += 1
                elif event["type"] != "start" and event["type"] != "done":
                    raise RuntimeError(f"stream failed: {event}")
            elif line.startswith(b"data: {"):
                tokens += 1
            if tokens == 1 and first is None:
                first = time.perf_counter() - started
    if first is None:
        raise RuntimeError("the stream carried no token")
    return first, tokens


async def many_streams(url: str, bodies: list[dict], is_ndjson: bool, headers=None) -> list[tuple[float, int]]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, headers=headers or {}, timeout=timeout) as session:
        return await asyncio.gather(*(stream_once(session, url, body, is_ndjson) for body in bodies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--ttft-samples", type=int, default=100)
    args = parser.parse_args()
    headers = {"X-Widget-Api-Key": WIDGET_KEY}

    with (
        redis_server() as redis_url,
        fake_upstream(tokens=args.tokens) as upstream_url,
        service(redis_url, upstream_url) as (base_url, master_pid),
    ):
        stream_url, direct_url = base_url + "/v1/chat/stream", upstream_url + "/chat/completions"
        asyncio.run(many_streams(stream_url, [chat_body(i) for i in range(10)], True, headers))  # warm up

        cpu_before = cpu_seconds(master_pid)
        results = asyncio.run(many_streams(stream_url, [chat_body(i) for i in range(args.streams)], True, headers))
        cpu = cpu_seconds(master_pid) - cpu_before
        relayed = sum(tokens for _, tokens in results)
        assert relayed == args.streams * args.tokens, f"lost tokens: {relayed}"

        def first_tokens(url, body_for, is_ndjson, hdrs=None):
            return [
                asyncio.run(many_streams(url, [body_for(i)], is_ndjson, hdrs))[0][0] for i in range(args.ttft_samples)
            ]

        via_service = summary_ms(first_tokens(stream_url, chat_body, True, headers))
        direct = summary_ms(first_tokens(direct_url, lambda i: openai_body(True), False))
    report(
        "streaming",
        {
            "streams": args.streams,
            "tokens_per_stream": args.tokens,
            "tokens_relayed": relayed,
            "service_cpu_us_per_token": round(cpu * 1e6 / relayed, 1),
            "service_cpu_ms_per_stream": round(cpu * 1000 / args.streams, 2),
            "time_to_first_token": {
                "service": via_service,
                "upstream_direct": direct,
                "added_p50_ms": round(via_service["p50_ms"] - direct["p50_ms"], 2),
            },
        },
    )


if __name__ == "__main__":
    main()
