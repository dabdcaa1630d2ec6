"""The Flask application: the factory, the `chat` and `admin` blueprints and the public routes."""
from __future__ import annotations

import json
import os
import re
import secrets
import select
import socket
from pathlib import Path
from typing import Iterator, Mapping

from flask import Blueprint, Flask, Response, current_app, g, jsonify, render_template, request, send_from_directory

import auth
import cli
import connections
import cors
import dashboard
import drain
import embedded_redis
import errors
import logs
import ops
import requestlog
import storage
from chat_request import SESSION_ID, SESSION_ID_RULE, ChatTurn
from config import Settings, load_settings
from errors import json_error
from llm import DemoResponder, OpenAIClient, UpstreamError, estimate_tokens

ROOT = Path(__file__).resolve().parent
MAX_BODY_BYTES = 2 * 1024 * 1024
HISTORY_LIMIT = 100
EMPTY_REPLY = "I could not generate a response right now."
# The demo page loads only this service's script, talks only to this service, and styles itself
# with one nonce'd <style>: the widget must (and does) work under a policy this strict.
DEMO_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'nonce-{nonce}'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
STREAM_HEADERS = {
    "Content-Type": "application/x-ndjson; charset=utf-8",
    "Cache-Control": "no-store, no-transform",
    "X-Accel-Buffering": "no",  # nginx and similar proxies must not buffer the stream
}


def create_app(config: Mapping[str, str] | None = None) -> Flask:
    """Build the app from the environment; `config` overrides environment variables (tests)."""
    settings = load_settings({**os.environ, **(config or {})})
    app = Flask(__name__, static_folder=None)
    # werkzeug would answer "//x" and "/x/" with a redirect to an absolute URL built from the
    # request's Host header (and an HTML page): no route redirects, so a forged Host leads nowhere.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.config.update(SETTINGS=settings, MAX_CONTENT_LENGTH=MAX_BODY_BYTES)
    app.json.sort_keys = False
    if settings.trusted_proxy_count:
        app.wsgi_app = auth.TrustedProxies(app.wsgi_app, settings.trusted_proxy_count, settings.trusted_proxy_networks)

    redis_url = settings.redis_url or embedded_redis.ensure_running(settings.data_dir, settings.env)
    client = storage.connect(redis_url, tls_verify=settings.redis_tls_verify)
    app.extensions["storage"] = storage.Storage(client, settings.redis_prefix, retention_ms=settings.retention_ms)
    app.extensions["model"] = make_model(settings, app.logger)
    app.extensions["widget_keys"] = auth.KeyRing(settings.widget_keys)
    app.extensions["admin_keys"] = auth.KeyRing(settings.admin_keys)
    app.extensions["openapi"] = json.loads((ROOT / "openapi.json").read_text())

    logs.configure(app.logger, settings.log_format)
    requestlog.init_app(app)
    connections.init_app(app)
    errors.init_app(app)
    cors.init_app(app)
    app.register_blueprint(public)
    app.register_blueprint(chat)
    app.register_blueprint(admin)
    app.register_blueprint(ops.routes)
    dashboard.init_app(app)
    app.cli.add_command(cli.ocw)
    return app


def make_model(settings: Settings, logger):
    if settings.demo_mode:
        return DemoResponder()
    return OpenAIClient(
        settings.openai_base_url,
        settings.openai_api_key,
        settings.openai_model,
        settings.llm_timeout_seconds,
        settings.max_output_tokens,
        settings.stream_usage,
        logger,
    )



# ---- public routes -------------------------------------------------------------------------

public = Blueprint("public", __name__)


