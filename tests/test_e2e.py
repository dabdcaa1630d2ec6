"""End to end: `gunicorn wsgi:app` with the Procfile's settings, several workers, real sockets."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.fake_upstream import FakeUpstream
from tests.integrity import assert_replies_answer_their_question, stored_thread
from tests.support import ADMIN_KEY, WIDGET_KEY, wait_until

CHAT = {"X-Widget-Api-Key": WIDGET_KEY}
ADMIN = {"X-Admin-Api-Key": ADMIN_KEY}


def open_stream(url, session="e2e", message="hello"):
    return requests.post(
        url + "/v1/chat/stream", json={"sessionId": session, "message": message}, headers=CHAT, stream=True, timeout=30
    )


def thread_of(url, session):
    listing = requests.get(url + "/v1/admin/conversations", headers=ADMIN, timeout=10).json()
    (summary,) = [c for c in listing["conversations"] if c["sessionId"] == session]
    return requests.get(url + f"/v1/admin/conversations/{summary['_id']}", headers=ADMIN, timeout=10).json()


def test_stream_lines_reach_the_client_while_upstream_is_still_producing(start_gunicorn, upstream):
    server = start_gunicorn()
    upstream.reply = "one two three four five six"
    upstream.token_delay = 0.3
    with open_stream(server.url) as response:
        assert response.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
        lines = response.iter_lines()
        assert json.loads(next(lines))["type"] == "start"
        first_token = json.loads(next(lines))
        assert first_token == {"type": "token", "token": "one"}
        assert upstream.finished_streams == 0, "the first token waited for the whole reply"
        rest = [json.loads(line) for line in lines]
    assert rest[-1]["type"] == "done" and rest[-1]["message"] == "one two three four five six"
    assert upstream.finished_streams == 1


def test_one_worker_holds_many_streams_at_once(start_gunicorn, upstream):
    server = start_gunicorn(WEB_CONCURRENCY="1")
    upstream.reply = "a b c d e"
    upstream.token_delay = 0.4
    streams = [open_stream(server.url, session=f"many-{i}") for i in range(20)]
    try:
        starts = [json.loads(next(s.iter_lines())) for s in streams]
        # Every stream has started before any upstream reply finished: they run side by side.
        assert all(event["type"] == "start" for event in starts)
        assert upstream.finished_streams == 0
    finally:
        for stream in streams:
            stream.close()


def chat_statuses(urls, count, headers=CHAT, forwarded_for=lambda i: None) -> list[int]:
    """Statuses of `count` simultaneous chat requests spread round-robin over urls.

    Each request has a fresh connection, so requests also spread over each server's workers.
    """

    def one(i):
        extra = {"X-Forwarded-For": forwarded_for(i)} if forwarded_for(i) else {}
        with requests.Session() as session:
            return session.post(
                urls[i % len(urls)] + "/v1/chat",
                json={"sessionId": f"rl-{i}", "message": "hi"},
                headers={**headers, **extra},
                timeout=30,
            ).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(count)))


def test_rate_limit_is_exact_across_workers(start_gunicorn, upstream):
    server = start_gunicorn(WEB_CONCURRENCY="4", RATE_LIMIT_MAX_REQUESTS="25")
    statuses = chat_statuses([server.url], 60)
    assert statuses.count(200) == 25
    assert statuses.count(429) == 35


def test_rate_limit_is_exact_across_two_instances_on_one_redis(start_gunicorn, upstream):
    instances = [start_gunicorn(WEB_CONCURRENCY="2", RATE_LIMIT_MAX_REQUESTS="25") for _ in range(2)]
    statuses = chat_statuses([server.url for server in instances], 60)
    assert statuses.count(200) == 25
    assert statuses.count(429) == 35


def test_forged_x_forwarded_for_does_not_dodge_the_limit_without_trusted_proxies(start_gunicorn, upstream):
    server = start_gunicorn(TRUSTED_PROXY_COUNT="0", RATE_LIMIT_MAX_REQUESTS="10")
    statuses = chat_statuses([server.url], 30, forwarded_for=lambda i: f"198.51.100.{i}")
    assert statuses.count(200) == 10 and statuses.count(429) == 20


def test_with_one_trusted_proxy_the_hop_it_appended_is_the_client(start_gunicorn, upstream, redis_client):
    server = start_gunicorn(TRUSTED_PROXY_COUNT="1", RATE_LIMIT_MAX_REQUESTS="10")
    # One client forges a new left-hand address each time; the proxy appends its real one.
    statuses = chat_statuses([server.url], 30, forwarded_for=lambda i: f"198.51.100.{i}, 203.0.113.7")
    assert statuses.count(200) == 10 and statuses.count(429) == 20
    limiter_keys = {key for key in redis_client.keys("*") if ":{admission}:ip:" in key}
    assert limiter_keys == {"ocw:{admission}:ip:203.0.113.7"}


def test_limiter_keys_expire_so_redis_does_not_grow_with_the_number_of_ips(start_gunicorn, upstream, redis_client):
    server = start_gunicorn(TRUSTED_PROXY_COUNT="1", RATE_LIMIT_WINDOW_MS="1000")
    # Keyless requests: counted by the limiter, then refused.
    statuses = chat_statuses([server.url], 300, headers={}, forwarded_for=lambda i: f"10.9.{i // 250}.{i % 250}")
    assert statuses == [401] * 300

    def limiter_keys():
        return len(redis_client.keys("ocw:{admission}:ip:*"))

    held = limiter_keys()
    assert 0 < held <= 300
    sent = time.monotonic()
    assert wait_until(lambda: limiter_keys() == 0, timeout=15), limiter_keys()
    print(f"limiter keys held={held}, all reclaimed {time.monotonic() - sent:.2f}s after the last request")


def test_client_disconnect_closes_upstream_and_stores_partial_reply_as_interrupted(start_gunicorn, upstream):
    server = start_gunicorn()
    upstream.reply = " ".join(f"w{i}" for i in range(300))
    upstream.token_delay = 0.03
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"sessionId": "leaver", "message": "tell me everything"})
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"POST /v1/chat/stream HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"X-Widget-Api-Key: {WIDGET_KEY}\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
    )
    received = b""
    while received.count(b'"type": "token"') < 3:
        received += sock.recv(4096)
    sock.close()  # the visitor closes the tab

    assert wait_until(lambda: upstream.hangups, timeout=5), "the service kept reading upstream"
    assert upstream.finished_streams == 0
    assert wait_until(lambda: len(thread_of(server.url, "leaver")["messages"]) == 2, timeout=5)
    reply = thread_of(server.url, "leaver")["messages"][1]
    assert reply["role"] == "assistant" and reply["interrupted"] is True
    assert reply["content"].startswith("w0 w1 w2") and len(reply["content"].split()) < 300


def test_embedded_redis_is_shared_by_workers_and_survives_a_restart(start_gunicorn, upstream, tmp_path):
    data_dir = tmp_path / "embedded"
    server = start_gunicorn(REDIS_URL=None, REDIS_PREFIX="emb", DATA_DIR=str(data_dir), WEB_CONCURRENCY="3")

    def chat(i):
        with requests.Session() as session:
            return session.post(
                server.url + "/v1/chat", json={"sessionId": f"emb-{i}", "message": "hi"}, headers=CHAT, timeout=30
            ).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(chat, range(12))) == [200] * 12
    assert requests.get(server.url + "/v1/admin/conversations", headers=ADMIN, timeout=10).json()["total"] == 12
    assert (data_dir / "redis.sock").exists()
    server.stop()
    assert wait_until(lambda: not (data_dir / "redis.sock").exists(), timeout=10), "embedded Redis kept running"

    restarted = start_gunicorn(REDIS_URL=None, REDIS_PREFIX="emb", DATA_DIR=str(data_dir))
    listing = requests.get(restarted.url + "/v1/admin/conversations", headers=ADMIN, timeout=10).json()
    assert listing["total"] == 12
    assert {c["sessionId"] for c in listing["conversations"]} == {f"emb-{i}" for i in range(12)}


def test_heartbeat_pings_flow_through_gunicorn(start_gunicorn, upstream):
    server = start_gunicorn(STREAM_HEARTBEAT_SECONDS="0.1")
    upstream.reply = "slow answer"
    upstream.token_delay = 0.5
    with open_stream(server.url) as response:
        kinds = [json.loads(line)["type"] for line in response.iter_lines()]
    assert kinds[0] == "start" and kinds[-1] == "done" and "ping" in kinds


def test_20_sessions_of_20_messages_at_once_lose_nothing_and_mix_nothing(start_gunicorn, upstream, redis_client):
    server = start_gunicorn(WEB_CONCURRENCY="3")
    upstream.token_delay = 0.01
    upstream.echo = True
    sessions, turns = [f"sess-{i}" for i in range(20)], 20
    errors = []

    def converse(session):
        try:
            for turn in range(turns):
                with open_stream(server.url, session=session, message=f"{session}/{turn}") as response:
                    assert json.loads(list(response.iter_lines())[-1])["type"] == "done"
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=converse, args=(session,)) for session in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for session in sessions:
        _, messages = stored_thread(redis_client, session)
        assert [m["content"] for m in messages if m["role"] == "user"] == [f"{session}/{t}" for t in range(turns)]
        assert [m["role"] for m in messages] == ["user", "assistant"] * turns
        assert_replies_answer_their_question(messages)


def test_50_simultaneous_first_messages_of_one_session_make_one_conversation_holding_all(
    start_gunicorn, upstream, redis_client
):
    server = start_gunicorn(WEB_CONCURRENCY="3")
    upstream.echo = True
    start = threading.Barrier(50)

    def first_message(i):
        start.wait()
        with requests.Session() as session:  # a connection of its own, so the 50 spread over the workers
            response = session.post(
                server.url + "/v1/chat", json={"sessionId": "crowd", "message": f"m{i}"}, headers=CHAT, timeout=30
            )
        return response.status_code, response.json()["conversationId"]

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(first_message, range(50)))
    assert {status for status, _ in answers} == {200}
    assert len({conversation for _, conversation in answers}) == 1
    summary, messages = stored_thread(redis_client, "crowd")
    assert summary["_id"] == answers[0][1]
    assert sorted(m["content"] for m in messages if m["role"] == "user") == sorted(f"m{i}" for i in range(50))
    # Simultaneous turns store user messages back to back; each prompt joins such a run into one
    # user message (chat templates need alternation), so each reply echoes its own message last.
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    assert sorted(reply.removeprefix("echo: ").split("\n\n")[-1] for reply in replies) == sorted(
        f"m{i}" for i in range(50)
    )
    assert redis_client.zcard("ocw:conversations") == 1


def test_a_page_on_a_disallowed_origin_can_neither_read_replies_nor_spend_tokens(
    start_gunicorn, upstream, redis_client
):
    server = start_gunicorn(CORS_ORIGIN="https://allowed.example")
    foreign = {"Origin": "https://evil.example"}
    for path in ("/v1/chat", "/v1/chat/stream", "/chat"):
        refused = requests.post(
            server.url + path, json={"sessionId": "cors", "message": "hi"}, headers={**CHAT, **foreign}, timeout=10
        )
        assert refused.status_code == 403 and refused.json() == {"error": "Origin not allowed"}
        assert "Access-Control-Allow-Origin" not in refused.headers
        preflight = requests.options(
            server.url + path, headers={**foreign, "Access-Control-Request-Method": "POST"}, timeout=10
        )
        assert "Access-Control-Allow-Origin" not in preflight.headers
    listing = requests.get(server.url + "/v1/admin/conversations", headers={**ADMIN, **foreign}, timeout=10)
    assert "Access-Control-Allow-Origin" not in listing.headers  # the browser keeps the answer from the page
    assert upstream.requests == []
    # Only admission counters (the IP window, the refused-origin count) may have been written.
    assert [key for key in redis_client.keys("*") if "{admission}" not in key] == []
    allowed = requests.post(
        server.url + "/v1/chat",
        json={"sessionId": "cors", "message": "hi"},
        headers={**CHAT, "Origin": "https://allowed.example"},
        timeout=10,
    )
    assert allowed.status_code == 200
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://allowed.example"


def test_a_burst_of_simultaneous_streams_on_one_worker_all_succeed(start_gunicorn, upstream):
    import asyncio

    import aiohttp

    # Every simulated visitor comes from 127.0.0.1: lift the bound on one client's open requests.
    server = start_gunicorn(WEB_CONCURRENCY="1", CLIENT_MAX_OPEN_REQUESTS="0")
    upstream.reply = "a b c"
    upstream.token_delay = 0.2

    async def burst(count):
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, headers=CHAT) as session:

            async def one(i):
                body = {"sessionId": f"burst-{i}", "message": "hi"}
                async with session.post(server.url + "/v1/chat/stream", json=body) as response:
                    lines = [json.loads(line) async for line in response.content if line.strip()]
                    return response.status, lines[-1]["type"], lines[-1].get("error")

            return await asyncio.gather(*(one(i) for i in range(count)))

    results = asyncio.run(burst(600))
    assert Counter(results) == Counter({(200, "done", None): 600})


def test_a_burst_of_new_streams_loses_none_to_an_upstream_whose_accept_queue_overflows(start_gunicorn):
    """Connections the upstream's kernel refuses or resets before its server read a byte are
    tried again (llm.CONNECT_RETRY_PAUSES_SECONDS); without that, 4-28 % of such a burst failed."""
    import asyncio

    import aiohttp

    upstream = FakeUpstream(backlog=2)
    try:
        upstream.reply = "a b c"
        upstream.token_delay = 0.05
        server = start_gunicorn(WEB_CONCURRENCY="2", OPENAI_BASE_URL=upstream.url)

        async def burst(count):
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), headers=CHAT) as session:

                async def one(i):
                    body = {"sessionId": f"queue-{i}", "message": "hi"}
                    async with session.post(server.url + "/v1/chat/stream", json=body) as response:
                        lines = [json.loads(line) async for line in response.content if line.strip()]
                        return lines[-1]["type"], lines[-1].get("error")

                return await asyncio.gather(*(one(i) for i in range(count)))

        results = asyncio.run(burst(100))
        assert Counter(results) == Counter({("done", None): 100})
        assert upstream.finished_streams == 100
        retries = server.output().count("before any answer; trying again in")
        assert retries  # each retry is logged
        print(f"100 streams, upstream accept queue 2: 100 done, {retries} connects tried again")
    finally:
        upstream.close()


def test_a_visitor_who_leaves_while_the_model_is_silent_is_noticed_within_one_heartbeat(start_gunicorn, upstream):
    """Whatever the upstream's framing (the test upstream answers `Connection: close`, so the HTTP
    client detaches the socket from its connection), the upstream call is closed at the first
    heartbeat after the visitor left, not at the next model byte or the read timeout."""
    server = start_gunicorn(WEB_CONCURRENCY="1", STREAM_HEARTBEAT_SECONDS="2")
    upstream.reply = "first second"
    upstream.token_delay = 20  # the model thinks for a long time before its first token
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        body = json.dumps({"sessionId": "leaver", "message": "hi"}).encode()
        sock.sendall(
            b"POST /v1/chat/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Widget-Api-Key: "
            + WIDGET_KEY.encode()
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        received = b""
        while b'"type": "start"' not in received:  # the stream is under way
            received += sock.recv(4096)
        assert wait_until(lambda: upstream.requests, timeout=5)
    left = time.monotonic()
    assert wait_until(lambda: upstream.hangups, timeout=15), "the upstream call was never closed"
    assert upstream.hangups[0][0] - left < 3.2  # one heartbeat (2 s); a second ping would be 4 s
    print(f"visitor left -> upstream closed: {upstream.hangups[0][0] - left:.2f} s (heartbeat 2 s)")
