"""Every benchmark script runs end to end on a tiny size and reports its figures.

The figures themselves are measured by running the scripts (see docs/PERFORMANCE.md), never
asserted here: these machines are shared and timings are noisy.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import ROOT, require_chromium

TINY = {
    "chat_turn": ["--turns", "40", "--concurrency", "4", "--latency-samples", "20"],
    "streaming": ["--streams", "5", "--tokens", "20", "--ttft-samples", "3"],
    "capacity": ["--streams", "10", "--seconds", "1.5"],
    "data_growth": ["--sizes", "50", "200", "--short", "4", "--long", "40", "--samples", "5"],
    "knowledge_retrieval": ["--sizes", "100", "--turns", "10", "--big-document-mb", "0.1"],
    "knowledge_quality": [],
    "widget_render": ["--runs", "1", "--sizes", "300", "--tokens-per-second", "1000"],
}


def run(script: str) -> dict:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{script}.py"), *TINY[script]],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def test_chat_turn_benchmark_reports_cpu_latency_and_redis_cost():
    figures = run("chat_turn")
    assert figures["conversations_stored"] > 0 and figures["service_cpu_ms_per_turn"] > 0
    for concurrency in ("concurrency_1", "concurrency_4"):
        assert {"service", "upstream_direct", "added_p50_ms"} <= set(figures["latency"][concurrency])
    assert figures["redis"]["round_trips_per_turn"] > 0 and figures["redis"]["bytes_per_message"] > 0


def test_streaming_benchmark_relays_every_token():
    figures = run("streaming")
    assert figures["tokens_relayed"] == 5 * 20
    assert figures["service_cpu_us_per_token"] > 0 and "added_p50_ms" in figures["time_to_first_token"]


def test_capacity_benchmark_holds_every_stream_to_the_end():
    figures = run("capacity")
    assert figures["service"]["streams_finished"] == figures["upstream_direct"]["streams_finished"] == 10
    assert figures["peak_rss_mb"] > 0


def test_data_growth_benchmark_seeds_and_times_each_size():
    figures = run("data_growth")
    assert set(figures["listing_limit_100"]) == {"50", "200"}
    assert set(figures["chat_turn"]) == {"4_messages", "40_messages"}


def test_knowledge_retrieval_benchmark_reports_added_latency_memory_and_ingestion():
    figures = run("knowledge_retrieval")
    (size,) = figures["sizes"].values()
    assert size["worker_rss_mb"] > 0 and size["ingestion_chunks_per_second"] > 0 and "added_p50_ms" in size
    assert figures["ingest_big_document"]["longest_health_answer_ms"] > 0


def test_knowledge_quality_benchmark_reports_hit_rates_for_every_ranking():
    figures = run("knowledge_quality")
    assert set(figures["hit_rate_at_k"]) == {"lexical", "embeddings", "hybrid"}
    assert all(0 <= rate <= 1 for rates in figures["hit_rate_at_k"].values() for rate in rates.values())
    assert figures["questions"] == 32 and figures["chunks"] > figures["documents"]


def test_widget_render_benchmark_measures_both_widgets_drawing_a_streamed_reply():
    require_chromium()
    figures = run("widget_render")
    assert [(row["widget"], row["reply_chars"]) for row in figures["rows"]] == [
        ("plain text (before)", 300),
        ("markdown (now)", 300),
    ]
    assert all(row["TaskDuration"] > 0 and row["tokens"] == 75 for row in figures["rows"])
