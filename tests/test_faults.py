"""Faults against `gunicorn wsgi:app` (the Procfile's settings, several workers): Redis killed
under load and restarted, a misbehaving model upstream, clients that leave mid-stream.

Each test prints what it measured (run with `-rP` to see it); docs/RELIABILITY.md records the
figures. Assertions are about facts, not durations, so a slow machine cannot fail them.
"""

from __future__ import annotations

import json
import signal
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

from tests.integrity import assert_replies_answer_their_question, stored_thread
from tests.support import WIDGET_KEY, RedisServer, rss_kib, tcp_connections, wait_until

CHAT = {"X-Widget-Api-Key": WIDGET_KEY}
UNAVAILABLE = {"error": "Storage unavailable"}
OUTAGE_SECONDS = 3.0  # long enough for every worker's pooled connections to have failed
RSS_GROWTH_LIMIT_KIB = 8 * 1024  # a leak of one reply buffer or greenlet per stream would pass this


@dataclass
class Turn:
    """One chat request of the load and how it ended."""

    session: str
    message: str
    started: float
    ended: float
    outcome: str  # "reply" (acknowledged), "unavailable" (JSON 503), "error line", or "broken: ..."
    reply: str | None = None


def send_turn(url: str, route: str, session: str, message: str) -> tuple[str, str | None]:
    """(outcome, reply) of one turn, on a fresh connection so turns spread over the workers."""
    try:
        response = requests.post(url + route, json={"sessionId": session, "message": message}, headers=CHAT, timeout=30)
    except requests.RequestException as exc:
        return f"broken: {type(exc).__name__}", None
    if response.status_code == 503 and response.json() == UNAVAILABLE:
        return "unavailable", None
    if response.status_code != 200:
        return f"broken: {response.status_code} {response.text[:200]}", None
    if route == "/v1/chat":
        return "reply", response.json()["message"]
    events = [json.loads(line) for line in response.text.splitlines()]
    if events[0]["type"] != "start":
        return f"broken: stream began with {events[0]}", None
    if events[-1]["type"] == "done":
        return "reply", events[-1]["message"]
    if events[-1] == {"type": "error", "error": "Storage unavailable"}:
        return "error line", None
    return f"broken: stream ended with {events[-1]}", None


class ChatLoad:
    """Client threads, each holding one session and sending turns back to back until stopped.

    Even clients use `/v1/chat`, odd ones `/v1/chat/stream`.
    """

    def __init__(self, url: str, clients: int):
        self.url = url
        self.turns: list[Turn] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(c,)) for c in range(clients)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _client(self, number: int):
        route = ("/v1/chat", "/v1/chat/stream")[number % 2]
        session = f"load-{number}"
        turn = 0
        while not self._stop.is_set():
            message = f"{session} turn {turn}"
            started = time.monotonic()
            outcome, reply = send_turn(self.url, route, session, message)
            self.turns.append(Turn(session, message, started, time.monotonic(), outcome, reply))
            turn += 1

    def count(self, outcome: str, after: float = 0.0) -> int:
        return sum(1 for t in self.turns if t.outcome == outcome and t.started > after)


def test_redis_outage_answers_json_503_then_recovers_and_loses_no_acknowledged_reply(
    start_gunicorn, upstream, tmp_path
):
    (tmp_path / "aof").mkdir()
    redis_server = RedisServer(tmp_path / "aof", "--appendonly", "yes", "--appendfsync", "always")
    upstream.echo = True
    try:
        server = start_gunicorn(REDIS_URL=redis_server.url, WEB_CONCURRENCY="3", RATE_LIMIT_MAX_REQUESTS="100000")
        workers = server.worker_pids()
        with ChatLoad(server.url, clients=12) as load:
            assert wait_until(lambda: load.count("reply") >= 60, timeout=30)
            redis_server.stop()
            killed = time.monotonic()
            assert wait_until(lambda: load.count("unavailable", after=killed) >= 30, timeout=30)
            time.sleep(max(0.0, killed + OUTAGE_SECONDS - time.monotonic()))
            restarting = time.monotonic()
            redis_server.start()  # same port and directory: the append-only file is reloaded
            back = time.monotonic()  # Redis answers PING from here on
            assert wait_until(lambda: load.count("reply", after=back) >= 60, timeout=30)

        broken = [t for t in load.turns if t.outcome.startswith("broken")]
        assert broken == [], broken[:5]
        during = [t for t in load.turns if killed < t.started and t.ended < restarting]
        assert during and {t.outcome for t in during} == {"unavailable"}, [
            t for t in during if t.outcome != "unavailable"
        ]
        after = [t for t in load.turns if t.started > back]
        assert [t for t in after if t.outcome != "reply"] == [], "requests failed after Redis was back"
        assert server.worker_pids() == workers, "a worker was lost"

        client = redis_server.client()
        for session in {t.session for t in load.turns}:
            _, messages = stored_thread(client, session)
            assert_replies_answer_their_question(messages)
            stored = [(m["role"], m["content"]) for m in messages]
            acknowledged = [t for t in load.turns if t.session == session and t.outcome == "reply"]
            for turn in acknowledged:
                assert ("user", turn.message) in stored and ("assistant", turn.reply) in stored, turn

        first_reply = min(t.ended for t in after if t.outcome == "reply") - back
        last_failure = max((t.ended for t in load.turns if t.outcome != "reply"), default=back) - back
        waits = [t.ended - t.started for t in during]
        print(
            f"turns={len(load.turns)} acknowledged={load.count('reply')} "
            f"json503={load.count('unavailable')} error_lines={load.count('error line')} "
            f"outage={restarting - killed:.2f}s answers_during_outage={len(during)} "
            f"503_latency_median={statistics.median(waits):.3f}s max={max(waits):.3f}s "
            f"first_reply_after_restart={first_reply:.3f}s last_failure_ended={last_failure:+.3f}s"
        )
    finally:
        redis_server.stop()


