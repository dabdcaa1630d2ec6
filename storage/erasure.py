"""Deleting conversations with everything that points at them: one at a time (admin API,
dashboard, CLI), one end user's data (erasure requests), the idle ones (purge), and those past
the retention (the sweep that listing, export and stats start with)."""

from __future__ import annotations

from . import scripts
from .clock import Clock
from .keys import CONVERSATION_ID, Keys

BATCH = 100  # conversations per round trip when sweeping or purging


class Erasure:
    """Removes conversations: their two keys, their session mapping, their index entry and their
    place in the message totals."""

    def __init__(self, client, keys: Keys, clock: Clock, retention_ms: int | None):
        self.client, self.keys, self.clock = client, keys, clock
        self.retention_ms = retention_ms  # None: conversations are kept until deleted

    def delete(self, conversation_id: str) -> bool:
        """Remove a conversation, its messages, its session mapping and index entry."""
        if not CONVERSATION_ID.fullmatch(conversation_id):
            return False
        return self.delete_many([conversation_id])[0]

    def delete_many(self, conversation_ids: list[str]) -> list[bool]:
        """Delete conversations and everything that points at them, in two round trips whatever
        their number; for each, whether anything of it existed."""
        pipe = self.client.pipeline(transaction=False)
        for conversation_id in conversation_ids:
            keys = [self.keys.conversation(conversation_id), self.keys.messages(conversation_id)]
            scripts.run(pipe, scripts.DELETE_CONVERSATION, keys)
        sessions = pipe.execute()
        pipe = self.client.pipeline(transaction=False)
        for conversation_id in conversation_ids:
            pipe.zrem(self.keys.index(), conversation_id)
        scripts.run(
            pipe, scripts.FORGET_MESSAGES, [self.keys.message_counts(), self.keys.message_total()], conversation_ids
        )
        for conversation_id, session_id in zip(conversation_ids, sessions, strict=True):
            if session_id:
                scripts.run(pipe, scripts.UNMAP_SESSION, [self.keys.session(session_id)], [conversation_id])
        in_index = pipe.execute()[: len(conversation_ids)]
        return [bool(session_id) or bool(removed) for session_id, removed in zip(sessions, in_index, strict=True)]

    def erase_session(self, session_id: str) -> tuple[bool, str | None]:
        """Delete everything stored for one end user: the session's conversation with its
        messages, the session mapping and the session's message-quota counter.

        Returns whether anything existed, and the id of the conversation the session had.
        """
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.keys.session(session_id))
        pipe.delete(self.keys.session(session_id))
        pipe.delete(self.keys.session_quota(session_id))
        conversation_id, *deleted = pipe.execute()
        existed = any(deleted)
        if conversation_id:
            existed = self.delete_many([conversation_id])[0] or existed
        return existed, conversation_id

    def purge_idle(self, idle_before_ms: int) -> int:
        """Delete every conversation last updated before idle_before_ms, oldest first, in
        batches; the number of index entries removed (data already expired included)."""
        removed = 0
        while ids := self.client.zrangebyscore(self.keys.index(), "-inf", f"({idle_before_ms}", start=0, num=BATCH):
            self.delete_many(ids)
            removed += len(ids)
        return removed

    def sweep(self) -> int:
        """Remove the conversations idle for longer than the retention (no-op without one)."""
        return self.purge_idle(self.clock.now_ms() - self.retention_ms) if self.retention_ms else 0
