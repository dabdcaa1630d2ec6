"""The `public` blueprint: routes anyone may call, with no key (the demo page, health checks,
the OpenAPI document, the widget script)."""

from __future__ import annotations

import gzip
import json
import secrets
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, jsonify, render_template, request, send_from_directory

import services
import storage

ROOT = Path(__file__).resolve().parent
# The demo page loads only this service's script, talks only to this service, and styles itself
# with one nonce'd <style>: the widget must (and does) work under a policy this strict.
DEMO_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'nonce-{nonce}'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

public = Blueprint("public", __name__)


@public.get("/")
def home():
    """Development: the demo page (widget, embed snippet, headless example). Production: no key, only pointers."""
    settings = services.current().settings
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
        services.current().store.ping()
    except storage.UNAVAILABLE:
        return jsonify(status="unavailable"), 503
    return jsonify(status="ok")


@cache
def openapi_document() -> dict:
    """openapi.json, read once per process."""
    return json.loads((ROOT / "openapi.json").read_text())


@public.get("/v1/openapi.json")
def openapi():
    return jsonify(openapi_document())


@public.get("/favicon.ico")
def favicon():
    """The icon browsers ask for on every page of the service (the demo page, the dashboard)."""
    return send_from_directory(ROOT / "static", "favicon.ico", max_age=86400, mimetype="image/x-icon")


@cache
def widget_bytes(encoding: str) -> bytes:
    """The widget script as served: "identity" or "gzip" (a third of the size), read and
    compressed once per process; the file changes only with a deploy, which restarts workers."""
    script = (ROOT / "static" / "chat-widget.js").read_bytes()
    return gzip.compress(script, compresslevel=9, mtime=0) if encoding == "gzip" else script


@public.get("/widget/chat-widget.js")
def widget_script():
    """The widget, gzipped for the browsers that accept it (all of them: the default deploy has
    no proxy to compress it). Short cache plus ETag: embeds of this unversioned URL pick up a new
    widget within minutes, and an unchanged one costs a 304."""
    encoding = "gzip" if request.accept_encodings["gzip"] else "identity"
    response = Response(widget_bytes(encoding), mimetype="application/javascript")
    if encoding == "gzip":
        response.headers["Content-Encoding"] = "gzip"
    response.vary.add("Accept-Encoding")
    response.cache_control.public = True
    response.cache_control.max_age = 300
    response.add_etag()  # of the bytes sent, so the two encodings never share a tag
    return response.make_conditional(request)
