"""The admin dashboard: server-rendered pages under /admin to read, export and delete
conversations and see the stats, signed in with the admin key.

A sign-in is a signed, expiring cookie (itsdangerous, keyed by SECRET_KEY) that holds an HMAC
of the admin key used, a CSRF token and a session id that Redis keeps while the session is open.
Every request checks that HMAC against the keys configured now, so removing a key from
ADMIN_API_KEY ends the sessions opened with it, and that the session is still open, so signing
out ends it for every copy of the cookie. Failed sign-ins are limited per client address; a
browser that has signed in before carries a signed device cookie and is limited on its own
(device cookies, as OWASP recommends), so others' failures cannot lock its admin out. Pages
carry a strict Content-Security-Policy: no inline script or style, only the dashboard's own
stylesheet and the small script that shows times in the reader's time zone. Jinja escapes
everything stored, so messages show as text.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from flask import Blueprint, Flask, current_app, g, make_response, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

import auth
import knowledge
import ops
import services
import storage
from chat import SESSION_ID, SESSION_ID_RULE
from config import dashboard_secret
from llm import UpstreamError

SESSION_COOKIE = "ocw_admin_session"
LOGIN_COOKIE = "ocw_admin_login"  # the sign-in form's CSRF token, before there is a session
DEVICE_COOKIE = "ocw_admin_device"  # a browser that signed in with a key before
LOGIN_MAX_FAILURES = 10  # per client address (or known device) and window; then 429, right key or not
LOGIN_WINDOW_MS = 15 * 60 * 1000
PAGE_SIZE = 50
MAX_UPLOAD_BYTES = 3 * 1024 * 1024  # a 2 MB document with its form around it
EXTENSION = "ocw.dashboard"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# Reachable without a session: the sign-in form, its POST, and the stylesheet and script.
OPEN_ENDPOINTS = {"dashboard.login_form", "dashboard.login", "dashboard.static"}

dashboard = Blueprint(
    "dashboard", __name__, url_prefix="/admin", static_folder="static/dashboard", static_url_path="/static"
)


# ---- sessions ------------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """The dashboard's blueprint, with its cookie signer built once per process."""
    settings = services.of(app).settings
    app.extensions[EXTENSION] = auth.DashboardCookies(dashboard_secret(settings), settings.admin_keys)
    app.register_blueprint(dashboard)


def cookies(app: Flask | None = None) -> auth.DashboardCookies:
    """The cookie signer of app (default: the current app)."""
    return (app if app is not None else current_app).extensions[EXTENSION]


def cookie_flags() -> dict:
    # Secure in production, where the service sits behind HTTPS; plain HTTP works in development.
    production = services.current().settings.production
    return {"path": "/admin", "httponly": True, "samesite": "Strict", "secure": production}


# ---- pages ---------------------------------------------------------------------------------


def page(template: str, status: int = 200, headers: dict | None = None, **context):
    """A dashboard page; the signed-in session (if any) is there for the navigation's forms."""
    html = render_template(f"dashboard/{template}", admin=g.get("admin"), **context)
    return make_response(html, status, headers or {})


def error_page(status: int, title: str, message: str, headers: dict | None = None):
    return page("error.html", status, headers, title=title, message=message)


def not_found():
    return error_page(404, "Not found", "There is no such conversation. It may have been deleted or expired.")


@dashboard.app_template_filter("utc_iso")
def utc_iso(ms: int) -> str:
    """Milliseconds since the epoch as an ISO 8601 UTC time, for <time datetime>."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dashboard.app_template_filter("utc_text")
def utc_text(ms: int) -> str:
    """The same time for readers without script; dashboard.js shows it in their time zone."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dashboard.before_request
def guard():
    """503 without an admin key; then a valid session (else back to sign-in); then, for every
    POST but the sign-in, the session's CSRF token."""
    if request.endpoint == "dashboard.static":
        return None
    if not auth.admin_keys():
        return error_page(503, "Dashboard unavailable", "ADMIN_API_KEY is not configured on this deployment.")
    cookie = request.cookies.get(SESSION_COOKIE)
    g.admin = cookies().read(cookie)
    if g.admin is not None and not services.current().store.dashboard_sessions.is_open(g.admin.session_id):
        g.admin = None  # signed out: this cookie is a copy of one that no longer opens anything
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if g.admin is None:
        if cookie:
            current_app.logger.warning(
                "Dashboard session refused from %s (forged, expired, signed out or its key removed)", auth.client_ip()
            )
        response = redirect(url_for(".login_form"), 303)
        if cookie:
            response.delete_cookie(SESSION_COOKIE, **cookie_flags())
        return response
    if request.method == "POST" and not auth.same_token(g.admin.csrf, request.form.get("csrf", "")):
        current_app.logger.warning("403 %s %s: missing or wrong CSRF token", request.method, request.path)
        return error_page(
            403, "Refused", "This form was not sent by the dashboard (its CSRF token is missing or wrong)."
        )
    return None