def test_frozen_redis_answers_json_503_within_the_socket_timeout_and_thaws_without_a_restart(start_gunicorn, tmp_path):
    (tmp_path / "frozen").mkdir()
    redis_server = RedisServer(tmp_path / "frozen")
    try:
        server = start_gunicorn(REDIS_URL=redis_server.url, WEB_CONCURRENCY="2")
        assert send_turn(server.url, "/v1/chat", "frozen", "before")[0] == "reply"
        redis_server.process.send_signal(signal.SIGSTOP)  # up, but silent: a network partition
        started = time.monotonic()
        # The client's 30 s timeout is six times the service's 5 s Redis socket timeout: a
        # "broken: ReadTimeout" here means a hang that no timeout of the service bounds.
        assert send_turn(server.url, "/v1/chat", "frozen", "while frozen") == ("unavailable", None)
        waited = time.monotonic() - started
        assert requests.get(server.url + "/health", timeout=5).status_code == 200
        redis_server.process.send_signal(signal.SIGCONT)
        assert send_turn(server.url, "/v1/chat", "frozen", "after")[0] == "reply"
        print(f"json503_after={waited:.2f}s")
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
        redis_server.stop()


# (name, fake upstream settings, what /v1/chat answers, what the stream's last line is)
# (name, test upstream attributes, /v1/chat status, last stream line type)
UPSTREAM_FAULTS: list[tuple[str, dict, int, str]] = [
    ("HTTP 500", {"fault": "status", "status": 500}, 502, "error"),
    ("HTTP 429", {"fault": "status", "status": 429}, 503, "error"),
    ("hang before answering", {"fault": "hang"}, 504, "error"),
    ("connection cut mid-reply", {"fault": "cut"}, 502, "error"),
    # A whole body that is not JSON is unreadable; a stream line that is not JSON is skipped.
    ("malformed lines", {"fault": "malformed"}, 502, "done"),
    ("stream without [DONE]", {"fault": "no_done"}, 200, "error"),
    ("slow drip within the timeout", {"token_delay": 0.3}, 200, "done"),
    ("drip slower than the timeout", {"token_delay": 1.2}, 504, "error"),
]


def test_every_upstream_fault_ends_in_a_well_formed_answer_and_keeps_the_user_message(
    start_gunicorn, upstream, redis_client
):
    # LLM_TIMEOUT_SECONDS bounds each silence; heartbeats show the drip to the client as pings.
    server = start_gunicorn(LLM_TIMEOUT_SECONDS="0.8", STREAM_HEARTBEAT_SECONDS="0.2", WEB_CONCURRENCY="2")
    workers = server.worker_pids()
    figures = []
    for name, settings, chat_status, last_line in UPSTREAM_FAULTS:
        upstream.reset()
        upstream.reply = "one two three four five"
        for attribute, value in settings.items():
            setattr(upstream, attribute, value)

        session = "fault-" + name.replace(" ", "-").replace("[", "").replace("]", "")
        started = time.monotonic()
        answer = requests.post(
            server.url + "/v1/chat", json={"sessionId": session, "message": f"{name} (json)"}, headers=CHAT, timeout=30
        )
        answered = time.monotonic()
        assert answer.status_code == chat_status, name
        if chat_status != 200:
            assert set(answer.json()) == {"error"} and answer.json()["error"], name

        streamed = requests.post(
            server.url + "/v1/chat/stream",
            json={"sessionId": session, "message": f"{name} (stream)"},
            headers=CHAT,
            timeout=30,
        )
        assert streamed.status_code == 200, name
        events = [json.loads(line) for line in streamed.text.splitlines()]
        assert events[0]["type"] == "start" and events[-1]["type"] == last_line, (name, events)
        assert all(e["type"] in ("token", "ping") for e in events[1:-1]), (name, events)
        figures.append(
            f"{name}: {chat_status} in {answered - started:.2f}s, stream {last_line} "
            f"in {time.monotonic() - answered:.2f}s"
        )

        _, messages = stored_thread(redis_client, session)
        users = [m["content"] for m in messages if m["role"] == "user"]
        assert users == [f"{name} (json)", f"{name} (stream)"], name
        partial = "".join(e.get("token", "") for e in events).strip()
        if last_line == "error" and partial:
            assert messages[-1] == dict(messages[-1], role="assistant", content=partial, interrupted=True), name
    upstream.release.set()
    assert server.worker_pids() == workers, "a worker was lost"
    print("; ".join(figures))


