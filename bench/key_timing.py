"""Does the time of a key check depend on the key presented? A benchmark, not a test.

Times three kinds of wrong key against a configured 24-character key (the shortest allowed):
one that shares its first 23 characters, one that shares nothing, and keys of other lengths,
plus a second all-wrong key as a control: the gap between the two all-wrong keys is the noise
floor of the machine. (A presented key over 55 bytes costs one more SHA-256 block to digest:
that time depends only on what the client sent, never on the configured key.) Two levels:

  ring   auth.KeyRing.accepts, the comparison itself (digests and hmac.compare_digest)
  http   GET /v1/admin/conversations through the WSGI app with a wrong X-Admin-Api-Key: header
         parsing, the key check and the JSON 401 (no Redis is touched before the key check)

Each round times a batch of calls per key, in a fresh random order; the report gives, per key,
the median over rounds of the time per call, and its ratio to the first all-wrong key.

    .venv/bin/python bench/key_timing.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import auth  # noqa: E402
from app import create_app  # noqa: E402

KEY = "wk-3b8f1c9e7a2d4f6b8c0e2"  # 24 characters
OTHER_ROLE_KEY = "ak-9d2f4b6e8a0c2e4f6b8d0a2c"
CANDIDATES = {
    "shares a 23-character prefix": KEY[:23] + "X",
    "all wrong, same length": "Zq7" + "p" * 21,
    "all wrong, same length (control)": "Mx9" + "r" * 21,
    "another length (12)": "y" * 12,
    "another length (64)": "y" * 64,
}


def time_per_call(call: Callable[[str], object], key: str, batch: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(batch):
        call(key)
    return (time.perf_counter_ns() - start) / batch


def measure(call: Callable[[str], object], rounds: int, batch: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    names = list(CANDIDATES)
    for name in names:  # warm-up
        time_per_call(call, CANDIDATES[name], batch)
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            samples[name].append(time_per_call(call, CANDIDATES[name], batch))
    return samples


def report(level: str, samples: dict[str, list[float]]) -> None:
    reference = statistics.median(samples["all wrong, same length"])
    print(f"\n{level}: median ns per call over {len(next(iter(samples.values())))} rounds")
    print("| presented key | median ns | quartiles ns | ratio to all wrong |")
    print("|---|---:|---:|---:|")
    for name, values in samples.items():
        q1, median, q3 = statistics.quantiles(values, n=4)
        print(f"| {name} | {median:.0f} | {q1:.0f}-{q3:.0f} | {median / reference:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="rounds of the ring level; http runs a quarter")
    args = parser.parse_args()

    ring = auth.KeyRing([KEY])
    report("ring (KeyRing.accepts)", measure(ring.accepts, args.rounds, batch=2000))

    app = create_app(
        {
            "APP_ENV": "production",
            "WIDGET_API_KEY": OTHER_ROLE_KEY,
            "ADMIN_API_KEY": KEY,
            "OPENAI_API_KEY": "unused",
            "REDIS_URL": "redis://127.0.0.1:9/0",  # never reached: the key check comes first
            "CORS_ORIGIN": "https://example.com",
        }
    )
    app.logger.setLevel(logging.ERROR)  # one 401 warning per call would measure the log
    client = app.test_client()

    def admin_request(key: str) -> None:
        response = client.get("/v1/admin/conversations", headers={"X-Admin-Api-Key": key})
        assert response.status_code == 401

    report("http (GET /v1/admin/conversations, wrong admin key)", measure(admin_request, args.rounds // 4, batch=100))


if __name__ == "__main__":
    main()