@dashboard.after_request
def page_headers(response):
    response.headers["Content-Security-Policy"] = CSP
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"  # conversations must not linger in caches
    return response


@dashboard.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    return error_page(exc.code or 500, exc.name, exc.description or exc.name)


@dashboard.errorhandler(storage.UNAVAILABLE)
def storage_unavailable(exc):
    current_app.logger.error("Redis unavailable: %s", type(exc).__name__)
    return error_page(503, "Storage unavailable", "Redis does not answer. Try again in a moment.")


# ---- sign-in -------------------------------------------------------------------------------


def login_page(status: int = 200, error: str | None = None, headers: dict | None = None):
    """The sign-in form, with a fresh CSRF token in its hidden field and in a signed cookie."""
    token, signed = cookies().login_form_token()
    response = page("login.html", status, headers, error=error, csrf=token)
    response.set_cookie(LOGIN_COOKIE, signed, max_age=auth.LOGIN_FORM_SECONDS, **cookie_flags())
    return response


@dashboard.get("/")
@dashboard.get("")  # registered first, so url_for gives /admin
def login_form():
    if g.admin is not None:
        return redirect(url_for(".conversations"), 303)
    return login_page()


@dashboard.post("/login")
def login():
    """Open a session for a configured admin key. Attempts are limited per client address, or
    per device for a browser that signed in before (so others' failures cannot lock it out)."""
    if not cookies().login_form_valid(request.cookies.get(LOGIN_COOKIE), request.form.get("csrf", "")):
        return login_page(403, "The sign-in form expired or was not sent by this page. Please try again.")
    device = cookies().device(request.cookies.get(DEVICE_COOKIE))
    client = f"device:{device}" if device else auth.client_ip()
    # Taken before the key is looked at, so that a blocked client cannot confirm a guess either.
    store = services.current().store
    allowed, retry_ms = store.limits.take_sign_in_attempt(client, LOGIN_MAX_FAILURES, LOGIN_WINDOW_MS)
    if not allowed:
        retry_after = max(1, math.ceil(retry_ms / 1000))
        minutes = math.ceil(retry_after / 60)
        return error_page(
            429,
            "Too many attempts",
            f"Too many failed sign-ins. Try again in {minutes} minutes.",
            headers={"Retry-After": str(retry_after)},
        )
    presented = request.form.get("admin_key", "").strip()
    if not auth.admin_keys().accepts(presented):
        store.counts.add("unauthorized")
        current_app.logger.warning(
            "401 dashboard sign-in from %s key=%s", auth.client_ip(), auth.fingerprint(presented)
        )
        return login_page(401, "That is not an admin key of this deployment.")
    store.limits.give_back_sign_in_attempt(client)
    cookie, session_id = cookies().issue(presented)
    store.dashboard_sessions.open(session_id, auth.SESSION_SECONDS * 1000)
    current_app.logger.info("Dashboard sign-in from %s key=%s", auth.client_ip(), auth.fingerprint(presented))
    response = redirect(url_for(".conversations"), 303)
    response.set_cookie(SESSION_COOKIE, cookie, max_age=auth.SESSION_SECONDS, **cookie_flags())
    if not device:
        device_cookie = cookies().device_cookie(presented)
        response.set_cookie(DEVICE_COOKIE, device_cookie, max_age=auth.DEVICE_SECONDS, **cookie_flags())
    response.delete_cookie(LOGIN_COOKIE, **cookie_flags())
    return response


@dashboard.post("/logout")
def logout():
    """End the session on the server too, so no copy of its cookie opens anything."""
    services.current().store.dashboard_sessions.close(g.admin.session_id)
    response = redirect(url_for(".login_form"), 303)
    response.delete_cookie(SESSION_COOKIE, **cookie_flags())
    return response


# ---- conversations -------------------------------------------------------------------------


