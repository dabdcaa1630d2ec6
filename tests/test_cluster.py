"""The service on a real 3-master Redis Cluster (REDIS_URL=redis+cluster://...)."""
from __future__ import annotations

import json
import socket
import subprocess

import pytest
import redis

import embedded_redis
from tests.conftest import ADMIN_KEY, free_port, wait_until
from tests.test_chat import events

SLOTS = 16384


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory):
    """Three redis-server masters on loopback, slots split between them."""
    nodes = []
    for _ in range(3):
        port = free_cluster_port()
        directory = tmp_path_factory.mktemp(f"cluster-{port}")
        process = subprocess.Popen(
            [embedded_redis.server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf"),
             "--dir", str(directory)],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=port)
        nodes.append((port, process, client))
    try:
        for _, _, client in nodes:
            assert wait_until(lambda: _answers(client), timeout=10)
        share = SLOTS // len(nodes)
        for i, (_, _, client) in enumerate(nodes):
            end = SLOTS if i == len(nodes) - 1 else (i + 1) * share
            client.execute_command("CLUSTER ADDSLOTS", *range(i * share, end))
        for port, _, _ in nodes[1:]:
            nodes[0][2].execute_command("CLUSTER MEET", "127.0.0.1", port)
        assert wait_until(lambda: all(_cluster_ok(client) for _, _, client in nodes), timeout=20)
        yield f"redis+cluster://127.0.0.1:{nodes[0][0]}"
    finally:
        for _, process, _ in nodes:
            process.kill()
            process.wait()


def _answers(client) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


def _cluster_ok(client) -> bool:
    info = client.cluster("INFO")
    return info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == 3


@pytest.fixture
def cluster_client(make_app, cluster_url):
    app = make_app(REDIS_URL=cluster_url, REDIS_PREFIX="cl", RATE_LIMIT_MAX_REQUESTS="1000")
    cluster = app.extensions["storage"].client
    cluster.flushall(target_nodes=cluster.ALL_NODES)
    return app, app.test_client()


def chat(client, session, message="hi", path="/v1/chat"):
    return client.post(path, json={"sessionId": session, "message": message}, headers={"X-Api-Key": "widget-key-0123456789abcdef"})


def test_chat_stream_and_admin_routes_work_on_redis_cluster(cluster_client, upstream):
    app, client = cluster_client
    sessions = [f"cluster-{i}" for i in range(12)]
    for session in sessions:
        assert chat(client, session).status_code == 200
    lines = events(chat(client, sessions[0], message="again", path="/v1/chat/stream"))
    assert lines[-1]["type"] == "done"

    admin = {"X-Admin-Api-Key": ADMIN_KEY}
    seen, cursor = [], None
    while True:
        page = client.get("/v1/admin/conversations", query_string={"limit": 5, **({"cursor": cursor} if cursor else {})},
                          headers=admin).get_json()
        seen += page["conversations"]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert sorted(c["sessionId"] for c in seen) == sorted(sessions)
    assert seen[0]["sessionId"] == sessions[0]  # most recently updated first

    thread = client.get(f"/v1/admin/conversations/{seen[0]['_id']}", headers=admin).get_json()
    assert [m["role"] for m in thread["messages"]] == ["user", "assistant", "user", "assistant"]
    assert client.delete(f"/v1/admin/conversations/{seen[0]['_id']}", headers=admin).status_code == 204
    assert client.get(f"/v1/admin/conversations/{seen[0]['_id']}", headers=admin).status_code == 404
    assert chat(client, sessions[0]).get_json()["conversationId"] != seen[0]["_id"]


def test_rate_limit_is_shared_on_redis_cluster(make_app, cluster_url):
    app = make_app(REDIS_URL=cluster_url, REDIS_PREFIX="cl-rl", RATE_LIMIT_MAX_REQUESTS="2")
    app.extensions["storage"].client.delete(app.extensions["storage"].keys.client_requests("127.0.0.1"))
    clients = [app.test_client(), make_app(REDIS_URL=cluster_url, REDIS_PREFIX="cl-rl").test_client()]
    statuses = [chat(clients[i % 2], "rl").status_code for i in range(3)]
    assert statuses == [200, 200, 429]


def test_export_erasure_stats_and_retention_work_on_redis_cluster(make_app, cluster_url, upstream):
    app = make_app(REDIS_URL=cluster_url, REDIS_PREFIX="cl-ops", RATE_LIMIT_MAX_REQUESTS="1000")
    client = app.test_client()
    admin = {"X-Admin-Api-Key": ADMIN_KEY}
    sessions = [f"ops-{i}" for i in range(15)]
    for session in sessions:
        assert chat(client, session).status_code == 200
    lines = client.get("/v1/admin/export", headers=admin).get_data(as_text=True).splitlines()
    assert sorted(json.loads(line)["conversation"]["sessionId"] for line in lines) == sorted(sessions)

    assert client.delete(f"/v1/admin/sessions/{sessions[0]}", headers=admin).status_code == 204
    assert client.get("/v1/admin/conversations", query_string={"sessionId": sessions[0]}, headers=admin).get_json()["total"] == 0
    stats = client.get("/v1/admin/stats", headers=admin).get_json()
    assert (stats["conversations"], stats["messages"]) == (14, 28)
    assert stats["lastHour"]["chatRequests"] == 15 and stats["lastHour"]["outputTokens"] > 0

    assert app.extensions["storage"].purge_idle(app.extensions["storage"].now_ms() + 1) == 14
    assert client.get("/v1/admin/stats", headers=admin).get_json()["messages"] == 0
