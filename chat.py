"""The chat turn, from the request to the last stored byte: the `chat` blueprint.

A turn is admitted (`admit`, the blueprint's hook: rate limit, widget key, body, session quota,
daily budget), its user message stored and its prompt built (`start_turn`), then answered whole
(`/v1/chat`) or streamed as NDJSON (`relay_reply`), and the reply stored. Storage is
storage.Storage, the model llm.Model, the keys auth.
"""

from __future__ import annotations

import json
import math
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

import auth
import drain
import services
import storage
from config import JS_WHITESPACE
from connections import peer_closed
from errors import json_error
from knowledge import Passage
from llm import UpstreamError, build_prompt, estimate_tokens
from services import Services

MAX_MESSAGE_CHARS = 4000
# The largest body a valid turn needs, with room to spare: 4000 characters written as JSON
# escapes (\uXXXX, 6 bytes each: 24 kB), a session id, and fields the service ignores.
MAX_BODY_BYTES = 64 * 1024
SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SESSION_ID_RULE = "must be 1-128 characters of A-Z a-z 0-9 . _ : -"
HISTORY_LIMIT = 100
EMPTY_REPLY = "I could not generate a response right now."
STREAM_HEADERS = {
    "Content-Type": "application/x-ndjson; charset=utf-8",
    "Cache-Control": "no-store, no-transform",
    "X-Accel-Buffering": "no",  # nginx and similar proxies must not buffer the stream
}
# The answer to each refusing admission verdict: status and message.
REFUSALS = {
    storage.Verdict.CLIENT_RATE: (429, "Too many requests"),
    storage.Verdict.SESSION_QUOTA: (429, "Too many messages in this conversation, try again later"),
    storage.Verdict.BUDGET: (429, "Daily budget exhausted"),
}

chat = Blueprint("chat", __name__)


# ---- the request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatRequest:
    """A valid chat body, and what admission learnt of its session."""

    session_id: str
    message: str  # trimmed
    # Sent again after a failed reply: not stored twice if it is still the unanswered last message.
    retry: bool = False
    conversation_id: str | None = None  # the session's conversation, if it already has one
    knowledge_version: str | None = None  # None while there are no knowledge documents


class InvalidBody(Exception):
    """The body broke a rule; details name each bad field."""

    def __init__(self, details: dict):
        super().__init__(details)
        self.details = details


def parse(raw: bytes) -> ChatRequest:
    """The request described by a JSON body, or InvalidBody naming what is wrong.

    The body is parsed whatever the Content-Type says, so clients that omit or mislabel it
    still work; fields other than sessionId, message and retry are ignored.
    """
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # invalid JSON or UTF-8, or absurd nesting
        body = None
    if not isinstance(body, dict):
        raise InvalidBody({"body": "must be a JSON object"})
    details = {}
    session_id, message, retry = body.get("sessionId"), body.get("message"), body.get("retry", False)
    if not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
        details["sessionId"] = SESSION_ID_RULE
    if not isinstance(message, str) or not message.strip(JS_WHITESPACE) or len(message) > MAX_MESSAGE_CHARS:
        details["message"] = f"must be a string of 1-{MAX_MESSAGE_CHARS} characters, not only whitespace"
    elif not is_unicode_text(message):
        details["message"] = "must be valid Unicode text (no lone surrogates)"
    if not isinstance(retry, bool):
        details["retry"] = "must be true or false"
    if details:
        raise InvalidBody(details)
    assert isinstance(session_id, str) and isinstance(message, str)  # checked above, for type checkers
    return ChatRequest(session_id, message.strip(JS_WHITESPACE), retry)