@dashboard.get("/conversations")
def conversations():
    """Newest first, PAGE_SIZE a page; or the one conversation of a searched session id."""
    searched = request.args.get("session", "").strip()
    context: dict = {"searched": searched, "deleted": request.args.get("deleted") == "1"}
    if searched:
        if not SESSION_ID.fullmatch(searched):
            error = f"A session id {SESSION_ID_RULE}."
            return page("conversations.html", 400, conversations=[], error=error, **context)
        found = services.current().store.conversations.of_session(searched)
        return page("conversations.html", conversations=[found] if found else [], **context)
    cursor = request.args.get("cursor") or None
    try:
        listing = services.current().store.conversations.page(PAGE_SIZE, cursor)
    except storage.InvalidCursor:
        return page("conversations.html", 400, conversations=[], error="That page link is not valid.", **context)
    return page(
        "conversations.html",
        conversations=listing.conversations,
        total=listing.total,
        next_cursor=listing.next_cursor,
        paged=cursor is not None,
        **context,
    )


@dashboard.get("/conversations/<conversation_id>")
def thread(conversation_id: str):
    found = services.current().store.conversations.get(conversation_id)
    if found is None:
        return not_found()
    summary, messages = found
    return page("thread.html", conversation=summary, messages=messages)


@dashboard.get("/conversations/<conversation_id>/delete")
def confirm_delete(conversation_id: str):
    """Deleting asks first, on a page of its own (the dashboard runs no script to ask)."""
    found = services.current().store.conversations.get(conversation_id)
    if found is None:
        return not_found()
    return page("confirm_delete.html", conversation=found[0])


@dashboard.post("/conversations/<conversation_id>/delete")
def delete(conversation_id: str):
    if not ops.delete_conversation(conversation_id):
        return not_found()
    return redirect(url_for(".conversations", deleted="1"), 303)


@dashboard.get("/export")
def export():
    return ops.export_download(0)


@dashboard.get("/stats")
def stats():
    counters = [(name, ops.METRICS[name][1]) for name in storage.COUNTERS]  # (name, what it counts)
    return page("stats.html", stats=services.current().store.stats(), counters=counters)


# ---- knowledge -----------------------------------------------------------------------------


@dashboard.get("/knowledge")
def knowledge_page():
    """The knowledge documents, PAGE_SIZE a page in id order, with the upload form."""
    cursor = request.args.get("cursor") or None
    if cursor is not None and not knowledge.DOCUMENT_ID.fullmatch(cursor):
        return knowledge_listing(400, error="That page link is not valid.")
    notice = None
    if request.args.get("stored"):
        notice = f"Stored {request.args['stored']}."
    elif request.args.get("deleted"):
        notice = f"Deleted {request.args['deleted']}."
    return knowledge_listing(200, cursor, notice=notice)


def knowledge_listing(status: int, cursor: str | None = None, **messages):
    documents, next_cursor = services.current().store.knowledge.page(PAGE_SIZE, cursor)
    context: dict = {"documents": documents, "next_cursor": next_cursor, "paged": cursor is not None}
    return page("knowledge.html", status, **context, **messages)


@dashboard.post("/knowledge")
def upload_document():
    """Store an uploaded file as a knowledge document (knowledge.from_file names it)."""
    request.max_content_length = MAX_UPLOAD_BYTES
    upload = request.files.get("document")
    if upload is None or not upload.filename:
        return knowledge_listing(400, error="Choose a file to upload.")
    try:
        url = request.form.get("url", "").strip() or None
        document = knowledge.from_file(upload.filename, upload.read(), url)
        ops.put_document(document)
    except knowledge.InvalidDocument as exc:
        return knowledge_listing(400, error="; ".join(f"The {k} {v}." for k, v in exc.details.items()))
    except UpstreamError as exc:
        current_app.logger.warning("Embedding a knowledge document failed: %s", exc.detail)
        return knowledge_listing(502, error=f"The embeddings model failed ({exc}); nothing was stored.")
    return redirect(url_for(".knowledge_page", stored=document.id), 303)


@dashboard.post("/knowledge/<document_id>/delete")
def delete_document(document_id: str):
    if not knowledge.DOCUMENT_ID.fullmatch(document_id) or not ops.delete_document(document_id):
        return knowledge_listing(404, error="There is no such document.")
    return redirect(url_for(".knowledge_page", deleted=document_id), 303)
