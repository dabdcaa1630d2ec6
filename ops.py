"""Operations on stored data, shared by the admin API, the dashboard and the ops CLI: export,
erasure of one end user's data, deletion, purge, knowledge documents, and the stats as
Prometheus metrics.

Deletions are logged with ids and counts only, never message content.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import chain

from flask import Response, current_app

import auth
import knowledge
import services
import storage

# Each hourly counter as a Prometheus gauge: name and help.
METRICS = {
    "chatRequests": ("ocw_chat_requests", "Requests to the chat routes"),
    "outputTokens": ("ocw_output_tokens", "Model output tokens of replies, streamed or whole"),
    "unauthorized": ("ocw_unauthorized_requests", "Requests answered 401"),
    "rateLimited": ("ocw_rate_limited_requests", "Chat requests answered 429"),
    "refusedOrigins": ("ocw_refused_origin_requests", "Requests answered 403 for their Origin"),
    "upstreamErrors": ("ocw_upstream_errors", "Replies that failed at the model upstream"),
    "incompleteReplies": (
        "ocw_incomplete_replies",
        "Replies the model stopped early (finish reason length, content_filter...)",
    ),
}


def delete_conversation(conversation_id: str) -> bool:
    """Delete one conversation with everything that points at it; False if it was unknown."""
    deleted = services.current().store.erasure.delete(conversation_id)
    if deleted:
        current_app.logger.info("Deleted conversation %s", conversation_id)
    return deleted


def erase_session(session_id: str) -> bool:
    """Erase everything stored for one end user; False if nothing was stored.

    The log names the session by a fingerprint only: the erased person's identifier is not kept.
    """
    existed, conversation_id = services.current().store.erasure.erase_session(session_id)
    if existed:
        current_app.logger.info(
            "Erased session %s (conversation %s)", auth.fingerprint(session_id), conversation_id or "none"
        )
    return existed


def purge(idle_days: float) -> int:
    """Delete the conversations idle for more than idle_days; how many index entries went."""
    store = services.current().store
    removed = store.erasure.purge_idle(store.clock.now_ms() - round(idle_days * storage.DAY_MS))
    current_app.logger.info("Purged %d conversations idle for more than %g days", removed, idle_days)
    return removed


def put_document(document: knowledge.Document) -> int:
    """Chunk a knowledge document, embed its chunks when EMBEDDING_MODEL is set, and store it
    (replacing a document of the same id); the number of chunks. Raises llm.UpstreamError when
    the embeddings call fails (nothing is stored then)."""
    ocw = services.current()
    texts = knowledge.chunk(document.content, document.format)
    chunks: list[dict] = [{"text": text} for text in texts]
    if ocw.embedder is not None:
        for start in range(0, len(texts), knowledge.EMBEDDING_BATCH):
            vectors = ocw.embedder.embed(texts[start : start + knowledge.EMBEDDING_BATCH])
            for chunk, vector in zip(chunks[start:], vectors, strict=False):
                chunk["vector"] = knowledge.pack_vector(vector)
    ocw.store.knowledge.put(document.id, document.title, document.url, document.format, document.content, chunks)
    current_app.logger.info("Stored knowledge document %s (%d chunks)", document.id, len(chunks))
    return len(chunks)


def delete_document(document_id: str) -> bool:
    """Delete a knowledge document; False if it was unknown."""
    deleted = services.current().store.knowledge.delete(document_id)
    if deleted:
        current_app.logger.info("Deleted knowledge document %s", document_id)
    return deleted


def export_lines(store: storage.Storage, updated_since: int) -> Iterator[bytes]:
    """The NDJSON export: one `{"conversation": summary, "messages": [...]}` line each."""
    for summary, messages in store.conversations.export(updated_since):
        line = json.dumps({"conversation": summary, "messages": messages}, ensure_ascii=False)
        yield (line + "\n").encode()


def export_download(updated_since: int) -> Response:
    """The NDJSON export as a file download (the admin API's and the dashboard's)."""
    lines = export_lines(services.current().store, updated_since)
    # Read the first batch now, so that Redis being down is a 503, not a stream cut at once.
    first = next(lines, None)
    headers = {
        "Content-Type": "application/x-ndjson; charset=utf-8",
        "Cache-Control": "no-store",
        "Content-Disposition": 'attachment; filename="conversations.ndjson"',
    }
    return Response(chain([first] if first else [], lines), headers=headers)


def prometheus_text(stats: dict) -> str:
    """storage.Storage.stats() in the Prometheus text exposition format (version 0.0.4)."""
    lines = []

    def gauge(name: str, help_text: str, samples: list[str]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples])

    gauge("ocw_conversations", "Conversations stored.", [f"ocw_conversations {stats['conversations']}"])
    gauge("ocw_messages", "Messages stored.", [f"ocw_messages {stats['messages']}"])
    for counter in storage.COUNTERS:
        name, help_text = METRICS[counter]
        gauge(
            name,
            f"{help_text} in the last hour or day (estimated from hourly counts).",
            [
                f'{name}{{window="1h"}} {stats["lastHour"][counter]}',
                f'{name}{{window="24h"}} {stats["lastDay"][counter]}',
            ],
        )
    return "\n".join(lines) + "\n"