def is_unicode_text(text: str) -> bool:
    """False for strings JSON can carry but UTF-8 cannot (lone surrogates like "\\ud800")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_body():
    """(chat request, refusal): this request's body parsed, or the error response it earns."""
    # A valid body is a few kB; parsing 2 MB of JSON blocks every stream of the worker for ~86 ms.
    request.max_content_length = MAX_BODY_BYTES
    try:
        data = request.get_data()
    except RequestEntityTooLarge:
        data = None
    except HTTPException:
        raise  # a client that left mid-body, or was too slow (connections.py)
    except Exception:  # from the WSGI server's reader, e.g. gunicorn's InvalidChunkSize
        return None, json_error(400, "Invalid request body", details={"body": "could not be read"})
    # werkzeug silently cuts a chunked body at MAX_CONTENT_LENGTH, so a body without a
    # Content-Length that fills the limit is too large too.
    if data is None or (request.content_length is None and len(data) >= MAX_BODY_BYTES):
        return None, json_error(413, "Request body too large")
    try:
        return parse(data), None
    except InvalidBody as exc:
        return None, json_error(400, "Invalid request body", details=exc.details)


@chat.before_request
def admit():
    """Admit a chat request: rate limit, then the widget key, then the body, then the session
    quota and the daily budget; an admitted turn reaches its view as `chat_request`.

    Every Redis check happens in one round trip (storage.limits.Limits.admit), which also finds
    the session's conversation. Only a valid turn with a valid key counts against the session
    and the budget, so nobody without the key can spend them.
    """
    ocw = services.current()
    presented, key_ok = auth.widget_key()
    chat_request, refusal = read_body() if key_ok and request.method == "POST" else (None, None)
    admission = ocw.store.limits.admit(
        auth.client_ip(), chat_request.session_id if chat_request else None, ocw.settings.limits, key_valid=key_ok
    )
    retry_after = {"Retry-After": str(max(1, math.ceil(admission.retry_after_ms / 1000)))}
    if admission.verdict == storage.Verdict.CLIENT_RATE:
        return json_error(*REFUSALS[admission.verdict], headers=retry_after)
    if not key_ok:
        return auth.unauthorized(presented)
    if refusal is not None:
        return refusal
    if admission.verdict in REFUSALS:
        return json_error(*REFUSALS[admission.verdict], headers=retry_after)
    if chat_request is not None and request.view_args is not None:
        request.view_args["chat_request"] = replace(
            chat_request, conversation_id=admission.conversation_id, knowledge_version=admission.knowledge_version
        )
    return None


# ---- the turn ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """An admitted turn whose user message is stored: what answering it needs."""

    session_id: str
    conversation_id: str
    prompt: list[dict]  # OpenAI chat messages: the system message, then the alternating history
    reserved_tokens: int  # of the daily budget, settled when the reply is stored
    sources: list[dict]  # the knowledge documents given to the model: {"id", "title", "url"} each


def start_turn(chat_request: ChatRequest, ocw: Services) -> Turn:
    """Store the user message (before the model is called) and build the model's prompt.

    A retry of a message that is still the conversation's unanswered last one is not stored
    again (it costs one more round trip, retries only).
    """
    settings, conversations = ocw.settings, ocw.store.conversations
    # Admission already looked the conversation up; only a new session needs another step.
    conversation_id = chat_request.conversation_id or conversations.id_for_session(chat_request.session_id)
    recent = None
    if chat_request.retry and chat_request.conversation_id:
        recent = conversations.unanswered(conversation_id, chat_request.message, settings.max_history_messages)
    if recent is None:
        recent = conversations.append_message(
            conversation_id,
            chat_request.session_id,
            "user",
            chat_request.message,
            history=settings.max_history_messages,
        )
    passages = find_passages(chat_request.knowledge_version, recent, ocw)
    prompt = build_prompt(settings.system_prompt, recent, settings.max_history_chars, passages)
    sources = list({p.document_id: {"id": p.document_id, "title": p.title, "url": p.url} for p in passages}.values())
    return Turn(chat_request.session_id, conversation_id, prompt, settings.limits.turn_token_reservation, sources)


