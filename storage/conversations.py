"""Conversations: their summaries and messages, the session mappings, the listing index and
the message totals.

Retention (CONVERSATION_RETENTION_DAYS): every message sets the conversation's keys to expire
that long after it, and every chat turn's admission does the same for its session mapping as it
reads it (limits.Limits.admit). The index cannot expire per member, so the operations that read
it as a whole (listing, export, stats) first sweep out the entries idle for longer than the
retention, oldest first: a cost proportional to what is removed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from . import scripts
from .clock import Clock
from .counts import Counts, add_expiring
from .erasure import Erasure
from .keys import CONVERSATION_ID, Keys, new_id
from .limits import Limits

LAST_MESSAGE_CHARS = 500
BATCH = 100  # conversations per round trip when exporting
# An index entry without its hash is removed only once it is this old: a cluster pipeline may
# write the index entry of a new conversation a moment before the conversation itself.
ORPHAN_GRACE_MS = 60 * 1000
CURSOR = re.compile(r"([0-9]{1,16}):([A-Za-z0-9_-]{1,64})")


@dataclass(frozen=True)
class Page:
    """One page of the listing: summaries newest first, the total, and the next page's cursor."""

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


class Conversations:
    """Conversations and what points at them. Each conversation's two keys share its hash tag,
    so every script touches a single slot."""

    def __init__(
        self,
        client,
        keys: Keys,
        clock: Clock,
        retention_ms: int | None,
        counts: Counts,
        limits: Limits,
        erasure: Erasure,
    ):
        self.client, self.keys, self.clock = client, keys, clock
        self.retention_ms = retention_ms  # None: conversations are kept until deleted
        self.counts, self.limits, self.erasure = counts, limits, erasure

    def id_for_session(self, session_id: str) -> str:
        """The conversation id of session_id, created atomically on first use."""
        return scripts.run(
            self.client, scripts.RESOLVE_SESSION, [self.keys.session(session_id)], [new_id(), self.retention_ms or 0]
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
        sources: list[dict] | None = None,
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
        created_at = self.clock.now_ms()
        message: dict[str, str | bool | list[dict]] = {
            "_id": new_id(),
            "role": role,
            "content": content,
        }  # the script adds createdAt
        if interrupted:
            message["interrupted"] = True
        if finish_reason:
            message["finishReason"] = finish_reason
        if sources:
            message["sources"] = sources  # the knowledge documents the reply was given
        creates = role == "user"
        pipe = self.client.pipeline(transaction=False) if pipeline is None else pipeline
        scripts.run(
            pipe,
            scripts.APPEND,
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
        scripts.run(
            pipe,
            scripts.COUNT_MESSAGE,
            [self.keys.message_counts(), self.keys.message_total()],
            [conversation_id, "1" if creates else "0"],
        )
        changes = []
        if output_tokens != reserved_tokens:
            changes.append(self.limits.tokens_spent(output_tokens - reserved_tokens))
        if output_tokens:
            changes.append(self.counts.change("outputTokens", output_tokens))
        if finish_reason:
            changes.append(self.counts.change("incompleteReplies"))
        if changes:
            add_expiring(pipe, changes)
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

    def history(self, session_id: str, limit: int) -> list[dict]:
        """The newest `limit` messages of a session's conversation, oldest first; [] if it has none.

        A plain GET of the mapping, never SET NX: asking about an unknown session stores nothing.
        Two round trips, whatever the length of the conversation.
        """
        conversation_id = self.client.get(self.keys.session(session_id))
        if conversation_id is None:
            return []
        return [json.loads(m) for m in self.client.lrange(self.keys.messages(conversation_id), -limit, -1)]

    def page(self, limit: int, cursor: str | None = None) -> Page:
        """A page of summaries, newest updatedAt first, in O(log N + limit)."""
        self.erasure.sweep()
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
        missing = [(cid, score) for (cid, score), fields in zip(entries, found, strict=True) if not fields]
        orphans = [cid for cid, score in missing if score < self.clock.now_ms() - ORPHAN_GRACE_MS]
        if orphans:
            self.erasure.delete_many(orphans)
        return [summary_from_hash(fields) for fields in found if fields]

    def of_session(self, session_id: str) -> dict | None:
        """The summary of the session's conversation, or None if it has none."""
        conversation_id = self.client.get(self.keys.session(session_id))
        fields = self.client.hgetall(self.keys.conversation(conversation_id)) if conversation_id else None
        return summary_from_hash(fields) if fields else None

    def get(self, conversation_id: str) -> tuple[dict, list[dict]] | None:
        """(summary, messages oldest first), or None if unknown."""
        if not CONVERSATION_ID.fullmatch(conversation_id):
            return None
        found = self._threads([conversation_id])
        return found[0] if found else None

    def export(self, updated_since: int = 0) -> Iterator[tuple[dict, list[dict]]]:
        """(summary, messages) of every conversation updated at or after updated_since (ms),
        least recently updated first, read BATCH conversations per round trip so that memory
        stays flat whatever their number.

        A conversation updated while the export runs moves to the end of the index, so it may
        come twice (the later copy is newer); one deleted meanwhile may be missing.
        """
        self.erasure.sweep()
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
            for fields, messages in zip(replies[::2], replies[1::2], strict=True)
            if fields
        ]


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