@public.get("/")
def home():
    """Development: the demo page (widget, embed snippet, headless example). Production: no key, only pointers."""
    settings: Settings = current_app.config["SETTINGS"]
    if settings.production:
        return jsonify(service="Open Chat Widget API", openapi="/v1/openapi.json", widget="/widget/chat-widget.js")
    nonce = secrets.token_urlsafe(16)
    page = render_template(
        "demo.html", base_url=request.host_url.rstrip("/"), widget_key=settings.widget_keys[0], nonce=nonce
    )
    response = Response(page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DEMO_PAGE_CSP.format(nonce=nonce)
    response.headers["Cache-Control"] = "no-store"  # it carries a key
    return response


@public.get("/health")
def health():
    """Liveness: answers without touching Redis."""
    response = jsonify(status="ok")
    response.headers["Cache-Control"] = "no-store"
    return response


@public.get("/ready")
def ready():
    """Readiness: 200 only while Redis answers."""
    try:
        storage.current().ping()
    except storage.UNAVAILABLE:
        return jsonify(status="unavailable"), 503
    return jsonify(status="ok")


@public.get("/v1/openapi.json")
def openapi():
    return jsonify(current_app.extensions["openapi"])


@public.get("/favicon.ico")
def favicon():
    """The icon browsers ask for on every page of the service (the demo page, the dashboard)."""
    return send_from_directory(ROOT / "static", "favicon.ico", max_age=86400, mimetype="image/x-icon")


@public.get("/widget/chat-widget.js")
def widget_script():
    # Short cache plus ETag: embeds of this unversioned URL pick up a new widget within minutes.
    response = send_from_directory(ROOT / "static", "chat-widget.js", max_age=300)
    response.headers["Content-Type"] = "application/javascript; charset=utf-8"
    return response


# ---- chat ----------------------------------------------------------------------------------

chat = Blueprint("chat", __name__)
chat.before_request(auth.chat_guard)


def start_turn(turn: ChatTurn) -> tuple[str, list[dict]]:
    """Store the user message (before the model is called) and build the model's prompt.

    A retry of a message that is still the conversation's unanswered last one is not stored
    again (it costs one more round trip, retries only).
    """
    settings: Settings = current_app.config["SETTINGS"]
    turns = storage.current()
    # Admission already looked the conversation up; only a new session needs another step.
    conversation_id = g.conversation_id or turns.conversation_for_session(turn.session_id)
    recent = None
    if turn.retry and g.conversation_id:
        recent = turns.unanswered(conversation_id, turn.message, settings.max_history_messages)
    if recent is None:
        recent = turns.append_message(
            conversation_id, turn.session_id, "user", turn.message, history=settings.max_history_messages
        )
    prompt = [{"role": "system", "content": settings.system_prompt}]
    return conversation_id, prompt + alternating(fit_history(recent, settings.max_history_chars))


def fit_history(messages: list[dict], max_chars: int) -> list[dict]:
    """The newest messages whose contents fit in max_chars; the newest one is always kept."""
    kept, total = [], 0
    for message in reversed(messages):
        total += len(message["content"])
        if kept and total > max_chars:
            break
        kept.append(message)
    return kept[::-1]


def alternating(messages: list[dict]) -> list[dict]:
    """Stored messages, oldest first, as a history every chat template accepts: strictly
    alternating user and assistant messages that start and end with a user message.

    Strict templates (Mistral, Gemma and others on vLLM, TGI and Ollama) refuse anything else
    with a 400, and what storage holds can break the pattern: a failed turn leaves a user
    message unanswered, an interrupted reply may be followed by the retry's full one, and the
    history window can start on a reply. So: leading replies are dropped; a run of user messages
    becomes one (an exact repeat is kept once); in a run of replies an interrupted one that a
    later reply replaced is dropped and the rest are joined; replies after the last user message
    (a retry's interrupted first attempt) are dropped.
    """
    turns: list[dict] = []  # {"role", "parts": [contents], "interrupted": of the last part}
    for message in messages:
        role, content, interrupted = message["role"], message["content"], bool(message.get("interrupted"))
        if not turns and role != "user":
            continue
        if not turns or turns[-1]["role"] != role:
            turns.append({"role": role, "parts": [content], "interrupted": interrupted})
        elif role == "assistant" and turns[-1]["interrupted"]:
            turns[-1]["parts"][-1], turns[-1]["interrupted"] = content, interrupted
        elif turns[-1]["parts"][-1] != content:
            turns[-1]["parts"].append(content)
    while turns and turns[-1]["role"] != "user":
        turns.pop()
    return [{"role": turn["role"], "content": "\n\n".join(turn["parts"])} for turn in turns]


def final_text(reply: str) -> str:
    return reply.strip() or EMPTY_REPLY


@chat.post("/v1/chat")
def chat_reply():
    """One turn answered as a single JSON object."""
    turn: ChatTurn = g.chat_turn
    conversation_id, prompt = start_turn(turn)
    reserved = current_app.config["SETTINGS"].limits.turn_token_reservation
    try:
        completion = current_app.extensions["model"].complete(prompt)
    except UpstreamError as exc:
        log_upstream_failure(current_app.logger, exc)
        storage.current().release_tokens(reserved)
        storage.current().count("upstreamErrors")
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return json_error(exc.status_code, str(exc), headers=headers)
    reply = final_text(completion.text)
    tokens = completion.output_tokens if completion.output_tokens is not None else estimate_tokens(completion.text)
    stopped_early = early_finish(completion.finish_reason)
    storage.current().append_message(conversation_id, turn.session_id, "assistant", reply, output_tokens=tokens,
                                     finish_reason=stopped_early, reserved_tokens=reserved)
    if stopped_early:
        return jsonify(conversationId=conversation_id, message=reply, finishReason=stopped_early)
    return jsonify(conversationId=conversation_id, message=reply)


def early_finish(finish_reason: str | None) -> str | None:
    """The model's finish reason when it stopped before its answer was done ("length",
    "content_filter"...): reported to the client and stored. None for "stop" or no reason."""
    return finish_reason if finish_reason and finish_reason != "stop" else None


def log_upstream_failure(logger, exc: UpstreamError) -> None:
    """The operator's line for a failed model call: the cause, with the upstream's status and
    message (llm.UpstreamError.detail: trimmed, on one line, never a key)."""
    logger.warning("Model call failed: %s", exc.detail)


@chat.post("/v1/chat/stream")
@chat.post("/chat")
def chat_stream():
    """One turn streamed as NDJSON events (`/chat` is the original widget's endpoint)."""
    turn: ChatTurn = g.chat_turn
    conversation_id, prompt = start_turn(turn)
    # The generator outlives the request context: hand it plain objects only.
    lines = relay_reply(
        current_app.extensions["model"],
        storage.current(),
        current_app.logger,
        conversation_id,
        turn.session_id,
        prompt,
        current_app.config["SETTINGS"].heartbeat_seconds,
        drain.current,
        request.environ.get("gunicorn.socket"),
        current_app.config["SETTINGS"].limits.turn_token_reservation,
    )
    return Response(lines, headers=STREAM_HEADERS)


def ndjson(**event) -> bytes:
    return (json.dumps(event, ensure_ascii=False) + "\n").encode()


def relay_reply(model, turns, logger, conversation_id, session_id, prompt, heartbeat_seconds,
                shutdown: drain.Drain, client: socket.socket | None = None,
                reserved_tokens: int = 0) -> Iterator[bytes]:
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
    yield ndjson(type="start", conversationId=conversation_id)
    parts: list[str] = []
    stored = False
    reply = None
    try:
        with model.stream(prompt) as reply:
            for batch in reply.batches(heartbeat_seconds, shutdown):
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
        tokens = reply.output_tokens if reply.output_tokens is not None else estimate_tokens("".join(parts))
        stopped_early = early_finish(reply.facts.finish_reason)
        turns.append_message(conversation_id, session_id, "assistant", text, output_tokens=tokens,
                             finish_reason=stopped_early, reserved_tokens=reserved_tokens)
        stored = True
        if stopped_early:
            yield ndjson(type="done", message=text, conversationId=conversation_id, finishReason=stopped_early)
        else:
            yield ndjson(type="done", message=text, conversationId=conversation_id)
    except UpstreamError as exc:
        log_upstream_failure(logger, exc)
        turns.count("upstreamErrors")
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
                turns.append_message(
                    conversation_id, session_id, "assistant", partial,
                    interrupted=True, output_tokens=estimate_tokens(partial), reserved_tokens=reserved_tokens,
                )
            elif not stored:
                turns.release_tokens(reserved_tokens)
        except storage.UNAVAILABLE:
            logger.error("Could not store an interrupted reply")


def peer_closed(client: socket.socket | None) -> bool:
    """True if the other end of a connection has closed it (its FIN or RST is waiting to be read).

    Never blocks: a zero-timeout select, then a peek only at a socket that has something to read
    (a client that is still there sends nothing while its response streams).
    """
    if client is None:
        return False
    try:
        readable, _, _ = select.select([client], [], [], 0)
        return bool(readable) and client.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # reset, or already closed
        return True


def invalid_session_id_query():
    """The 400 for a `sessionId` query parameter that breaks the chat rule (history, admin listing)."""
    return json_error(400, "Invalid query", details={"sessionId": SESSION_ID_RULE})


@chat.get("/v1/chat/history")
def chat_history():
    """A session's messages, oldest first (the newest HISTORY_LIMIT), so a widget can redraw its thread."""
    session_id = request.args.get("sessionId", "")
    if not SESSION_ID.fullmatch(session_id):
        return invalid_session_id_query()
    response = jsonify(messages=storage.current().session_messages(session_id, HISTORY_LIMIT))
    response.headers["Cache-Control"] = "no-store"  # a visitor's conversation is nobody else's
    return response


# ---- admin ---------------------------------------------------------------------------------

admin = Blueprint("admin", __name__, url_prefix="/v1/admin")
admin.before_request(auth.admin_guard)
LIMIT = re.compile(r"[0-9]{1,3}")


@admin.get("/conversations")
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
        page = storage.current().list_conversations(limit, cursor)
    except storage.InvalidCursor:
        return json_error(400, "Invalid query", details={"cursor": "must be a nextCursor from a previous page"})
    return jsonify(conversations=page.conversations, total=page.total, nextCursor=page.next_cursor)


def session_conversation(session_id: str):
    """The listing filtered to one session: its conversation, or none."""
    if not SESSION_ID.fullmatch(session_id):
        return invalid_session_id_query()
    found = storage.current().session_conversation(session_id)
    conversations = [found] if found else []
    return jsonify(conversations=conversations, total=len(conversations), nextCursor=None)


@admin.get("/conversations/<conversation_id>")
def get_conversation(conversation_id: str):
    found = storage.current().get_conversation(conversation_id)
    if found is None:
        return json_error(404, "Conversation not found")
    summary, messages = found
    return jsonify(conversation=summary, messages=messages)


@admin.delete("/conversations/<conversation_id>")
def delete_conversation(conversation_id: str):
    if not ops.delete_conversation(conversation_id):
        return json_error(404, "Conversation not found")
    return "", 204