def find_passages(knowledge_version: str | None, recent: list[dict], ocw: Services) -> list[Passage]:
    """The knowledge passages for a turn (none while there are no documents): searched with the
    visitor's new message and the one before it, so that "and how much is it?" still finds what
    "it" was. With EMBEDDING_MODEL, the query's embedding is one more call to the upstream; if
    that call fails, the lexical ranking alone answers."""
    if knowledge_version is None:
        return []
    index = ocw.library.index(knowledge_version, ocw.store.knowledge.chunks)
    if not index:
        return []
    query = "\n".join([m["content"] for m in recent if m["role"] == "user"][-2:])
    vector = None
    if ocw.embedder is not None:
        try:
            vector = ocw.embedder.embed([query])[0]
        except UpstreamError as exc:
            current_app.logger.warning("Query embedding failed, ranking lexically: %s", exc.detail)
    return index.search(query, ocw.settings.knowledge_top_k, vector)


def final_text(reply: str) -> str:
    return reply.strip() or EMPTY_REPLY


def early_finish(finish_reason: str | None) -> str | None:
    """The model's finish reason when it stopped before its answer was done ("length",
    "content_filter"...): reported to the client and stored. None for "stop" or no reason."""
    return finish_reason if finish_reason and finish_reason != "stop" else None


def store_reply(
    conversations: storage.Conversations,
    turn: Turn,
    text: str,
    counted_tokens: int | None,
    generated: str,
    finish_reason: str | None = None,
    interrupted: bool = False,
) -> None:
    """Store the turn's reply (text) with its sources, and settle the tokens its admission
    reserved: the upstream's count, else an estimate from the generated text."""
    tokens = counted_tokens if counted_tokens is not None else estimate_tokens(generated)
    conversations.append_message(
        turn.conversation_id,
        turn.session_id,
        "assistant",
        text,
        interrupted=interrupted,
        output_tokens=tokens,
        finish_reason=finish_reason,
        reserved_tokens=turn.reserved_tokens,
        sources=turn.sources,
    )


def log_upstream_failure(logger, exc: UpstreamError) -> None:
    """The operator's line for a failed model call: the cause, with the upstream's status and
    message (llm.UpstreamError.detail: trimmed, on one line, never a key)."""
    logger.warning("Model call failed: %s", exc.detail)


# ---- the routes ----------------------------------------------------------------------------


@chat.post("/v1/chat")
def chat_reply(chat_request: ChatRequest):
    """One turn answered as a single JSON object."""
    ocw = services.current()
    turn = start_turn(chat_request, ocw)
    try:
        completion = ocw.model.complete(turn.prompt)
    except UpstreamError as exc:
        log_upstream_failure(current_app.logger, exc)
        ocw.store.limits.release_tokens(turn.reserved_tokens)
        ocw.store.counts.add("upstreamErrors")
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return json_error(exc.status_code, str(exc), headers=headers)
    reply = final_text(completion.text)
    stopped_early = early_finish(completion.finish_reason)
    store_reply(ocw.store.conversations, turn, reply, completion.output_tokens, completion.text, stopped_early)
    body: dict = {"conversationId": turn.conversation_id, "message": reply}
    if stopped_early:
        body["finishReason"] = stopped_early
    if turn.sources:
        body["sources"] = turn.sources
    return jsonify(body)


@chat.post("/v1/chat/stream")
@chat.post("/chat")
def chat_stream(chat_request: ChatRequest):
    """One turn streamed as NDJSON events (`/chat` is the original widget's endpoint)."""
    ocw = services.current()
    turn = start_turn(chat_request, ocw)
    # The generator outlives the request context: hand it plain objects only.
    lines = relay_reply(turn, ocw, current_app.logger, drain.current, request.environ.get("gunicorn.socket"))
    return Response(lines, headers=STREAM_HEADERS)


@chat.get("/v1/chat/history")
def chat_history():
    """A session's messages, oldest first (the newest HISTORY_LIMIT), so a widget can redraw its thread."""
    session_id = request.args.get("sessionId", "")
    if not SESSION_ID.fullmatch(session_id):
        return invalid_session_id_query()
    response = jsonify(messages=services.current().store.conversations.history(session_id, HISTORY_LIMIT))
    response.headers["Cache-Control"] = "no-store"  # a visitor's conversation is nobody else's
    return response


