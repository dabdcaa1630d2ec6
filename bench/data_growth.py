"""Cost as data grows: admin listing at 1 000, 100 000 and 1 000 000 conversations, and a chat
turn in a conversation of 10 vs 10 000 messages.

    python bench/data_growth.py                              # as in PERFORMANCE.md
    python bench/data_growth.py --sizes 100 1000 --long 500  # a quick run

Conversations are seeded straight into Redis through storage.py (pipelined appends), then
timed through the running service over HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import requests
from harness import ADMIN_KEY, WIDGET_KEY, fake_upstream, redis_server, report, service, summary_ms, timed_posts

import storage  # noqa: E402  (harness puts the project on sys.path)

BATCH = 1000


def seed_conversations(store: storage.Storage, start: int, stop: int) -> None:
    """Conversations start..stop-1, each a session mapping and one user message."""
    for first in range(start, stop, BATCH):
        pipe = store.client.pipeline(transaction=False)
        for i in range(first, min(first + BATCH, stop)):
            session_id, conversation_id = f"seed-{i}", f"seed{i:08d}"
            pipe.set(store.keys.session(session_id), conversation_id)
            store.conversations.append_message(
                conversation_id, session_id, "user", f"question number {i}", pipeline=pipe
            )
        pipe.execute()


def seed_long_conversation(store: storage.Storage, session_id: str, messages: int) -> None:
    """One session's conversation of `messages` alternating user and assistant messages."""
    conversation_id = store.conversations.id_for_session(session_id)
    for first in range(0, messages, BATCH):
        pipe = store.client.pipeline(transaction=False)
        for i in range(first, min(first + BATCH, messages)):
            role = "user" if i % 2 == 0 else "assistant"
            store.conversations.append_message(
                conversation_id, session_id, role, f"message {i} " + "x" * 80, pipeline=pipe
            )
        pipe.execute()


def get_latencies(url: str, samples: int, headers: dict) -> list[float]:
    session = requests.Session()
    latencies = []
    for _ in range(samples):
        started = time.perf_counter()
        response = session.get(url, headers=headers, timeout=30)
        response.raise_for_status()
        latencies.append(time.perf_counter() - started)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--short", type=int, default=10, help="messages in the short conversation")
    parser.add_argument("--long", type=int, default=10_000, help="messages in the long conversation")
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    admin = {"X-Admin-Api-Key": ADMIN_KEY}

    with (
        redis_server() as redis_url,
        fake_upstream(tokens=20) as upstream_url,
        service(redis_url, upstream_url) as (base_url, _),
    ):
        store = storage.Storage(storage.connect(redis_url), "ocw")
        listing, seeded = {}, 0
        for size in sorted(args.sizes):
            started = time.perf_counter()
            seed_conversations(store, seeded, size)
            seeded = size
            seconds = time.perf_counter() - started
            page = get_latencies(base_url + "/v1/admin/conversations?limit=100", args.samples, admin)
            total = requests.get(base_url + "/v1/admin/conversations?limit=1", headers=admin, timeout=30).json()[
                "total"
            ]
            assert total == size, (total, size)
            listing[str(size)] = {**summary_ms(page), "seed_seconds": round(seconds, 1)}

        smallest, largest = str(min(args.sizes)), str(max(args.sizes))
        # Each short conversation gets one turn, so it stays short; the long one takes every
        # turn and only grows (10 000 -> 10 000 + 2 x samples messages).
        short_sessions = [f"growth-short-{i}" for i in range(args.samples)]
        for session_id in short_sessions:
            seed_long_conversation(store, session_id, args.short)
        seed_long_conversation(store, "growth-long", args.long)
        # The two kinds of turn alternate, so both see the same machine: measured one after the
        # other, a drift in this shared VM's speed would show up as a difference between them.
        bodies = [
            {"sessionId": session_id, "message": "How do I reset my password?"}
            for short_session in short_sessions
            for session_id in (short_session, "growth-long")
        ]
        latencies = asyncio.run(timed_posts(base_url + "/v1/chat", bodies, 1, {"X-Widget-Api-Key": WIDGET_KEY}))
        turns_by_length = {
            f"{args.short}_messages": summary_ms(latencies[0::2]),
            f"{args.long}_messages": summary_ms(latencies[1::2]),
        }
        short_p50 = turns_by_length[f"{args.short}_messages"]["p50_ms"]
        long_p50 = turns_by_length[f"{args.long}_messages"]["p50_ms"]
    report(
        "data_growth",
        {
            "listing_limit_100": listing,
            "listing_p50_ratio_largest_to_smallest": round(listing[largest]["p50_ms"] / listing[smallest]["p50_ms"], 3),
            "chat_turn": turns_by_length,
            "chat_turn_p50_ratio_long_to_short": round(long_p50 / short_p50, 3),
        },
    )


if __name__ == "__main__":
    main()
