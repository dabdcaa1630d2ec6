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
  P:{admission}:count:<name>:<YYYY-MM-DDTHH>  events of one kind (COUNTERS) in that UTC hour
  P:{admission}:login:<client>         dashboard sign-in attempts of an address (or a known device)
  P:dashboard:session:<id>             an open dashboard session (deleted at sign-out)
  P:{messages}:total     string messages stored, all conversations together
  P:{messages}:counts    hash   messages counted per conversation id, so deleting or sweeping a
                                conversation whose data has already expired still subtracts them
The two per-conversation keys share the hash tag {id}, and the admission counters share
{admission} (the hourly counts too, so the admission script counts requests, 401s and 429s in
its own atomic step), so every Lua script touches a single slot: atomic on a single Redis,
valid on Redis Cluster. All counters expire on their own.

Retention (CONVERSATION_RETENTION_DAYS): every message sets the conversation's keys to expire
that long after it, and every chat turn's admission does the same for its session mapping as it
reads it (GETEX, so Redis 6.2 or newer). The index cannot expire per member, so the
operations that read it as a whole (listing, export, stats) first sweep out the entries idle
for longer than the retention, oldest first: a cost proportional to what is removed.
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterator

import redis
from flask import current_app
from redis.cluster import RedisCluster

LAST_MESSAGE_CHARS = 500
HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS
MAX_CONNECTIONS = 50  # per worker process (and per node on a cluster)
HOUR_FORMAT = "%Y-%m-%dT%H"
# Hourly counts are read for the last 25 hours (see stats); 26 h of life covers that.
HOURLY_COUNT_LIFETIME_MS = 26 * HOUR_MS
# What the service counts per hour: chat-route requests, model output tokens of replies, 401s,
# 429s, 403s for a foreign Origin, replies that failed upstream, and replies the model stopped
# early (a finish reason other than "stop": "length", "content_filter"...).
COUNTERS = ("chatRequests", "outputTokens", "unauthorized", "rateLimited", "refusedOrigins", "upstreamErrors",
            "incompleteReplies")
BATCH = 100  # conversations per round trip when sweeping, purging or exporting
# An index entry without its hash is removed only once it is this old: a cluster pipeline may
# write the index entry of a new conversation a moment before the conversation itself.
ORPHAN_GRACE_MS = 60 * 1000
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

    def login_failures(self, client: str) -> str:
        return f"{self.prefix}:{{admission}}:login:{client}"

    def dashboard_session(self, session_id: str) -> str:
        return f"{self.prefix}:dashboard:session:{session_id}"

    def hourly_count(self, name: str, hour: str) -> str:
        return f"{self.prefix}:{{admission}}:count:{name}:{hour}"

    def message_total(self) -> str:
        return f"{self.prefix}:{{messages}}:total"

    def message_counts(self) -> str:
        return f"{self.prefix}:{{messages}}:counts"


# Decides whether a chat request may go on, in one atomic step, in this order:
#   1. the client IP's window (every request counts, even one refused later);
#   2. the key (ARGV[9] = '1' when the request carries a valid widget key);
#   3. only for a turn (ARGV[3] = '1'): the session's window, then the daily budgets;
#   4. an admitted turn is counted in the session window and the day's requests, and reserves
#      ARGV[11] output tokens of the day's budget (settled when the turn ends: append_message,
#      release_tokens), so simultaneous turns cannot all pass a budget that none has spent yet.
# Windows start with their first request and expire with it, so idle IPs and sessions leave
# nothing behind; daily counters carry the date and expire a day after it. The request, and
# a refusal (401 or 429), are added to this hour's counts (KEYS[5..7]) in the same step.
# ARGV: ip window ms, ip max, turn, session window ms, session max, daily max requests,
#       daily max tokens (0 = unlimited), daily counter lifetime ms, key valid, hourly lifetime ms,
#       tokens a turn reserves.
# Returns {verdict, ms until the refusing window resets}; verdict 'ok', 'ip', 'key', 'session'
# or 'budget'.
ADMIT_SCRIPT = """
local function count(key, window_ms)
  local n = redis.call('INCR', key)
  if n == 1 or redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, window_ms) end
  return n
end
local function refuse(verdict, counter, retry_ms)
  count(counter, ARGV[10])
  return {verdict, retry_ms}
end
count(KEYS[5], ARGV[10])
if count(KEYS[1], ARGV[1]) > tonumber(ARGV[2]) then return refuse('ip', KEYS[7], redis.call('PTTL', KEYS[1])) end
if ARGV[9] ~= '1' then return refuse('key', KEYS[6], 0) end
if ARGV[3] ~= '1' then return {'ok', 0} end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[5]) then
  return refuse('session', KEYS[7], redis.call('PTTL', KEYS[2]))
end
local max_requests, max_tokens = tonumber(ARGV[6]), tonumber(ARGV[7])
if (max_requests > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= max_requests)
    or (max_tokens > 0 and tonumber(redis.call('GET', KEYS[4]) or '0') >= max_tokens) then
  return refuse('budget', KEYS[7], 0)
end
count(KEYS[2], ARGV[4])
count(KEYS[3], ARGV[8])
if tonumber(ARGV[11]) > 0 then
  redis.call('INCRBY', KEYS[4], ARGV[11])
  if redis.call('PTTL', KEYS[4]) < 0 then redis.call('PEXPIRE', KEYS[4], ARGV[8]) end
end
return {'ok', 0}
"""