def leave_mid_stream(url: str, session: str, tokens: int = 3) -> float:
    """Open a stream on a raw socket, read `tokens` tokens, close like a closed tab; return when."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"sessionId": session, "message": session})
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"POST /v1/chat/stream HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"X-Widget-Api-Key: {WIDGET_KEY}\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
        )
        received = b""
        while received.count(b'"type": "token"') < tokens:
            chunk = sock.recv(4096)
            assert chunk, f"the stream ended early: {received!r}"
            received += chunk
        return time.monotonic()


def test_200_clients_leaving_mid_stream_close_upstream_and_leave_memory_and_sockets_flat(
    start_gunicorn, upstream, redis_client
):
    server = start_gunicorn(WEB_CONCURRENCY="2")
    workers = server.worker_pids()
    upstream.token_delay = 0.02  # a 300-word reply would take 6 s: nobody waits for it
    upstream.reply = " ".join(f"w{i}" for i in range(300))
    rounds, per_round = 10, 20
    closed: dict[str, float] = {}

    def run_round(number: int):
        sessions = [f"leaver-{number}-{i}" for i in range(per_round)]
        with ThreadPoolExecutor(max_workers=per_round) as pool:
            closed.update(zip(sessions, pool.map(lambda s: leave_mid_stream(server.url, s), sessions), strict=True))
        assert wait_until(lambda: {m for _, m in upstream.hangups} >= set(sessions), timeout=10), (
            "upstream kept streaming"
        )
        for session in sessions:
            assert wait_until(lambda session=session: len(stored_thread(redis_client, session)[1]) == 2, timeout=10), (
                session
            )

    def footprint():
        """Per worker: resident KiB, and its TCP connections to clients, to the upstream, to Redis."""
        result = {}
        for pid in workers:
            peers = tcp_connections(pid)
            result[pid] = (
                rss_kib(pid),
                sum(local == server.port for local, _ in peers),
                sum(remote == upstream.port for _, remote in peers),
                sum(remote == redis_port for _, remote in peers),
            )
        return result

    redis_port = int(redis_client.connection_pool.connection_kwargs["port"])
    run_round(-1)  # warm-up: imports, connection pools and caches reach their working size
    upstream.hangups.clear()
    before = footprint()
    for number in range(rounds):
        run_round(number)
    after = footprint()

    assert len(upstream.hangups) == rounds * per_round
    assert upstream.finished_streams == 0
    for session in closed:
        if session.startswith("leaver--1"):
            continue
        user, reply = stored_thread(redis_client, session)[1]
        assert user["content"] == session
        assert reply["interrupted"] is True and reply["content"].startswith("w0 w1 w2"), reply
    assert server.worker_pids() == workers, "a worker was lost"
    for pid in workers:
        rss_before, *_ = before[pid]
        rss_after, clients, upstreams, redis_connections = after[pid]
        assert (clients, upstreams) == (0, 0), f"worker {pid} kept connections open: {after[pid]}"
        # Pooled Redis connections grow with concurrency (20 at most), not with the count of streams.
        assert redis_connections <= per_round, f"worker {pid}: {before[pid]} -> {after[pid]}"
        assert rss_after - rss_before < RSS_GROWTH_LIMIT_KIB, f"worker {pid} grew {rss_after - rss_before} KiB"

    delays = sorted(hung - closed[message] for hung, message in upstream.hangups)
    print(
        f"disconnects={len(delays)} upstream_closed_after median={statistics.median(delays) * 1000:.0f}ms "
        f"p95={delays[int(len(delays) * 0.95)] * 1000:.0f}ms max={delays[-1] * 1000:.0f}ms; per worker "
        "(rss KiB, client/upstream/redis connections) before -> after: "
        + ", ".join(f"{before[pid]} -> {after[pid]}" for pid in workers)
    )
