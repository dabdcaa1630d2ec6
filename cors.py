"""Which browser origins may call the service, and the headers every response carries."""

from __future__ import annotations

import re

from flask import Flask, current_app, request

import services
from errors import json_error

ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
ALLOWED_HEADERS = "Content-Type, X-Api-Key, X-Widget-Api-Key, X-Admin-Api-Key, Authorization"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
HSTS = "max-age=31536000; includeSubDomains"
EXTENSION = "ocw.cors"


SUBDOMAIN_LABELS = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)*")


class AllowedOrigins:
    """The browser origins CORS_ORIGIN lets in, as config.serialized_origin normalised them:
    exact origins, `*` (development only), and wildcards such as `https://*.example.com`, which
    match that scheme and port on any subdomain of example.com, never example.com itself or a
    look-alike such as evil-example.com."""

    def __init__(self, entries: tuple[str, ...]):
        self.any = "*" in entries
        self.exact = frozenset(entry for entry in entries if "://*." not in entry and entry != "*")
        # (the part before the subdomain: "https://", the part after it: ".example.com:8443")
        self.wildcards = [tuple(entry.split("*", 1)) for entry in entries if "://*." in entry]

    def __contains__(self, origin: str) -> bool:
        origin = origin.lower()  # browsers send it lower-case already; other clients may not
        if self.any or origin in self.exact:
            return True
        return any(
            origin.startswith(scheme)
            and origin.endswith(suffix)
            and SUBDOMAIN_LABELS.fullmatch(origin[len(scheme) : -len(suffix)])
            for scheme, suffix in self.wildcards
        )


def origin_allowed(origin: str) -> bool:
    """An origin of CORS_ORIGIN (AllowedOrigins), or our own origin, which always passes."""
    return origin in current_app.extensions[EXTENSION] or origin == request.host_url.rstrip("/")


def _refuse_foreign_origins():
    """Answer preflights before any key check; refuse writes from origins that are not allowed.

    Browsers send the preflight without credentials, so it must never need a key. A POST from a
    foreign page is refused here, before the rate limit, the key check or the model.
    """
    origin = request.headers.get("Origin")
    if request.method == "OPTIONS" and request.url_rule is not None:
        return current_app.response_class(status=204)
    if origin and request.method not in SAFE_METHODS and not origin_allowed(origin):
        current_app.logger.warning("403 %s %s from origin not allowed", request.method, request.path)
        services.current().store.counts.add("refusedOrigins")
        return json_error(403, "Origin not allowed")
    return None


def _add_headers(response):
    origin = request.headers.get("Origin")
    if origin and origin_allowed(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
    response.vary.add("Origin")
    response.headers.update(SECURITY_HEADERS)
    if services.current().settings.production:
        response.headers["Strict-Transport-Security"] = HSTS
    return response


def init_app(app: Flask) -> None:
    """The origin check and the headers of every response, with CORS_ORIGIN read once."""
    app.extensions[EXTENSION] = AllowedOrigins(services.of(app).settings.cors_origins)
    if not services.of(app).settings.cors_origins:
        app.logger.warning("CORS_ORIGIN is not set: no browser on another origin can use the widget")
    app.before_request(_refuse_foreign_origins)
    app.after_request(_add_headers)
