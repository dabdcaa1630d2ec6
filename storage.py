"""All Redis access: key names, Lua scripts and the operations the routes need.

Layout (P = REDIS_PREFIX):
  P:conv:{id}            hash   summary of one conversation
  P:conv:{id}:messages   list   its messages as JSON, oldest first
  P:session:<sessionId>  string the conversation of a session (set once, SET NX)
  P:conversations        zset   conversation ids scored by updatedAt (the listing index)
  P:ratelimit:<ip>       string request count in the client's current window
The two per-conversation keys share the hash tag {id}, so the Lua scripts that touch both are
atomic on a single Redis and valid on Redis Cluster.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass

import redis
from redis.cluster import RedisCluster

LAST_MESSAGE_CHARS = 500
CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CURSOR = re.compile(r"([0-9]{1,16}):([A-Za-z0-9_-]{1,64})")

# Any Redis failure (down, timed out, read-only during a failover...) is answered with 503.
UNAVAILABLE = redis.exceptions.RedisError


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id() -> str:
    return uuid.uuid4().hex


class Keys:
    """Builds every Redis key of the service; nothing else formats a key."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def conversation(self, conversation_id: str) -> str:
        return f"{self.prefix}:conv:{{{conversation_id}}}"

    def messages(self, conversation_id: str) -> str:
        return f"{self.prefix}:conv:{{{conversation_id}}}:messages"

    def session(self, session_id: str) -> str:
        return f"{self.prefix}:session:{session_id}"

    def index(self) -> str:
        return f"{self.prefix}:conversations"

    def rate_limit(self, client_ip: str) -> str:
        return f"{self.prefix}:ratelimit:{client_ip}"


# Counts one request in the client's window; the window starts with its first request and the
# key expires with it, so idle IPs leave nothing behind. Returns {count, ms until reset}.
RATE_LIMIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}
"""

# The session's conversation id: the candidate if this call created the mapping, else the
# existing one. Two simultaneous first requests of a session therefore agree on one id.
RESOLVE_SESSION_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then return ARGV[1] end
return redis.call('GET', KEYS[1])
"""

# Appends one message and updates the summary in one atomic step.
# ARGV: id, sessionId, now, message JSON, lastMessage, history count, create (1/0).
# With create=0 a missing conversation (deleted meanwhile) is not brought back; returns false.
# Returns the newest <history count> messages, including the new one.
APPEND_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[7] ~= '1' then return false end
  redis.call('HSET', KEYS[1], '_id', ARGV[1], 'sessionId', ARGV[2], 'createdAt', ARGV[3])
end
local count = redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[1], 'updatedAt', ARGV[3], 'lastMessage', ARGV[5], 'messageCount', count)
local history = tonumber(ARGV[6])
if history > 0 then return redis.call('LRANGE', KEYS[2], -history, -1) end
return {}
"""

# Deletes both per-conversation keys; returns the sessionId it belonged to, or false if unknown.
DELETE_SCRIPT = """
local session = redis.call('HGET', KEYS[1], 'sessionId')
if not session then return false end
redis.call('DEL', KEYS[1], KEYS[2])
return session
"""

# Removes a session mapping only if it still points at the given conversation.
UNMAP_SESSION_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Page:
    conversations: list[dict]
    total: int
    next_cursor: str | None


class InvalidCursor(ValueError):
    """The listing cursor was not produced by this service."""


def connect(url: str, tls_verify: bool = True) -> redis.Redis | RedisCluster:
    """A client for url; redis+cluster:// gives a cluster client. Fails fast when Redis is down."""
    options = dict(decode_responses=True, socket_connect_timeout=2, socket_timeout=5)
    if url.startswith("rediss://") and not tls_verify:
        # Heroku Redis presents a self-signed certificate. Only valid for TLS URLs.
        options["ssl_cert_reqs"] = None
    if url.startswith("redis+cluster://"):
        return RedisCluster.from_url("redis://" + url[len("redis+cluster://"):], **options)
    return redis.Redis.from_url(url, **options)


