"""The `admin` blueprint: the admin API under /v1/admin (conversations, erasure, export, stats,
knowledge documents), and /metrics at the root, where Prometheus looks. Every route needs the
admin key (auth.admin_guard)."""

from __future__ import annotations

import json
import re

from flask import Blueprint, Response, current_app, jsonify, request

import auth
import knowledge
import ops
import services
import storage
from chat import SESSION_ID, SESSION_ID_RULE, invalid_session_id_query
from connections import read_body
from errors import json_error
from llm import UpstreamError

LIMIT = re.compile(r"[0-9]{1,3}")
MILLISECONDS = re.compile(r"[0-9]{1,16}")
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
MAX_KNOWLEDGE_BODY_BYTES = 16 * 1024 * 1024

admin = Blueprint("admin", __name__)
admin.before_request(auth.admin_guard)


@admin.get("/v1/admin/conversations")
def list_conversations():
    """A page of conversation summaries, most recently updated first."""
    limit = page_limit()
    if limit is None:
        return invalid_limit()
    session_id, cursor = request.args.get("sessionId"), request.args.get("cursor")
    try:
        if session_id is not None:
            if cursor is not None:
                storage.parse_cursor(cursor)  # ignored beside sessionId, but held to its form all the same
            return session_conversation(session_id)
        page = services.current().store.conversations.page(limit, cursor)
    except storage.InvalidCursor:
        return json_error(400, "Invalid query", details={"cursor": "must be a nextCursor from a previous page"})
    return jsonify(conversations=page.conversations, total=page.total, nextCursor=page.next_cursor)


def page_limit() -> int | None:
    """The `limit` query parameter of a listing (default 100), or None unless it is 1-200."""
    raw_limit = request.args.get("limit", "100")
    limit = int(raw_limit) if LIMIT.fullmatch(raw_limit) else 0
    return limit if 1 <= limit <= 200 else None


def invalid_limit():
    return json_error(400, "Invalid query", details={"limit": "must be an integer from 1 to 200"})


def session_conversation(session_id: str):
    """The listing filtered to one session: its conversation, or none."""
    if not SESSION_ID.fullmatch(session_id):
        return invalid_session_id_query()
    found = services.current().store.conversations.of_session(session_id)
    conversations = [found] if found else []
    return jsonify(conversations=conversations, total=len(conversations), nextCursor=None)


@admin.get("/v1/admin/conversations/<conversation_id>")
def get_conversation(conversation_id: str):
    found = services.current().store.conversations.get(conversation_id)
    if found is None:
        return json_error(404, "Conversation not found")
    summary, messages = found
    return jsonify(conversation=summary, messages=messages)


@admin.delete("/v1/admin/conversations/<conversation_id>")
def delete_conversation(conversation_id: str):
    if not ops.delete_conversation(conversation_id):
        return json_error(404, "Conversation not found")
    return "", 204


@admin.get("/v1/admin/export")
def export_conversations():
    """Every conversation with its messages as NDJSON, read from Redis in batches."""
    raw = request.args.get("updatedSince", "0")
    if not MILLISECONDS.fullmatch(raw):
        return json_error(
            400, "Invalid query", details={"updatedSince": "must be an integer, milliseconds since the epoch"}
        )
    return ops.export_download(int(raw))


@admin.delete("/v1/admin/sessions/<session_id>")
def delete_session(session_id: str):
    """Erase everything stored for one end user (a data-subject request)."""
    if not SESSION_ID.fullmatch(session_id):
        return json_error(400, "Invalid session id", details={"sessionId": SESSION_ID_RULE})
    if not ops.erase_session(session_id):
        return json_error(404, "Session not found")
    return "", 204


@admin.get("/v1/admin/stats")
def stats():
    """Totals, and counts over the last hour and day, shared by every worker and instance."""
    return jsonify(services.current().store.stats())


@admin.get("/metrics")
def metrics():
    """The stats for Prometheus (which sends the admin key as `Authorization: Bearer`)."""
    return Response(ops.prometheus_text(services.current().store.stats()), content_type=PROMETHEUS_TEXT)


# ---- knowledge documents -------------------------------------------------------------------


@admin.put("/v1/admin/knowledge/<document_id>")
def put_document(document_id: str):
    """Store or replace a knowledge document; its chunks are searched on every chat turn."""
    # 2 MB of content may take several times that as JSON escapes.
    request.max_content_length = MAX_KNOWLEDGE_BODY_BYTES
    try:
        body = json.loads(read_body(MAX_KNOWLEDGE_BODY_BYTES))
    except (ValueError, RecursionError):  # not JSON, or not UTF-8
        body = None
    try:
        document = knowledge.document(document_id, body)
    except knowledge.InvalidDocument as exc:
        return json_error(400, "Invalid document", details=exc.details)
    try:
        chunks = ops.put_document(document)
    except UpstreamError as exc:
        current_app.logger.warning("Embedding a knowledge document failed: %s", exc.detail)
        return json_error(exc.status_code, str(exc))
    return jsonify(id=document.id, chunks=chunks)


@admin.get("/v1/admin/knowledge")
def list_documents():
    """A page of knowledge documents (without their content), in id order."""
    limit, cursor = page_limit(), request.args.get("cursor")
    if limit is None:
        return invalid_limit()
    if cursor is not None and not knowledge.DOCUMENT_ID.fullmatch(cursor):
        return json_error(400, "Invalid query", details={"cursor": "must be a nextCursor from a previous page"})
    documents, next_cursor = services.current().store.knowledge.page(limit, cursor)
    return jsonify(documents=documents, nextCursor=next_cursor)


@admin.get("/v1/admin/knowledge/<document_id>")
def get_document(document_id: str):
    valid = knowledge.DOCUMENT_ID.fullmatch(document_id)
    found = services.current().store.knowledge.get(document_id) if valid else None
    if found is None:
        return json_error(404, "Document not found")
    return jsonify(found)


@admin.delete("/v1/admin/knowledge/<document_id>")
def delete_document(document_id: str):
    if not knowledge.DOCUMENT_ID.fullmatch(document_id) or not ops.delete_document(document_id):
        return json_error(404, "Document not found")
    return "", 204
