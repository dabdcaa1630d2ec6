"""Who is calling, and with which key: widget and admin key checks, client identity behind
proxies, and the admin blueprint's hook (`admin_guard`). The chat blueprint's admission, which
also counts quotas and budgets, is chat.admit.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from typing import NamedTuple

from flask import Flask, current_app, request
from werkzeug.middleware.proxy_fix import ProxyFix

import services
from errors import json_error

EXTENSION = "ocw.auth"


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


class KeyRings(NamedTuple):
    """The key rings of the two roles."""

    widget: KeyRing
    admin: KeyRing


def init_app(app: Flask) -> None:
    """Build the key rings of WIDGET_API_KEY and ADMIN_API_KEY, once per process."""
    settings = services.of(app).settings
    app.extensions[EXTENSION] = KeyRings(KeyRing(settings.widget_keys), KeyRing(settings.admin_keys))


def _key_rings() -> KeyRings:
    return current_app.extensions[EXTENSION]


def admin_keys() -> KeyRing:
    """ADMIN_API_KEY's keys (false when none is configured)."""
    return _key_rings().admin


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


def unauthorized(presented: str | None):
    """The 401 for a missing or wrong key, logged with the presented key's fingerprint only."""
    current_app.logger.warning(
        "401 %s %s from %s key=%s",
        request.method,
        request.path,
        client_ip(),
        fingerprint(presented),
    )
    return json_error(401, "Unauthorized")


def widget_key() -> tuple[str | None, bool]:
    """(the presented widget key, whether it is one of WIDGET_API_KEY's keys): from
    `X-Api-Key`, `X-Widget-Api-Key` (the original widget's header) or `Authorization: Bearer`."""
    presented = presented_key(("X-Api-Key", "X-Widget-Api-Key"))
    return presented, _key_rings().widget.accepts(presented)


def admin_guard():
    """The admin blueprint's hook: 503 when no admin key is configured, else the admin key."""
    keys = admin_keys()
    if not keys:
        return json_error(503, "ADMIN_API_KEY is not configured on this deployment")
    presented = presented_key(("X-Admin-Api-Key",))
    if not keys.accepts(presented):
        # Chat 401s are counted by the admission script; admin ones cost this one write.
        services.current().store.counts.add("unauthorized")
        return unauthorized(presented)
    return None