class Storage:
    """Conversations, messages, session mappings and rate-limit counters in Redis."""

    def __init__(self, client, prefix: str):
        self.client = client
        self.keys = Keys(prefix)

    @staticmethod
    def _run(target, script: str, keys: list[str], args: list = ()):
        """Queue (on a pipeline) or run a Lua script with a plain EVAL command.

        Not EVALSHA through redis-py's Script: in a pipeline that costs an extra SCRIPT EXISTS
        round trip every time, and cluster pipelines refuse EVALSHA and eval(). Redis caches the
        compiled script, so resending a few hundred bytes is the cheaper side.
        """
        return target.execute_command("EVAL", script, len(keys), *keys, *args)

    def ping(self) -> bool:
        return bool(self.client.ping())

    def hit_rate_limit(self, client_ip: str, window_ms: int) -> tuple[int, int]:
        """Count a request from client_ip; return (requests in window, ms until the window resets)."""
        count, ttl_ms = self._run(self.client, RATE_LIMIT_SCRIPT, [self.keys.rate_limit(client_ip)], [window_ms])
        return int(count), int(ttl_ms)

    def conversation_for_session(self, session_id: str) -> str:
        """The conversation id of session_id, created atomically on first use."""
        return self._run(self.client, RESOLVE_SESSION_SCRIPT, [self.keys.session(session_id)], [new_id()])

    def append_message(
        self,
        conversation_id: str,
        session_id: str,
        role: str,
        content: str,
        history: int = 0,
        interrupted: bool = False,
    ) -> list[dict]:
        """Store a message and return the newest `history` messages (one round trip).

        A user message creates the conversation if needed; an assistant message is dropped if
        the conversation was deleted while the reply was being generated.
        """
        created_at = now_ms()
        message = {"_id": new_id(), "role": role, "content": content, "createdAt": created_at}
        if interrupted:
            message["interrupted"] = True
        creates = role == "user"
        pipe = self.client.pipeline(transaction=False)
        self._run(
            pipe,
            APPEND_SCRIPT,
            [self.keys.conversation(conversation_id), self.keys.messages(conversation_id)],
            [
                conversation_id,
                session_id,
                created_at,
                json.dumps(message, ensure_ascii=False, separators=(",", ":")),
                content[:LAST_MESSAGE_CHARS],
                history,
                "1" if creates else "0",
            ],
        )
        # XX: a reply never re-adds a conversation that was deleted meanwhile.
        pipe.zadd(self.keys.index(), {conversation_id: created_at}, xx=not creates)
        recent, _ = pipe.execute()
        return [json.loads(item) for item in recent or []]

    def session_messages(self, session_id: str, limit: int) -> list[dict]:
        """The newest `limit` messages of a session's conversation, oldest first; [] if it has none.

        A plain GET of the mapping, never SET NX: asking about an unknown session stores nothing.
        Two round trips, whatever the length of the conversation.
        """
        conversation_id = self.client.get(self.keys.session(session_id))
        if conversation_id is None:
            return []
        return [json.loads(m) for m in self.client.lrange(self.keys.messages(conversation_id), -limit, -1)]

    def list_conversations(self, limit: int, cursor: str | None = None) -> Page:
        """A page of summaries, newest updatedAt first, in O(log N + limit)."""
        index = self.keys.index()
        pipe = self.client.pipeline(transaction=False)
        if cursor is None:
            pipe.zrevrange(index, 0, limit, withscores=True)
        else:
            match = CURSOR.fullmatch(cursor)
            if not match:
                raise InvalidCursor(cursor)
            score, after_id = int(match.group(1)), match.group(2)
            # Ties share a score and are ordered by member, so a page resumes after
            # (score, id): first the rest of the tie, then strictly older entries.
            pipe.zrevrangebyscore(index, score, score, withscores=True)
            pipe.zrevrangebyscore(index, f"({score}", "-inf", start=0, num=limit + 1, withscores=True)
        pipe.zcard(index)
        *ranges, total = pipe.execute()
        if cursor is None:
            entries = ranges[0]
        else:
            entries = [(m, s) for m, s in ranges[0] if m < after_id] + ranges[1]
        entries = entries[: limit + 1]
        page, more = entries[:limit], len(entries) > limit
        summaries = self._summaries([member for member, _ in page])
        next_cursor = f"{int(page[-1][1])}:{page[-1][0]}" if more and page else None
        return Page(summaries, total, next_cursor)

    def _summaries(self, conversation_ids: list[str]) -> list[dict]:
        pipe = self.client.pipeline(transaction=False)
        for conversation_id in conversation_ids:
            pipe.hgetall(self.keys.conversation(conversation_id))
        return [summary_from_hash(h) for h in pipe.execute() if h]

    def get_conversation(self, conversation_id: str) -> tuple[dict, list[dict]] | None:
        """(summary, messages oldest first), or None if unknown."""
        if not CONVERSATION_ID.fullmatch(conversation_id):
            return None
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.keys.conversation(conversation_id))
        pipe.lrange(self.keys.messages(conversation_id), 0, -1)
        summary, messages = pipe.execute()
        if not summary:
            return None
        return summary_from_hash(summary), [json.loads(m) for m in messages]

    def delete_conversation(self, conversation_id: str) -> bool:
        """Remove a conversation, its messages, its session mapping and index entry."""
        if not CONVERSATION_ID.fullmatch(conversation_id):
            return False
        session_id = self._run(
            self.client,
            DELETE_SCRIPT,
            [self.keys.conversation(conversation_id), self.keys.messages(conversation_id)],
        )
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.keys.index(), conversation_id)
        if session_id:
            self._run(pipe, UNMAP_SESSION_SCRIPT, [self.keys.session(session_id)], [conversation_id])
        removed_from_index = pipe.execute()[0]
        return bool(session_id) or bool(removed_from_index)


def summary_from_hash(fields: dict) -> dict:
    """The API's conversation summary from the stored hash."""
    created_at = int(fields.get("createdAt", 0))
    return {
        "_id": fields["_id"],
        "_creationTime": created_at,
        "sessionId": fields.get("sessionId", ""),
        "createdAt": created_at,
        "updatedAt": int(fields.get("updatedAt", created_at)),
        "lastMessage": fields.get("lastMessage", ""),
        "messageCount": int(fields.get("messageCount", 0)),
    }
