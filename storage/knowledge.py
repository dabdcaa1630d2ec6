"""Knowledge documents: what a site's owner gives the bot to answer from, with their chunks.

Each document's hash and chunk list share its hash tag, so replacing a document is one atomic
script on one slot. The index of ids and the version counter are separate keys, written in the
same non-transactional pipeline (as the conversation index is).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from greenlets import let_others_run

from . import scripts
from .clock import Clock
from .keys import Keys

SLICE = 200  # chunks per round trip when every chunk is read
YIELD_EVERY_CHUNKS = 200  # chunks serialised between two switches to other requests


@dataclass(frozen=True)
class StoredChunk:
    """One chunk of a document, as the search index needs it."""

    document_id: str
    title: str
    url: str | None
    text: str
    vector: str | None  # base64 of little-endian float32, when embeddings are configured


class Knowledge:
    """Knowledge documents under their ids (`^[A-Za-z0-9._:-]{1,128}$`)."""

    def __init__(self, client, keys: Keys, clock: Clock):
        self.client, self.keys, self.clock = client, keys, clock

    def put(self, document_id: str, title: str, url: str | None, fmt: str, content: str, chunks: list[dict]) -> None:
        """Store or replace a document and its chunks (`{"text", "vector"?}` each) in one round trip."""
        serialised = []
        for n, chunk in enumerate(chunks):
            serialised.append(json.dumps(chunk, ensure_ascii=False, separators=(",", ":")))
            if n % YIELD_EVERY_CHUNKS == YIELD_EVERY_CHUNKS - 1:
                let_others_run()  # a 2 MB document is thousands of chunks
        pipe = self.client.pipeline(transaction=False)
        scripts.run(
            pipe,
            scripts.PUT_KNOWLEDGE_DOCUMENT,
            [self.keys.knowledge_document(document_id), self.keys.knowledge_chunks(document_id)],
            [document_id, title, url or "", fmt, content, self.clock.now_ms(), *serialised],
        )
        pipe.zadd(self.keys.knowledge_index(), {document_id: 0})
        pipe.incr(self.keys.knowledge_version())
        pipe.execute()

    def get(self, document_id: str) -> dict | None:
        """The document `{"id", "title", "url", "format", "content", "chunks", "updatedAt"}`, or None."""
        fields = self.client.hgetall(self.keys.knowledge_document(document_id))
        return _document(fields, with_content=True) if fields else None

    def delete(self, document_id: str) -> bool:
        """Delete a document and its chunks; False if it was unknown."""
        pipe = self.client.pipeline(transaction=False)
        # One DEL of the two keys (one slot): cluster pipelines refuse delete() of several keys but
        # route a single-slot DEL command.
        pipe.execute_command("DEL", self.keys.knowledge_document(document_id), self.keys.knowledge_chunks(document_id))
        pipe.zrem(self.keys.knowledge_index(), document_id)
        pipe.incr(self.keys.knowledge_version())
        deleted, removed, _ = pipe.execute()
        return bool(deleted or removed)

    def page(self, limit: int, after: str | None = None) -> tuple[list[dict], str | None]:
        """Up to limit documents (without content) in id order after the id `after`, and the
        cursor of the next page (the last id) or None."""
        start = f"({after}" if after else "-"
        ids = self.client.zrangebylex(self.keys.knowledge_index(), start, "+", start=0, num=limit + 1)
        listed = ids[:limit]
        pipe = self.client.pipeline(transaction=False)
        for document_id in listed:
            pipe.hmget(self.keys.knowledge_document(document_id), "id", "title", "url", "chunks", "updatedAt")
        documents = [
            _document(dict(zip(("id", "title", "url", "chunks", "updatedAt"), values, strict=True)))
            for values in pipe.execute()
            if values[0] is not None
        ]
        return documents, (listed[-1] if len(ids) > limit else None)

    def count(self) -> int:
        """How many documents are stored."""
        return self.client.zcard(self.keys.knowledge_index())

    def chunks(self) -> Iterator[StoredChunk]:
        """Every chunk of every document, in document order, SLICE chunks per round trip (so that
        reading a reply never keeps the worker from other requests for long)."""
        for document_id in self.client.zrange(self.keys.knowledge_index(), 0, -1):
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(self.keys.knowledge_document(document_id), "title", "url")
            pipe.lrange(self.keys.knowledge_chunks(document_id), 0, SLICE - 1)
            (title, url), chunks = pipe.execute()
            title, url = title or document_id, url or None
            start = 0
            while chunks:
                for chunk in map(json.loads, chunks):
                    yield StoredChunk(document_id, title, url, chunk["text"], chunk.get("vector"))
                if len(chunks) < SLICE:
                    break
                start += SLICE
                chunks = self.client.lrange(self.keys.knowledge_chunks(document_id), start, start + SLICE - 1)


def _document(fields: dict, with_content: bool = False) -> dict:
    """The API's document from the stored hash."""
    document = {
        "id": fields["id"],
        "title": fields.get("title") or "",
        "url": fields.get("url") or None,
        "chunks": int(fields.get("chunks") or 0),
        "updatedAt": int(fields.get("updatedAt") or 0),
    }
    if with_content:
        document["format"] = fields.get("format") or "markdown"
        document["content"] = fields.get("content") or ""
    return document
