"""The `admin` blueprint: the admin API under /v1/admin, and /metrics at the root, where
Prometheus looks. Every route needs the admin key (auth.admin_guard)."""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify, request

import auth
import ops
import services
import storage
from chat import SESSION_ID, SESSION_ID_RULE, invalid_session_id_query
from errors import json_error

LIMIT = re.compile(r"[0-9]{1,3}")
MILLISECONDS = re.compile(r"[0-9]{1,16}")
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

admin = Blueprint("admin", __name__)
admin.before_request(auth.admin_guard)


@admin.get("/v1/admin/conversations")
def list_conversations():
    """A page of conversation summaries, most recently updated first."""
    raw_limit = request.args.get("limit", "100")
    limit = int(raw_limit) if LIMIT.fullmatch(raw_limit) else 0
    if not 1 <= limit <= 200:
        return json_error(400, "Invalid query", details={"limit": "must be an integer from 1 to 200"})
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
