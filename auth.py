"""Who may call what: widget and admin key checks, and the admission of chat requests
(per-IP rate limit, per-session quota, daily budget).

`chat_guard` and `admin_guard` are the `before_request` hooks of the two blueprints.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re

from flask import current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

import chat_request
import storage
from errors import json_error


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def fingerprint(key: str | None) -> str:
    """A short, non-reversible label of a presented key (or a session id) for logs: the first
    8 hex characters of its SHA-256."""
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
    """Who the client is, for the rate limit, the sign-in lockout and the logs: its address as
    ProxyFix took it (TRUSTED_PROXY_COUNT applied), normalised by client_identity."""
    return client_identity(request.remote_addr)


class TrustedProxies:
    """WSGI middleware: the client address from X-Forwarded-For (werkzeug's ProxyFix, the last
    `count` hops), only for requests that come from one of `networks` (all when empty), as
    gunicorn's forwarded_allow_ips does. A client that reaches the app's port directly, around
    the proxy, then cannot choose its own address by writing the header itself."""

    def __init__(self, app, count: int, networks: tuple = ()):
        self.direct = app
        self.proxied = ProxyFix(app, x_for=count, x_proto=count)
        self.networks = networks

    def __call__(self, environ, start_response):
        if not self.networks or _in_networks(environ.get("REMOTE_ADDR"), self.networks):
            return self.proxied(environ, start_response)
        return self.direct(environ, start_response)


def _in_networks(address: str | None, networks: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    return any(ip in network for network in networks)


# "[2001:db8::1]:443", "[2001:db8::1]" or "203.0.113.7:50001": an address with a port or brackets.
_BRACKETED = re.compile(r"\[([^\]]*)\](?::[0-9]*)?")
_IPV4_WITH_PORT = re.compile(r"([0-9.]+):[0-9]*")


def client_identity(address: str | None) -> str:
    """One client's one name, whatever the spelling of its address, so nothing a client can vary
    without changing who it is gives it a new rate-limit bucket.

    Ports and brackets go (some proxies, Azure Application Gateway among them, append the
    client's source port, which changes per connection); an IPv4-mapped IPv6 address is its IPv4
    address; IPv6 addresses are written canonically and grouped by their /64 prefix, the block
    one subscriber commonly holds (RFC 6177), so one client cannot walk through its prefix. An
    address that cannot be read is "unknown": all such clients share one name.
    """
    text = (address or "").strip()
    bracketed = _BRACKETED.fullmatch(text) or _IPV4_WITH_PORT.fullmatch(text)
    if bracketed:
        text = bracketed.group(1)
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # without an IPv6 zone ("fe80::1%eth0")
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _unauthorized(presented: str | None):
    current_app.logger.warning(
        "401 %s %s from %s key=%s",
        request.method, request.path, client_ip(), fingerprint(presented),
    )
    return json_error(401, "Unauthorized")


def _read_turn():
    """(turn, refusal): the chat turn of this request, or the error response its body earns."""
    # A valid body is a few kB; parsing 2 MB of JSON blocks every stream of the worker for ~86 ms.
    request.max_content_length = chat_request.MAX_BODY_BYTES
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
    if data is None or (request.content_length is None and len(data) >= chat_request.MAX_BODY_BYTES):
        return None, json_error(413, "Request body too large")
    try:
        return chat_request.parse(data), None
    except chat_request.InvalidBody as exc:
        return None, json_error(400, "Invalid request body", details=exc.details)


def chat_guard():
    """Admit a chat request: rate limit, then the widget key, then the body, then the session
    quota and the daily budget.

    Every Redis check happens in one round trip (storage.admit), which also finds the session's
    conversation. Only a valid turn with a valid key counts against the session and the budget,
    so nobody without the key can spend them.
    """
    settings = current_app.config["SETTINGS"]
    presented = presented_key(("X-Api-Key", "X-Widget-Api-Key"))
    key_ok = current_app.extensions["widget_keys"].accepts(presented)
    turn, refusal = _read_turn() if key_ok and request.method == "POST" else (None, None)
    admission = storage.current().admit(
        client_ip(), turn.session_id if turn else None, settings.limits, key_valid=key_ok
    )
    retry_after = {"Retry-After": str(max(1, math.ceil(admission.retry_after_ms / 1000)))}
    if admission.verdict == "ip":
        return json_error(429, "Too many requests", headers=retry_after)
    if not key_ok:
        return _unauthorized(presented)
    if refusal is not None:
        return refusal
    if admission.verdict == "session":
        return json_error(429, "Too many messages in this conversation, try again later", headers=retry_after)
    if admission.verdict == "budget":
        return json_error(429, "Daily budget exhausted", headers=retry_after)
    g.chat_turn, g.conversation_id = turn, admission.conversation_id
    return None


def admin_guard():
    """503 when no admin key is configured, else the admin key."""
    keys = current_app.extensions["admin_keys"]
    if not keys:
        return json_error(503, "ADMIN_API_KEY is not configured on this deployment")
    presented = presented_key(("X-Admin-Api-Key",))
    if not keys.accepts(presented):
        # Chat 401s are counted by the admission script; admin ones cost this one write.
        storage.current().count("unauthorized")
        return _unauthorized(presented)
    return None
