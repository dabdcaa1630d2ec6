"""All Redis access, cut by what is stored: conversations (conversations.py, and erasure.py to
delete them), what clients may spend (limits.py), the hourly counts (counts.py) and open
dashboard sessions (dashboard_sessions.py). Every key is built by keys.Keys; every Lua script lives in lua/.

The layout of the keys is written out in docs/REDIS.md.
"""

from __future__ import annotations

import time

import redis
from redis.cluster import RedisCluster

from .clock import DAY_MS, Clock
from .conversations import Conversations, InvalidCursor, Page, parse_cursor
from .counts import COUNTERS, Counts
from .dashboard_sessions import DashboardSessions
from .erasure import Erasure
from .keys import CONVERSATION_ID, Keys, new_id
from .knowledge import Knowledge, StoredChunk
from .limits import Admission, Limits, Verdict

__all__ = [
    "CONVERSATION_ID",
    "COUNTERS",
    "Conversations",
    "DAY_MS",
    "UNAVAILABLE",
    "Admission",
    "InvalidCursor",
    "Page",
    "StoredChunk",
    "Storage",
    "Verdict",
    "connect",
    "new_id",
    "parse_cursor",
]

MAX_CONNECTIONS = 50  # per worker process (and per node on a cluster)

# Any Redis failure (down, timed out, read-only during a failover...) is answered with 503.
UNAVAILABLE = redis.exceptions.RedisError


def connect(url: str, tls_verify: bool = True) -> redis.Redis | RedisCluster:
    """A client for url; redis+cluster:// gives a cluster client. Fails fast when Redis is down."""
    options: dict = dict(
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        # A bounded pool that waits (up to `timeout` s) for a free connection: a burst of a
        # thousand requests on one worker would otherwise open a thousand connections at once
        # and overflow Redis's accept backlog. Each use is a sub-millisecond round trip.
        max_connections=MAX_CONNECTIONS,
        timeout=5,
    )
    if url.startswith("rediss://") and not tls_verify:
        # Heroku Redis presents a self-signed certificate. Only valid for TLS URLs.
        options["ssl_cert_reqs"] = None
    if url.startswith("redis+cluster://"):
        return RedisCluster.from_url(
            "redis://" + url[len("redis+cluster://") :],
            connection_pool_class=redis.BlockingConnectionPool,
            **options,
        )
    return redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url, **options))


class Storage:
    """The service's Redis data under one prefix: `conversations`, `erasure`, `limits`, `counts`
    and `dashboard_sessions`, sharing one client, one key builder and one clock."""

    def __init__(self, client, prefix: str, clock=time.time, retention_ms: int | None = None):
        self.client = client
        self.keys = Keys(prefix)
        self.clock = Clock(clock)
        self.counts = Counts(client, self.keys, self.clock)
        self.limits = Limits(client, self.keys, self.clock, retention_ms)
        self.erasure = Erasure(client, self.keys, self.clock, retention_ms)
        self.conversations = Conversations(
            client, self.keys, self.clock, retention_ms, self.counts, self.limits, self.erasure
        )
        self.dashboard_sessions = DashboardSessions(client, self.keys)
        self.knowledge = Knowledge(client, self.keys, self.clock)

    def ping(self) -> bool:
        return bool(self.client.ping())

    def stats(self) -> dict:
        """Conversations and messages stored, and each of COUNTERS over the last hour and the
        last day (counts.Counts.windows), in one round trip after the retention sweep."""
        self.erasure.sweep()
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(self.keys.index())
        pipe.get(self.keys.message_total())
        now = self.counts.queue_read(pipe)
        conversations, messages, *hourly = pipe.execute()
        return {"conversations": conversations, "messages": int(messages or 0), **self.counts.windows(now, hourly)}