def invalid_session_id_query():
    """The 400 for a `sessionId` query parameter that breaks the chat rule (history, admin listing)."""
    return json_error(400, "Invalid query", details={"sessionId": SESSION_ID_RULE})


# ---- the stream ----------------------------------------------------------------------------


def ndjson(**event) -> bytes:
    return (json.dumps(event, ensure_ascii=False) + "\n").encode()


def relay_reply(
    turn: Turn, ocw: Services, logger, shutdown: drain.Drain, client: socket.socket | None = None
) -> Iterator[bytes]:
    """The NDJSON lines of one streamed turn, each yielded as soon as it exists.

    A ping goes out after each heartbeat of upstream silence: it keeps idle proxies from cutting
    the stream. Before it, the client's socket (gunicorn's, when there is one) is looked at: a
    client that has closed its end is noticed there, within one heartbeat, and the stream ends.
    Otherwise only a failed write would tell (the WSGI server then closes this generator), and
    the first write into a socket the client has closed still succeeds.

    When the process is stopping and the shutdown's deadline passes, the stream ends with an
    `error` line whose `code` is "restarting" (the widget sends the message again by itself).
    If the reply does not finish, whatever arrived is stored marked interrupted. The tokens the
    turn's admission reserved of the daily budget are settled with the reply, or given back if
    nothing was stored.
    """
    conversations = ocw.store.conversations
    yield ndjson(type="start", conversationId=turn.conversation_id)
    parts: list[str] = []
    stored = False
    reply = None
    try:
        with ocw.model.stream(turn.prompt) as reply:
            for batch in reply.batches(ocw.settings.heartbeat_seconds, shutdown):
                if not batch and peer_closed(client):
                    logger.info("Client left during the model's silence; closing the model's stream")
                    return  # the finally below stores what arrived; leaving the with closes the upstream
                if not batch:
                    yield ndjson(type="ping")
                    continue
                parts.extend(batch)
                # Tokens that arrived together leave in one write, each on its own line.
                yield b"".join(ndjson(type="token", token=delta) for delta in batch)
        text = final_text("".join(parts))
        stopped_early = early_finish(reply.facts.finish_reason)
        store_reply(conversations, turn, text, reply.output_tokens, "".join(parts), stopped_early)
        stored = True
        if turn.sources:
            yield ndjson(type="sources", sources=turn.sources)  # clients ignore types they do not know
        if stopped_early:
            yield ndjson(type="done", message=text, conversationId=turn.conversation_id, finishReason=stopped_early)
        else:
            yield ndjson(type="done", message=text, conversationId=turn.conversation_id)
    except UpstreamError as exc:
        log_upstream_failure(logger, exc)
        ocw.store.counts.add("upstreamErrors")
        yield ndjson(type="error", error=str(exc))
    except drain.ServiceStopping:
        logger.info("Stream ended by the shutdown deadline")
        yield ndjson(type="error", error=drain.RESTARTING_MESSAGE, code="restarting")
    except storage.UNAVAILABLE:
        logger.error("Redis unavailable while storing a reply")
        yield ndjson(type="error", error="Storage unavailable")
    except Exception:
        logger.exception("Stream failed")
        yield ndjson(type="error", error="Internal server error")
    finally:
        if reply is not None and reply.facts.skipped_lines:
            logger.warning("Skipped %d model stream lines that were not JSON", reply.facts.skipped_lines)
        partial = "".join(parts).strip()
        try:
            if not stored and partial:
                # Tokens the model produced but nobody waited for are still paid for.
                store_reply(conversations, turn, partial, None, partial, interrupted=True)
            elif not stored:
                ocw.store.limits.release_tokens(turn.reserved_tokens)
        except storage.UNAVAILABLE:
            logger.error("Could not store an interrupted reply")