# The session's conversation id: the candidate if this call created the mapping, else the
# existing one. Two simultaneous first requests of a session therefore agree on one id.
# ARGV[2]: the retention in ms ('0' = none), so a mapping never outlives it.
RESOLVE_SESSION_SCRIPT = """
local created
if ARGV[2] == '0' then created = redis.call('SET', KEYS[1], ARGV[1], 'NX')
else created = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) end
if created then return ARGV[1] end
return redis.call('GET', KEYS[1])
"""

# Appends one message and updates the summary in one atomic step.
# ARGV: id, sessionId, now, message JSON without createdAt, lastMessage, history count, create (1/0),
# retention ms ('0' = keep forever: a conversation kept under an earlier retention is kept from now on).
# Workers stamp `now` before their request reaches Redis, so simultaneous appends can arrive out
# of clock order: the message's createdAt is never earlier than the conversation's updatedAt,
# which keeps createdAt in list order and makes updatedAt the running maximum of the stamps.
# With create=0 a missing conversation (deleted meanwhile) is not brought back; returns false.
# Returns the newest <history count> messages, including the new one.
APPEND_SCRIPT = """
local now = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[7] ~= '1' then return false end
  redis.call('HSET', KEYS[1], '_id', ARGV[1], 'sessionId', ARGV[2], 'createdAt', now)
else
  now = math.max(now, tonumber(redis.call('HGET', KEYS[1], 'updatedAt')))
end
local message = string.sub(ARGV[4], 1, -2) .. ',"createdAt":' .. string.format('%d', now) .. '}'
local count = redis.call('RPUSH', KEYS[2], message)
redis.call('HSET', KEYS[1], 'updatedAt', now, 'lastMessage', ARGV[5], 'messageCount', count)
for i = 1, 2 do
  if ARGV[8] == '0' then redis.call('PERSIST', KEYS[i]) else redis.call('PEXPIRE', KEYS[i], ARGV[8]) end
end
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

# Takes one dashboard sign-in attempt of a client's window (KEYS[1]), if fewer than ARGV[1] were
# taken: checking and counting in one step, so simultaneous tries cannot slip past the limit.
# The window (ARGV[2] ms) starts with the first attempt and expires with it.
# Returns {1, 0} when taken, {0, ms until the window ends} when not.
LOGIN_ATTEMPT_SCRIPT = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return {0, redis.call('PTTL', KEYS[1])} end
if redis.call('INCR', KEYS[1]) == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, 0}
"""

# Un-counts one attempt of a sign-in window (KEYS[1]) if the window still exists.
GIVE_BACK_ATTEMPT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end
"""

# Removes a session mapping only if it still points at the given conversation.
UNMAP_SESSION_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Counts one stored message of conversation ARGV[1] in the totals: always for a message that
# may create the conversation (ARGV[2] = '1'), else only while the conversation is counted, so
# a reply stored after its conversation was deleted adds nothing.
COUNT_MESSAGE_SCRIPT = """
if ARGV[2] == '1' or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
  redis.call('INCR', KEYS[2])
end
"""

# Adds ARGV[2i-1] to the counter KEYS[i] and sets it to expire ARGV[2i] ms from now, for each i.
ADD_EXPIRING_SCRIPT = """
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[2 * i - 1])
  redis.call('PEXPIRE', key, ARGV[2 * i])
