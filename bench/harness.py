"""What every benchmark needs: its own Redis, the fast fake upstream, gunicorn started as the
Procfile says, CPU and memory read from /proc, and an asyncio load generator.

The load generator runs in the benchmark's process; the service runs in gunicorn's processes,
so the CPU figures read from /proc are the service's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import embedded_redis  # noqa: E402

WIDGET_KEY = "bench-widget-key-0123456789abcdef"
ADMIN_KEY = "bench-admin-key-0123456789abcdefgh"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for a benchmark process")


@contextlib.contextmanager
def redis_server():
    """A redis-server of the benchmark's own; yields its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [
                embedded_redis.server_binary(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: redis.Redis(port=port).ping())
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.kill()
            process.wait()


@contextlib.contextmanager
def fake_upstream(ttft_ms=0.0, tokens=20, tokens_per_second=0.0):
    """bench/fake_upstream.py in its own process; yields its base URL (…/v1)."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "fake_upstream.py"),
            "--port",
            str(port),
            "--ttft-ms",
            str(ttft_ms),
            "--tokens",
            str(tokens),
            "--tokens-per-second",
            str(tokens_per_second),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.kill()
        process.wait()


@contextlib.contextmanager
def service(redis_url: str, upstream_url: str, **env):
    """gunicorn started with the Procfile's command; yields (base URL, master pid)."""
    port = free_port()
    command = (ROOT / "Procfile").read_text().split("web:", 1)[1].strip()
    full_env = {
        **os.environ,
        "PORT": str(port),
        "APP_ENV": "production",
        "WIDGET_API_KEY": WIDGET_KEY,
        "ADMIN_API_KEY": ADMIN_KEY,
        "SECRET_KEY": "bench-secret-key-signs-dashboard-sessions",
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": upstream_url,
        "REDIS_URL": redis_url,
        "RATE_LIMIT_MAX_REQUESTS": "100000000",
        "SESSION_MAX_MESSAGES": "100000000",
        "CLIENT_MAX_OPEN_REQUESTS": "0",  # the load generator is one client address for thousands of streams
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        **env,
    }
    process = subprocess.Popen(
        shlex.split(command), cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import requests

        wait_for(lambda: requests.get(url + "/ready", timeout=1).status_code == 200)
        workers = int(full_env.get("WEB_CONCURRENCY", "2"))
        wait_for(lambda: len(process_tree(process.pid)) == workers + 1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def process_tree(pid: int) -> list[int]:
    """pid and its direct children (gunicorn's master and workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def cpu_seconds(pid: int) -> float:
    """user+sys CPU time of a process and its direct children, from /proc."""
    total = 0
    for each in process_tree(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and its direct children, from /proc."""
    return sum(int(Path(f"/proc/{each}/statm").read_text().split()[1]) * PAGE_SIZE for each in process_tree(pid))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary_ms(seconds: list[float]) -> dict:
    return {"p50_ms": round(statistics.median(seconds) * 1000, 2), "p99_ms": round(percentile(seconds, 0.99) * 1000, 2)}


def chat_body(i: int) -> dict:
    return {"sessionId": f"bench-{i % 500}", "message": "How do I reset my password?"}


def openai_body(stream: bool) -> dict:
    return {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "How do I reset my password?"}]}


async def timed_posts(url: str, bodies, concurrency: int, headers: dict | None = None) -> list[float]:
    """POST each body with `concurrency` requests in flight; return each latency in seconds."""
    latencies: list[float] = []
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers or {}) as session:

        async def worker():
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                async with session.post(url, json=body) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def timed_gets(url: str, count: int, concurrency: int) -> None:
    """GET url count times with `concurrency` requests in flight."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(share: int):
            for _ in range(share):
                async with session.get(url) as response:
                    await response.read()

        await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))


def report(name: str, results: dict) -> None:
    """Print the results as one JSON object (the tests read it; docs/PERFORMANCE.md quotes it)."""
    print(json.dumps({"benchmark": name, **results}, indent=2))
