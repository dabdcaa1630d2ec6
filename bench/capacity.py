"""Capacity: many long streams held at once by the Procfile's gunicorn settings.

    python bench/capacity.py                     # 1000 streams, 2 tokens/s for 30 s, as in PERFORMANCE.md
    python bench/capacity.py --streams 20 --seconds 2

Each stream's token arrival times are compared with the upstream's schedule (one token every
1/rate s after the first); the same load sent straight to the fake upstream gives the floor,
so "added delay" is what the service adds. RSS of the gunicorn master and workers is sampled
throughout and the peak is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp
from harness import (
    WIDGET_KEY,
    chat_body,
    fake_upstream,
    openai_body,
    percentile,
    redis_server,
    report,
    rss_bytes,
    service,
)


async def one_stream(session, url, body, is_ndjson, interval) -> tuple[bool, list[float]]:
    """(finished cleanly, lateness of each token after the first, in seconds)."""
    arrivals, finished = [], False
    async with session.post(url, json=body) as response:
        async for line in response.content:
            line = line.strip()
            if is_ndjson and line:
                kind = json.loads(line)["type"]
                if kind == "token":
                    arrivals.append(time.perf_counter())
                finished = finished or kind == "done"
            elif line.startswith(b"data: {"):
                arrivals.append(time.perf_counter())
            elif line == b"data: [DONE]":
                finished = True
    return finished, [arrivals[i] - arrivals[0] - i * interval for i in range(1, len(arrivals))]


async def hold_streams(url, bodies, is_ndjson, interval, headers=None, on_tick=None):
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=connector, headers=headers or {}, timeout=timeout) as session:
        tasks = [asyncio.create_task(one_stream(session, url, body, is_ndjson, interval)) for body in bodies]
        while not all(task.done() for task in tasks):
            if on_tick:
                on_tick()
            await asyncio.sleep(0.5)
        return [task.result() if not task.exception() else (False, []) for task in tasks]


def summarize(results) -> dict:
    lateness = [late for _, lates in results for late in lates]
    return {
        "streams_finished": sum(ok for ok, _ in results),
        "token_lateness_p50_ms": round(statistics.median(lateness) * 1000, 1),
        "token_lateness_p99_ms": round(percentile(lateness, 0.99) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--tokens-per-second", type=float, default=2)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    tokens = int(args.seconds * args.tokens_per_second)
    interval = 1 / args.tokens_per_second
    headers = {"X-Widget-Api-Key": WIDGET_KEY}

    with (
        redis_server() as redis_url,
        fake_upstream(tokens=tokens, tokens_per_second=args.tokens_per_second) as upstream_url,
        service(redis_url, upstream_url) as (base_url, master_pid),
    ):
        direct = asyncio.run(
            hold_streams(upstream_url + "/chat/completions", [openai_body(True)] * args.streams, False, interval)
        )
        peak_rss = [rss_bytes(master_pid)]
        via_service = asyncio.run(
            hold_streams(
                base_url + "/v1/chat/stream",
                [chat_body(i) for i in range(args.streams)],
                True,
                interval,
                headers,
                on_tick=lambda: peak_rss.append(rss_bytes(master_pid)),
            )
        )
    service_figures, direct_figures = summarize(via_service), summarize(direct)
    report(
        "capacity",
        {
            "streams": args.streams,
            "tokens_per_stream": tokens,
            "tokens_per_second": args.tokens_per_second,
            "service": service_figures,
            "upstream_direct": direct_figures,
            "added_token_lateness_p99_ms": round(
                service_figures["token_lateness_p99_ms"] - direct_figures["token_lateness_p99_ms"], 1
            ),
            "peak_rss_mb": round(max(peak_rss) / 2**20, 1),
            "idle_rss_mb": round(peak_rss[0] / 2**20, 1),
        },
    )


if __name__ == "__main__":
    main()