end
"""

# Takes the messages counted for the conversations ARGV off the total and forgets them.
FORGET_MESSAGES_SCRIPT = """
local sum = 0
for _, n in ipairs(redis.call('HMGET', KEYS[1], unpack(ARGV))) do sum = sum + (tonumber(n) or 0) end
redis.call('HDEL', KEYS[1], unpack(ARGV))
if sum > 0 then redis.call('DECRBY', KEYS[2], sum) end
return sum
"""


@dataclass(frozen=True)
class Admission:
    """The verdict on one chat request, and what was learnt on the way."""

    verdict: str  # 'ok', 'ip', 'key', 'session' or 'budget'
    retry_after_ms: int
    conversation_id: str | None  # the session's conversation, if it already has one


@dataclass(frozen=True)
class Page:
    conversations: list[dict]
    total: int
    next_cursor: str | None


class InvalidCursor(ValueError):
    """The listing cursor was not produced by this service."""


def parse_cursor(cursor: str) -> tuple[int, str]:
    """(score, conversation id) of a listing cursor; InvalidCursor if the service made no such cursor."""
    match = CURSOR.fullmatch(cursor)
    if not match:
        raise InvalidCursor(cursor)
    return int(match.group(1)), match.group(2)


def current() -> "Storage":
    """The storage of the app handling the current request (create_app builds it)."""
    return current_app.extensions["storage"]


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
    """Conversations, messages, session mappings, rate-limit counters and hourly counts in Redis."""

    def __init__(self, client, prefix: str, clock=time.time, retention_ms: int | None = None):
        self.client = client
        self.keys = Keys(prefix)
        self.clock = clock  # seconds since the epoch; replaceable to test the day rollover
        self.retention_ms = retention_ms  # None: conversations are kept until deleted

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def utc_hour(self) -> str:
        """This UTC hour as YYYY-MM-DDTHH, the name of its hourly counts."""
        return time.strftime(HOUR_FORMAT, time.gmtime(self.clock()))

    def utc_day(self) -> tuple[str, int]:
        """Today's UTC date as YYYY-MM-DD, and the ms left until the next UTC day."""
        now_ms = self.now_ms()
        # Unix time has no leap seconds: every UTC day starts at a multiple of DAY_MS. (Plain
        # arithmetic: these run twice per chat turn, and datetime objects cost more.)
        return time.strftime("%Y-%m-%d", time.gmtime(now_ms // 1000)), DAY_MS - now_ms % DAY_MS

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

    def admit(self, client_ip: str, session_id: str | None, limits, key_valid: bool = True) -> Admission:
        """Count a chat request against its IP window and, for a turn of session_id, against
        the session's window and the daily budgets; look up the session's conversation in the
        same round trip. session_id is None when the request is not a valid turn. The request
        and its refusal, if any, go into this hour's counts.
        """
        day, until_tomorrow_ms = self.utc_day()
        hour = self.utc_hour()
        pipe = self.client.pipeline(transaction=False)
        self._run(
            pipe,
            ADMIT_SCRIPT,
            [
                self.keys.client_requests(client_ip),
                self.keys.session_messages(session_id or ""),
                self.keys.daily_requests(day),
                self.keys.daily_tokens(day),
                self.keys.hourly_count("chatRequests", hour),
                self.keys.hourly_count("unauthorized", hour),
                self.keys.hourly_count("rateLimited", hour),
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
                "1" if key_valid else "0",
                HOURLY_COUNT_LIFETIME_MS,
                limits.turn_token_reservation,
            ],
        )
        if session_id:
            # Reading the mapping also moves its expiry (or removes it, without a retention), so
            # it lives as long as the conversation that this turn is about to write.
            if self.retention_ms:
                pipe.getex(self.keys.session(session_id), px=self.retention_ms)
            else:
                pipe.getex(self.keys.session(session_id), persist=True)
        (verdict, retry_ms), *conversation = pipe.execute()
        retry_ms = until_tomorrow_ms if verdict == "budget" else max(int(retry_ms), 0)
        return Admission(verdict, retry_ms, conversation[0] if conversation else None)

    def take_login_attempt(self, client: str, max_attempts: int, window_ms: int) -> tuple[bool, int]:
        """Take one dashboard sign-in attempt of client's window (an address's identity, or a
        known device): (True, 0), or (False, ms until the window ends) once max_attempts are
        taken. Checked and counted in one step; a successful sign-in gives its attempt back."""
        taken, retry_ms = self._run(self.client, LOGIN_ATTEMPT_SCRIPT, [self.keys.login_failures(client)],
                                    [max_attempts, window_ms])
        return bool(taken), max(int(retry_ms), 0)

    def give_back_login_attempt(self, client: str) -> None:
        """Un-count the attempt of a sign-in that succeeded: only failures fill the window.

        Only while the window exists: a plain DECR after it expired would leave a counter of -1
        that never expires (one free attempt for ever)."""
        self._run(self.client, GIVE_BACK_ATTEMPT_SCRIPT, [self.keys.login_failures(client)])

    def open_dashboard_session(self, session_id: str, lifetime_ms: int) -> None:
        """Record a dashboard session as open, for lifetime_ms at most (its cookie's lifetime)."""
        self.client.set(self.keys.dashboard_session(session_id), 1, px=lifetime_ms)

    def dashboard_session_open(self, session_id: str) -> bool:
        """True while the session has neither been signed out nor expired."""
        return bool(self.client.exists(self.keys.dashboard_session(session_id)))

    def close_dashboard_session(self, session_id: str) -> None:
        """Sign a session out on the server: a copy of its cookie no longer opens anything."""
        self.client.delete(self.keys.dashboard_session(session_id))

    def conversation_for_session(self, session_id: str) -> str:
        """The conversation id of session_id, created atomically on first use."""
        return self._run(
            self.client, RESOLVE_SESSION_SCRIPT, [self.keys.session(session_id)], [new_id(), self.retention_ms or 0]
        )

    def append_message(
        self,
        conversation_id: str,
        session_id: str,
        role: str,
        content: str,
        history: int = 0,
        interrupted: bool = False,
        output_tokens: int = 0,
        finish_reason: str | None = None,
        reserved_tokens: int = 0,
        pipeline=None,
    ) -> list[dict]:
        """Store a message and return the newest `history` messages (one round trip).

        A user message creates the conversation if needed; an assistant message is dropped if
        the conversation was deleted while the reply was being generated. A reply the model
        stopped early carries its finish_reason ("length"...) as `finishReason` and is counted
        (incompleteReplies). output_tokens are
        added to the day's spending and this hour's count in the same round trip (the day's net
        of the reserved_tokens its admission set aside), and the
        conversation is set to expire after the retention (admission does the same for the
        session mapping). Given a pipeline, the commands are only queued on it (bulk writes:
        the caller executes it) and nothing is returned.
        """
        created_at = self.now_ms()
        message = {"_id": new_id(), "role": role, "content": content}  # the script adds createdAt
        if interrupted:
            message["interrupted"] = True
        if finish_reason:
            message["finishReason"] = finish_reason
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
                self.retention_ms or 0,
            ],
        )
        # XX: a reply never re-adds a conversation that was deleted meanwhile. GT: like updatedAt,
        # the score only moves forward, whatever order simultaneous appends arrive in.
        pipe.zadd(self.keys.index(), {conversation_id: created_at}, xx=not creates, gt=True)
        self._run(
            pipe, COUNT_MESSAGE_SCRIPT, [self.keys.message_counts(), self.keys.message_total()],
            [conversation_id, "1" if creates else "0"],
        )
        counters = []
        if output_tokens != reserved_tokens:
            counters.append(self._daily_tokens_change(output_tokens - reserved_tokens))
        if output_tokens:
            hour = self.utc_hour()
            counters.append((self.keys.hourly_count("outputTokens", hour), output_tokens, HOURLY_COUNT_LIFETIME_MS))
        if finish_reason:
            counters.append((self.keys.hourly_count("incompleteReplies", self.utc_hour()), 1, HOURLY_COUNT_LIFETIME_MS))
        if counters:
            self._add_expiring(pipe, counters)
        if pipeline is not None:
            return []
        recent = pipe.execute()[0]
        return [json.loads(item) for item in recent or []]

    def unanswered(self, conversation_id: str, content: str, history: int) -> list[dict] | None:
        """The newest `history` messages if the conversation's last user message has this content
        and no complete reply followed it (its turn failed, or its reply was interrupted, as at a
        restart); else None. One command."""
        recent = [json.loads(item) for item in self.client.lrange(self.keys.messages(conversation_id), -history, -1)]
        end = len(recent)
        while end and recent[end - 1]["role"] == "assistant" and recent[end - 1].get("interrupted"):
            end -= 1
        if not end or recent[end - 1]["role"] != "user" or recent[end - 1]["content"] != content:
            return None
        return recent

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
        self.sweep()
        index = self.keys.index()
        pipe = self.client.pipeline(transaction=False)
        if cursor is None:
            pipe.zrevrange(index, 0, limit, withscores=True)
        else:
            score, after_id = parse_cursor(cursor)
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
        summaries = self._summaries(page)
        next_cursor = f"{int(page[-1][1])}:{page[-1][0]}" if more and page else None
        return Page(summaries, total, next_cursor)

    def _summaries(self, entries: list[tuple[str, float]]) -> list[dict]:
        """Summaries of the listed (id, updatedAt) index entries whose conversation still exists.

        Entries whose conversation is gone (expired or evicted) are skipped and removed.
        """
        pipe = self.client.pipeline(transaction=False)
        for conversation_id, _ in entries:
            pipe.hgetall(self.keys.conversation(conversation_id))
        found = pipe.execute()
        missing = [(cid, score) for (cid, score), fields in zip(entries, found) if not fields]
        orphans = [cid for cid, score in missing if score < self.now_ms() - ORPHAN_GRACE_MS]
        if orphans:
            self._delete(orphans)
        return [summary_from_hash(fields) for fields in found if fields]

    def session_conversation(self, session_id: str) -> dict | None:
        """The summary of the session's conversation, or None if it has none."""
        conversation_id = self.client.get(self.keys.session(session_id))
        fields = self.client.hgetall(self.keys.conversation(conversation_id)) if conversation_id else None
        return summary_from_hash(fields) if fields else None

    def get_conversation(self, conversation_id: str) -> tuple[dict, list[dict]] | None:
        """(summary, messages oldest first), or None if unknown."""
        if not CONVERSATION_ID.fullmatch(conversation_id):
            return None
        found = self._threads([conversation_id])
        return found[0] if found else None

    def delete_conversation(self, conversation_id: str) -> bool:
        """Remove a conversation, its messages, its session mapping and index entry."""
        if not CONVERSATION_ID.fullmatch(conversation_id):
            return False
        return self._delete([conversation_id])[0]

    def _delete(self, conversation_ids: list[str]) -> list[bool]:
        """Delete conversations and everything that points at them, in two round trips whatever
        their number; for each, whether anything of it existed."""
        pipe = self.client.pipeline(transaction=False)
        for conversation_id in conversation_ids:
            keys = [self.keys.conversation(conversation_id), self.keys.messages(conversation_id)]
            self._run(pipe, DELETE_SCRIPT, keys)
        sessions = pipe.execute()
        pipe = self.client.pipeline(transaction=False)
        for conversation_id in conversation_ids:
            pipe.zrem(self.keys.index(), conversation_id)
        self._run(pipe, FORGET_MESSAGES_SCRIPT, [self.keys.message_counts(), self.keys.message_total()], conversation_ids)
        for conversation_id, session_id in zip(conversation_ids, sessions):
            if session_id:
                self._run(pipe, UNMAP_SESSION_SCRIPT, [self.keys.session(session_id)], [conversation_id])
        in_index = pipe.execute()[: len(conversation_ids)]
        return [bool(session_id) or bool(removed) for session_id, removed in zip(sessions, in_index)]

    def erase_session(self, session_id: str) -> tuple[bool, str | None]:
        """Delete everything stored for one end user: the session's conversation with its
        messages, the session mapping and the session's message-quota counter.

        Returns whether anything existed, and the id of the conversation the session had.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.session(session_id))
        pipe.delete(self.keys.session(session_id))
        pipe.delete(self.keys.session_messages(session_id))
        conversation_id, *deleted = pipe.execute()
        existed = any(deleted)
        if conversation_id:
            existed = self._delete([conversation_id])[0] or existed
        return existed, conversation_id

    def purge_idle(self, idle_before_ms: int) -> int:
        """Delete every conversation last updated before idle_before_ms, oldest first, in
        batches; the number of index entries removed (data already expired included)."""
        removed = 0
        while ids := self.client.zrangebyscore(self.keys.index(), "-inf", f"({idle_before_ms}", start=0, num=BATCH):
            self._delete(ids)
            removed += len(ids)
        return removed

    def sweep(self) -> int:
        """Remove the conversations idle for longer than the retention (no-op without one)."""
        return self.purge_idle(self.now_ms() - self.retention_ms) if self.retention_ms else 0

    def export(self, updated_since: int = 0) -> Iterator[tuple[dict, list[dict]]]:
        """(summary, messages) of every conversation updated at or after updated_since (ms),
        least recently updated first, read BATCH conversations per round trip so that memory
        stays flat whatever their number.

        A conversation updated while the export runs moves to the end of the index, so it may
        come twice (the later copy is newer); one deleted meanwhile may be missing.
        """
        self.sweep()
        score, skip = updated_since, 0  # resume after the first `skip` entries scored `score`
        while True:
            entries = self.client.zrangebyscore(
                self.keys.index(), score, "+inf", start=skip, num=BATCH, withscores=True
            )
            yield from self._threads([conversation_id for conversation_id, _ in entries])
            if len(entries) < BATCH:
                return
            last = int(entries[-1][1])
            ties = sum(1 for _, entry_score in entries if int(entry_score) == last)
            skip = skip + ties if last == score else ties
            score = last

    def _threads(self, conversation_ids: list[str]) -> list[tuple[dict, list[dict]]]:
        """(summary, messages) of each conversation that still exists, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for conversation_id in conversation_ids:
            pipe.hgetall(self.keys.conversation(conversation_id))
            pipe.lrange(self.keys.messages(conversation_id), 0, -1)
        replies = pipe.execute()
        return [
            (summary_from_hash(fields), [json.loads(m) for m in messages])
            for fields, messages in zip(replies[::2], replies[1::2])
            if fields
        ]

    def count(self, name: str) -> None:
        """Add one to this hour's count of name (one of COUNTERS).

        Best effort: these counts describe refusals and failures, and losing one to a Redis
        failure must not turn the answer being counted into a 503.
        """
        try:
            self._add_expiring(self.client, [(self.keys.hourly_count(name, self.utc_hour()), 1, HOURLY_COUNT_LIFETIME_MS)])
        except UNAVAILABLE:
            logging.getLogger(__name__).warning("Could not count %s: Redis unavailable", name)

    def release_tokens(self, reserved_tokens: int) -> None:
        """Give back to the day's token budget what an admitted turn reserved and never spent
        (its reply failed before any text). One command; nothing when nothing was reserved."""
        if reserved_tokens:
            self._add_expiring(self.client, [self._daily_tokens_change(-reserved_tokens)])

    def _daily_tokens_change(self, amount: int) -> tuple[str, int, int]:
        day, until_tomorrow_ms = self.utc_day()
        return self.keys.daily_tokens(day), amount, until_tomorrow_ms + DAY_MS

    def _add_expiring(self, target, counters: list[tuple[str, int, int]]) -> None:
        """Add to counters of one slot, each then living its lifetime more, so they clean
        themselves up: (key, amount, lifetime ms) each, in one command."""
        self._run(target, ADD_EXPIRING_SCRIPT, [key for key, _, _ in counters],
                  [value for _, amount, lifetime_ms in counters for value in (amount, lifetime_ms)])

    def stats(self) -> dict:
        """Conversations and messages stored, and each of COUNTERS over the last hour and the
        last day (see _window), in one round trip after the retention sweep."""
        self.sweep()
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        hours = [(now - timedelta(hours=back)).strftime(HOUR_FORMAT) for back in range(25)]
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(self.keys.index())
        pipe.get(self.keys.message_total())
        for name in COUNTERS:
            # The counts share the {admission} slot, so one MGET reads them even on a cluster,
            # whose pipelines refuse mget() but route a single-slot MGET command.
            pipe.execute_command("MGET", *[self.keys.hourly_count(name, hour) for hour in hours])
        conversations, messages, *hourly = pipe.execute()
        into_hour = (now.minute * 60 + now.second + now.microsecond / 1e6) / 3600
        per_name = [[int(count or 0) for count in counts] for counts in hourly]
        return {
            "conversations": conversations,
            "messages": int(messages or 0),
            "lastHour": {name: _window(counts, 1, into_hour) for name, counts in zip(COUNTERS, per_name)},
            "lastDay": {name: _window(counts, 24, into_hour) for name, counts in zip(COUNTERS, per_name)},
        }


def _window(hourly: list[int], hours: int, into_hour: float) -> int:
    """Events in the last `hours` hours, from hourly counts (newest first, this hour's so far).

    The window covers this hour so far, the hours - 1 before it, and the part of the hour
    before those that still lies inside the window; that oldest hour is taken pro rata,
    assuming its events were spread evenly. Rounded to a whole number.
    """
    return round(sum(hourly[:hours]) + hourly[hours] * (1 - into_hour))


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
