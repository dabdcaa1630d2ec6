"""Every Redis key of the service, built in this one place.

The layout (types, lifetimes, hash tags) is written out once, in docs/REDIS.md;
tests/test_storage_keys.py holds that document against these builders.
"""

from __future__ import annotations

import re
import uuid

# What a conversation id looks like (new_id makes them): ids from a URL are checked against it
# before any key is built from them.
CONVERSATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_id() -> str:
    """A new conversation or message id: 32 hex characters."""
    return uuid.uuid4().hex


class Keys:
    """Builds every Redis key under one prefix (REDIS_PREFIX); nothing else formats a key.

    Keys in braces share a Redis Cluster hash slot: a conversation's two keys ({<id>}), the
    admission counters ({admission}) and the message totals ({messages}), so each Lua script
    touches one slot.
    """

    def __init__(self, prefix: str):
        self.prefix = prefix

    # ---- conversations (one slot per conversation) ----

    def conversation(self, conversation_id: str) -> str:
        return f"{self.prefix}:conv:{{{conversation_id}}}"

    def messages(self, conversation_id: str) -> str:
        return f"{self.prefix}:conv:{{{conversation_id}}}:messages"

    def session(self, session_id: str) -> str:
        """The conversation id of a chat session."""
        return f"{self.prefix}:session:{session_id}"

    def index(self) -> str:
        """Conversation ids scored by updatedAt: the listing."""
        return f"{self.prefix}:conversations"

    def message_total(self) -> str:
        return f"{self.prefix}:{{messages}}:total"

    def message_counts(self) -> str:
        return f"{self.prefix}:{{messages}}:counts"

    # ---- admission: rate windows, quotas, budgets, counts ({admission} slot) ----

    def client_requests(self, client: str) -> str:
        """Requests of one client (auth.client_identity) in its rate-limit window."""
        return f"{self.prefix}:{{admission}}:ip:{client}"

    def session_quota(self, session_id: str) -> str:
        """Messages of one chat session in its quota window (not its history: that is messages())."""
        return f"{self.prefix}:{{admission}}:session:{session_id}"

    def daily_requests(self, day: str) -> str:
        return f"{self.prefix}:{{admission}}:requests:{day}"

    def daily_tokens(self, day: str) -> str:
        return f"{self.prefix}:{{admission}}:tokens:{day}"

    def hourly_count(self, name: str, hour: str) -> str:
        return f"{self.prefix}:{{admission}}:count:{name}:{hour}"

    def sign_in_attempts(self, client: str) -> str:
        """Dashboard sign-in attempts of a client address, or of a known device."""
        return f"{self.prefix}:{{admission}}:login:{client}"

    # ---- knowledge documents (one slot per document) ----

    def knowledge_document(self, document_id: str) -> str:
        """A knowledge document: its title, url, format, content and chunk count."""
        return f"{self.prefix}:knowledge:{{{document_id}}}"

    def knowledge_chunks(self, document_id: str) -> str:
        """A knowledge document's chunks as JSON, in document order."""
        return f"{self.prefix}:knowledge:{{{document_id}}}:chunks"

    def knowledge_index(self) -> str:
        """Every knowledge document's id (all scored 0, listed in id order)."""
        return f"{self.prefix}:knowledge:documents"

    def knowledge_version(self) -> str:
        """A counter moved by every change to the knowledge documents: workers rebuild their
        search index when it is not the one they built from. In the {admission} slot, so the
        admission script reads it for every turn at no extra command."""
        return f"{self.prefix}:{{admission}}:knowledge-version"

    # ---- dashboard ----

    def dashboard_session(self, session_id: str) -> str:
        return f"{self.prefix}:dashboard:session:{session_id}"
