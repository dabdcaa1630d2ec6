"""All Redis access: key names, Lua scripts and the operations the routes need.

Layout (P = REDIS_PREFIX):
  P:conv:{id}            hash   summary of one conversation
  P:conv:{id}:messages   list   its messages as JSON, oldest first
  P:session:<sessionId>  string the conversation of a session (set once, SET NX)
  P:conversations        zset   conversation ids scored by updatedAt (the listing index)
  P:{admission}:ip:<ip>                requests of a client IP in its current window
  P:{admission}:session:<sessionId>    messages of a session in its current window
  P:{admission}:requests:<YYYY-MM-DD>  chat turns of the deployment on that UTC day
  P:{admission}:tokens:<YYYY-MM-DD>    output tokens of the deployment on that UTC day
The two per-conversation keys share the hash tag {id}, and the admission counters share
{admission}, so every Lua script touches a single slot: atomic on a single Redis, valid on
Redis Cluster. All counters expire on their own.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import redis
from redis.cluster import RedisCluster

LAST_MESSAGE_CHARS = 500
DAY_MS = 24 * 3600 * 1000
MAX_CONNECTIONS = 50  # per worker process (and per node on a cluster)
CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CURSOR = re.compile(r"([0-9]{1,16}):([A-Za-z0-9_-]{1,64})")

# Any Redis failure (down, timed out, read-only during a failover...) is answered with 503.
UNAVAILABLE = redis.exceptions.RedisError


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

    def client_requests(self, client_ip: str) -> str:
        return f"{self.prefix}:{{admission}}:ip:{client_ip}"

    def session_messages(self, session_id: str) -> str:
        return f"{self.prefix}:{{admission}}:session:{session_id}"

    def daily_requests(self, day: str) -> str:
        return f"{self.prefix}:{{admission}}:requests:{day}"

    def daily_tokens(self, day: str) -> str:
        return f"{self.prefix}:{{admission}}:tokens:{day}"


# Decides whether a chat request may go on, in one atomic step, in this order:
#   1. the client IP's window (every request counts, even one refused later);
#   2. only for a turn (ARGV[3] = '1'): the session's window, then the daily budgets;
#   3. an admitted turn is counted in the session window and the day's requests.
# Windows start with their first request and expire with it, so idle IPs and sessions leave
# nothing behind; daily counters carry the date and expire a day after it.
# ARGV: ip window ms, ip max, turn, session window ms, session max, daily max requests,
#       daily max tokens (0 = unlimited), daily counter lifetime ms.
# Returns {verdict, ms until the refusing window resets}; verdict 'ok', 'ip', 'session', 'budget'.
ADMIT_SCRIPT = """
local function count(key, window_ms)
  local n = redis.call('INCR', key)
  if n == 1 or redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, window_ms) end
  return n
end
if count(KEYS[1], ARGV[1]) > tonumber(ARGV[2]) then return {'ip', redis.call('PTTL', KEYS[1])} end
if ARGV[3] ~= '1' then return {'ok', 0} end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[5]) then
  return {'session', redis.call('PTTL', KEYS[2])}
end
local max_requests, max_tokens = tonumber(ARGV[6]), tonumber(ARGV[7])
if (max_requests > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= max_requests)
    or (max_tokens > 0 and tonumber(redis.call('GET', KEYS[4]) or '0') >= max_tokens) then
  return {'budget', 0}
end
count(KEYS[2], ARGV[4])
count(KEYS[3], ARGV[8])
return {'ok', 0}
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
class Admission:
    """The verdict on one chat request, and what was learnt on the way."""

    verdict: str  # 'ok', 'ip', 'session' or 'budget'
    retry_after_ms: int
    conversation_id: str | None  # the session's conversation, if it already has one


@dataclass(frozen=True)
class Page:
    conversations: list[dict]
    total: int
    next_cursor: str | None


class InvalidCursor(ValueError):
    """The listing cursor was not produced by this service."""


def connect(url: str, tls_verify: bool = True) -> redis.Redis | RedisCluster:
    """A client for url; redis+cluster:// gives a cluster client. Fails fast when Redis is down."""
    options = dict(
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
            "redis://" + url[len("redis+cluster://"):],
            connection_pool_class=redis.BlockingConnectionPool,
            **options,
        )
    return redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url, **options))


class Storage:
    """Conversations, messages, session mappings and rate-limit counters in Redis."""

    def __init__(self, client, prefix: str, clock=time.time):
        self.client = client
        self.keys = Keys(prefix)
        self.clock = clock  # seconds since the epoch; replaceable to test the day rollover

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def utc_day(self) -> tuple[str, int]:
        """Today's UTC date as YYYY-MM-DD, and the ms left until the next UTC day."""
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return now.strftime("%Y-%m-%d"), int((tomorrow - now).total_seconds() * 1000)

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

    def admit(self, client_ip: str, session_id: str | None, limits) -> Admission:
        """Count a chat request against its IP window and, for a turn of session_id, against
        the session's window and the daily budgets; look up the session's conversation in the
        same round trip. session_id is None when the request is not a valid turn.
        """
        day, until_tomorrow_ms = self.utc_day()
        pipe = self.client.pipeline(transaction=False)
        self._run(
            pipe,
            ADMIT_SCRIPT,
            [
                self.keys.client_requests(client_ip),
                self.keys.session_messages(session_id or ""),
                self.keys.daily_requests(day),
                self.keys.daily_tokens(day),
            ],
            [
                limits.window_ms,
                limits.max_requests,
                "1" if session_id else "0",
                limits.session_window_ms,
                limits.session_max_messages,
                limits.daily_max_requests,
                limits.daily_max_tokens,
                until_tomorrow_ms + DAY_MS,
            ],
        )
        if session_id:
            pipe.get(self.keys.session(session_id))
        (verdict, retry_ms), *conversation = pipe.execute()
        retry_ms = until_tomorrow_ms if verdict == "budget" else max(int(retry_ms), 0)
        return Admission(verdict, retry_ms, conversation[0] if conversation else None)

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
        output_tokens: int = 0,
        pipeline=None,
    ) -> list[dict]:
        """Store a message and return the newest `history` messages (one round trip).

        A user message creates the conversation if needed; an assistant message is dropped if
        the conversation was deleted while the reply was being generated. output_tokens are
        added to the day's spending in the same round trip. Given a pipeline, the commands are
        only queued on it (bulk writes: the caller executes it) and nothing is returned.
        """
        created_at = self.now_ms()
        message = {"_id": new_id(), "role": role, "content": content, "createdAt": created_at}
        if interrupted:
            message["interrupted"] = True
        creates = role == "user"
        pipe = self.client.pipeline(transaction=False) if pipeline is None else pipeline
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
        if output_tokens:
            day, until_tomorrow_ms = self.utc_day()
            pipe.incrby(self.keys.daily_tokens(day), output_tokens)
            pipe.pexpire(self.keys.daily_tokens(day), until_tomorrow_ms + DAY_MS)
        if pipeline is not None:
            return []
        recent = pipe.execute()[0]
        return [json.loads(item) for item in recent or []]

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
