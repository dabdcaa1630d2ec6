"""Who may call what: widget and admin key checks, and the per-IP rate limit of chat routes.

`chat_guard` and `admin_guard` are the `before_request` hooks of the two blueprints.
"""
from __future__ import annotations

import hashlib
import hmac
import math

from flask import current_app, request

from errors import json_error


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def fingerprint(key: str | None) -> str:
    """A short, non-reversible label of a presented key for logs (first 8 hex of its SHA-256)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:8] if key else "none"


class KeyRing:
    """The active keys of one role (several during a rotation), compared in constant time."""

    def __init__(self, keys):
        self._digests = [_digest(key) for key in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def accepts(self, presented: str | None) -> bool:
        """True if presented equals one of the keys.

        Fixed-length digests hide the key's length, and every configured key is compared
        whatever matches, so the time taken reveals neither content nor position.
        """
        candidate = _digest(presented or "")
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(digest, candidate)
        return matched and bool(presented)


def bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def presented_key(headers: tuple[str, ...]) -> str | None:
    """The key from the first of headers that is set, else from `Authorization: Bearer`."""
    for name in headers:
        value = request.headers.get(name, "").strip()
        if value:
            return value
    return bearer_token()


def client_ip() -> str:
    """The client address; ProxyFix has already applied TRUSTED_PROXY_COUNT to it."""
    return request.remote_addr or "unknown"


def _unauthorized(presented: str | None):
    current_app.logger.warning(
        "401 %s %s from %s key=%s",
        request.method, request.path, client_ip(), fingerprint(presented),
    )
    return json_error(401, "Unauthorized")


def rate_limited():
    """429 once the client IP has used up its window, shared by every worker via Redis."""
    settings = current_app.config["SETTINGS"]
    count, reset_ms = current_app.extensions["storage"].hit_rate_limit(
        client_ip(), settings.rate_limit_window_ms
    )
    if count > settings.rate_limit_max_requests:
        retry_after = max(1, math.ceil(reset_ms / 1000))
        return json_error(429, "Too many requests", headers={"Retry-After": str(retry_after)})
    return None


def chat_guard():
    """Rate limit, then the widget key."""
    limited = rate_limited()
    if limited is not None:
        return limited
    presented = presented_key(("X-Api-Key", "X-Widget-Api-Key"))
    if not current_app.extensions["widget_keys"].accepts(presented):
        return _unauthorized(presented)
    return None


def admin_guard():
    """503 when no admin key is configured, else the admin key."""
    keys = current_app.extensions["admin_keys"]
    if not keys:
        return json_error(503, "ADMIN_API_KEY is not configured on this deployment")
    presented = presented_key(("X-Admin-Api-Key",))
    if not keys.accepts(presented):
        return _unauthorized(presented)
    return None
