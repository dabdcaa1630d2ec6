"""Knowledge documents: what retrieval adds to a chat turn at 100, 1,000 and 10,000 chunks, the
worker's memory for its search index, the ingestion rate, and how long ingesting a 2 MB document
or rebuilding the index keeps the worker from answering anything else.

    python bench/knowledge_retrieval.py                         # as in docs/PERFORMANCE.md
    python bench/knowledge_retrieval.py --sizes 100 --turns 50  # a quick run

One gunicorn worker (WEB_CONCURRENCY=1), so the worker measured is the one that searches.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import time

import requests
from harness import ADMIN_KEY, WIDGET_KEY, fake_upstream, process_tree, redis_server, report, rss_bytes, service

CHAT = {"X-Widget-Api-Key": WIDGET_KEY}
ADMIN = {"X-Admin-Api-Key": ADMIN_KEY}
CHUNKS_PER_DOCUMENT = 100
SECTION_WORDS = 120  # about 800 characters: one section is one chunk
VOCABULARY = [f"term{i}" for i in range(5000)] + (
    "refund shipping warranty price delivery kettle blender return order account password invoice "
    "subscription cancel upgrade discount coupon address payment card store opening hours"
).split()


def document(rng: random.Random, sections: int, words: int = SECTION_WORDS) -> str:
    """Markdown of `sections` headed sections of random words."""
    return "\n\n".join(
        f"## Section {n}\n\n" + " ".join(rng.choice(VOCABULARY) for _ in range(words)) for n in range(sections)
    )


def put(session: requests.Session, base: str, document_id: str, content: str) -> int:
    body = json.dumps({"title": document_id, "content": content}).encode()
    response = session.put(f"{base}/v1/admin/knowledge/{document_id}", data=body, headers=ADMIN)
    response.raise_for_status()
    return response.json()["chunks"]


def turn_latencies(session: requests.Session, base: str, rng: random.Random, turns: int) -> list[float]:
    latencies = []
    for i in range(turns):
        message = " ".join(rng.choice(VOCABULARY) for _ in range(8))
        started = time.perf_counter()
        response = session.post(f"{base}/v1/chat", json={"sessionId": f"k-{i}", "message": message}, headers=CHAT)
        latencies.append(time.perf_counter() - started)
        response.raise_for_status()
    return latencies


def worker_rss_mb(master_pid: int) -> float:
    (worker,) = process_tree(master_pid)[1:]
    return rss_bytes(worker) / 2**20  # the worker alone: it has no children


def probe(base: str, done, slowest) -> None:
    """Ask /health every 2 ms until done is set; keep the slowest answer's seconds in slowest."""
    with requests.Session() as session:
        while not done.is_set():
            started = time.perf_counter()
            session.get(base + "/health", timeout=30)
            slowest.value = max(slowest.value, time.perf_counter() - started)
            time.sleep(0.002)


def longest_stall_ms(base: str, work) -> tuple[float, float]:
    """(the slowest /health answer while work() runs, work's duration), both in ms: /health is
    asked every 2 ms from a process of its own (so this one's work does not slow its asking),
    and its slowest answer is the longest time the worker could not answer anything."""
    done, slowest = multiprocessing.Event(), multiprocessing.Value("d", 0.0)
    prober = multiprocessing.Process(target=probe, args=(base, done, slowest))
    prober.start()
    time.sleep(0.3)
    started = time.perf_counter()
    work()
    duration = time.perf_counter() - started
    done.set()
    prober.join()
    return round(slowest.value * 1000, 1), round(duration * 1000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--big-document-mb", type=float, default=2.0, help="ingested while /health is timed")
    args = parser.parse_args()
    rng = random.Random(7)
    results: dict = {"turns_per_size": args.turns, "sizes": {}}
    with redis_server() as redis_url, fake_upstream() as upstream_url:
        with service(redis_url, upstream_url, WEB_CONCURRENCY="1") as (base, master_pid):
            session = requests.Session()
            turn_latencies(session, base, rng, 20)  # warm up
            baseline = statistics.median(turn_latencies(session, base, rng, args.turns))
            rss_before = worker_rss_mb(master_pid)
            results["no_documents"] = {"turn_p50_ms": round(baseline * 1000, 2), "worker_rss_mb": round(rss_before, 1)}
            stored = 0
            for size in sorted(args.sizes):
                started, characters, before = time.perf_counter(), 0, stored
                while stored < size:
                    content = document(rng, CHUNKS_PER_DOCUMENT)
                    characters += len(content)
                    stored += put(session, base, f"doc-{stored // CHUNKS_PER_DOCUMENT}", content)
                ingestion = time.perf_counter() - started
                rebuild_stall, rebuild_ms = longest_stall_ms(base, lambda: turn_latencies(session, base, rng, 1))
                p50 = statistics.median(turn_latencies(session, base, rng, args.turns))
                results["sizes"][str(stored)] = {
                    "turn_p50_ms": round(p50 * 1000, 2),
                    "added_p50_ms": round((p50 - baseline) * 1000, 2),
                    "first_turn_with_index_rebuild_ms": rebuild_ms,
                    "longest_health_answer_during_rebuild_ms": rebuild_stall,
                    "worker_rss_mb": round(worker_rss_mb(master_pid), 1),
                    "worker_rss_added_mb": round(worker_rss_mb(master_pid) - rss_before, 1),
                    "ingestion_chunks_per_second": round((stored - before) / ingestion),
                    "ingestion_mb_per_second": round(characters / 2**20 / ingestion, 2),
                }
            size = int(args.big_document_mb * 2**20) - 1024  # 2 MB: about 2,600 chunks
            big = document(rng, size // 700 + 1)[:size]
            stall, duration = longest_stall_ms(base, lambda: put(session, base, "big", big))
            idle, _ = longest_stall_ms(base, lambda: time.sleep(1))
            results["ingest_big_document"] = {
                "document_mb": round(len(big) / 2**20, 2),
                "duration_ms": duration,
                "longest_health_answer_ms": stall,
                "longest_health_answer_idle_ms": idle,
            }
    report("knowledge", results)


if __name__ == "__main__":
    main()
