"""Cost of a non-streaming chat turn (POST /v1/chat): service CPU per turn, latency added to
the upstream's, and Redis round trips, commands and bytes per turn.

    python bench/chat_turn.py                 # 2000 turns at concurrency 16, as in PERFORMANCE.md
    python bench/chat_turn.py --turns 50      # a quick run
"""

from __future__ import annotations

import argparse
import asyncio

import redis
import requests
from harness import (
    ADMIN_KEY,
    WIDGET_KEY,
    chat_body,
    cpu_seconds,
    fake_upstream,
    openai_body,
    redis_server,
    report,
    service,
    summary_ms,
    timed_gets,
    timed_posts,
)

CHAT_HEADERS = {"X-Widget-Api-Key": WIDGET_KEY}


def latency(url: str, bodies, concurrency: int, headers=None) -> list[float]:
    return asyncio.run(timed_posts(url, bodies, concurrency, headers))


def redis_cost_per_turn(base_url: str, redis_url: str, turns: int) -> dict:
    """Round trips (server read events), commands and bytes stored for turns of one session."""
    client = redis.Redis.from_url(redis_url)
    session = requests.Session()

    def one_turn():
        response = session.post(
            base_url + "/v1/chat", json={"sessionId": "rt", "message": "x" * 100}, headers=CHAT_HEADERS, timeout=30
        )
        response.raise_for_status()
        return response.json()["conversationId"]

    conversation_id = one_turn()  # the session exists from here on
    client.config_resetstat()
    reads_before = client.info("stats")["total_reads_processed"]
    for _ in range(turns):
        one_turn()
    reads = client.info("stats")["total_reads_processed"] - reads_before - 1  # minus the INFO itself
    commands = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in commands.items()}
    calls.pop("info", None)
    calls.pop("config|resetstat", None)
    messages_key = f"ocw:conv:{{{conversation_id}}}:messages"
    stored_messages = client.llen(messages_key)
    return {
        "round_trips_per_turn": round(reads / turns, 2),
        "commands_per_turn": round(sum(calls.values()) / turns, 2),
        "commands": {name: round(count / turns, 2) for name, count in sorted(calls.items())},
        "bytes_per_message": round((client.memory_usage(messages_key) or 0) / stored_messages, 1),
        "message_payload_bytes": 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-samples", type=int, default=500)
    args = parser.parse_args()
    samples = min(args.latency_samples, args.turns)

    with (
        redis_server() as redis_url,
        fake_upstream(tokens=20) as upstream_url,
        service(redis_url, upstream_url) as (base_url, master_pid),
    ):
        chat_url, direct_url = base_url + "/v1/chat", upstream_url + "/chat/completions"
        latency(chat_url, [chat_body(i) for i in range(200)], args.concurrency, CHAT_HEADERS)  # warm up

        cpu_before = cpu_seconds(master_pid)
        latency(chat_url, [chat_body(i) for i in range(args.turns)], args.concurrency, CHAT_HEADERS)
        cpu_ms_per_turn = (cpu_seconds(master_pid) - cpu_before) * 1000 / args.turns
        # The floor: what gunicorn, gevent and Flask cost for a request that does nothing.
        cpu_before = cpu_seconds(master_pid)
        asyncio.run(timed_gets(base_url + "/health", args.turns, args.concurrency))
        cpu_ms_per_health = (cpu_seconds(master_pid) - cpu_before) * 1000 / args.turns

        results = {
            "turns": args.turns,
            "concurrency": args.concurrency,
            "service_cpu_ms_per_turn": round(cpu_ms_per_turn, 3),
            "service_cpu_ms_per_health_request": round(cpu_ms_per_health, 3),
            "latency": {},
        }
        for concurrency in (1, args.concurrency):
            via_service = summary_ms(
                latency(chat_url, [chat_body(i) for i in range(samples)], concurrency, CHAT_HEADERS)
            )
            direct = summary_ms(latency(direct_url, [openai_body(False)] * samples, concurrency))
            results["latency"][f"concurrency_{concurrency}"] = {
                "service": via_service,
                "upstream_direct": direct,
                "added_p50_ms": round(via_service["p50_ms"] - direct["p50_ms"], 2),
                "added_p99_ms": round(via_service["p99_ms"] - direct["p99_ms"], 2),
            }
        results["redis"] = redis_cost_per_turn(base_url, redis_url, min(100, args.turns))
        # Sanity: the service answered every turn it was sent.
        stats = requests.get(
            base_url + "/v1/admin/conversations?limit=1", headers={"X-Admin-Api-Key": ADMIN_KEY}, timeout=10
        )
        results["conversations_stored"] = stats.json()["total"]
    report("chat_turn", results)


if __name__ == "__main__":
    main()
