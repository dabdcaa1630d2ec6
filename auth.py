"""Who is calling, and with which key: widget and admin key checks, client identity behind
proxies, the admin blueprint's hook (`admin_guard`), and the dashboard's signed cookies, which
carry a fingerprint of the admin key they were opened with. The chat blueprint's admission,
which also counts quotas and budgets, is chat.admit.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from typing import NamedTuple

from flask import Flask, current_app, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
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


# ---- the dashboard's signed cookies ---------------------------------------------------------

SESSION_SECONDS = 8 * 3600
LOGIN_FORM_SECONDS = 3600
DEVICE_SECONDS = 180 * 24 * 3600
SIGNER = {"digest_method": hashlib.sha256}  # itsdangerous defaults to SHA-1


@dataclass(frozen=True)
class AdminSession:
    """A validly signed sign-in: which key it was opened with (as an HMAC), its CSRF token, and
    the id under which Redis keeps it open."""

    key_fingerprint: str
    csrf: str
    session_id: str


class DashboardCookies:
    """Issues and checks the dashboard's signed cookies: the session, the sign-in form's token
    and the device that signed in before."""

    def __init__(self, secret: str, admin_keys: tuple[str, ...]):
        self._sessions = URLSafeTimedSerializer(secret, salt="ocw-dashboard-session", signer_kwargs=SIGNER)
        self._login_forms = URLSafeTimedSerializer(secret, salt="ocw-dashboard-login", signer_kwargs=SIGNER)
        self._devices = URLSafeTimedSerializer(secret, salt="ocw-dashboard-device", signer_kwargs=SIGNER)
        # A key derived for fingerprints only, so they never equal any signature of the serializers.
        self._fingerprint_key = hmac.new(secret.encode(), b"ocw-dashboard-key-fingerprint", hashlib.sha256).digest()
        # The fingerprints of the configured keys, compared as API keys are.
        self._active = KeyRing([self.fingerprint(key) for key in admin_keys])

    def fingerprint(self, key: str) -> str:
        """HMAC-SHA256 of an admin key: without SECRET_KEY it can be neither reversed nor guessed."""
        return hmac.new(self._fingerprint_key, key.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def issue(self, admin_key: str) -> tuple[str, str]:
        """(the cookie value, the session id) of a new session opened with admin_key."""
        session_id = secrets.token_urlsafe(24)
        cookie = self._sessions.dumps(
            {"key": self.fingerprint(admin_key), "csrf": secrets.token_urlsafe(32), "sid": session_id}
        )
        return cookie, session_id

    def read(self, cookie: str | None) -> AdminSession | None:
        """The session of a cookie, or None if it is missing, forged, tampered with, expired, or
        was opened with a key that is no longer configured. Whether it is still open (not signed
        out) is Redis's to say (storage.Storage.dashboard_sessions)."""
        data = self._signed(self._sessions, cookie, SESSION_SECONDS, ("key", "csrf", "sid"))
        return AdminSession(data["key"], data["csrf"], data["sid"]) if data else None

    def device_cookie(self, admin_key: str) -> str:
        """The cookie that marks this browser as one that signed in with admin_key."""
        return self._devices.dumps({"key": self.fingerprint(admin_key), "device": secrets.token_urlsafe(24)})

    def device(self, cookie: str | None) -> str | None:
        """The device id of a valid device cookie whose key is still configured, else None."""
        data = self._signed(self._devices, cookie, DEVICE_SECONDS, ("key", "device"))
        return data["device"] if data else None

    def _signed(self, serializer, cookie: str | None, max_age: int, fields: tuple[str, ...]) -> dict | None:
        """The fields of a cookie signed by serializer, younger than max_age seconds and opened
        with a key that is configured now; None for anything else."""
        try:
            data = serializer.loads(cookie or "", max_age=max_age)
        except BadSignature:  # SignatureExpired is one too
            return None
        if not isinstance(data, dict) or not all(isinstance(data.get(f), str) for f in fields):
            return None
        return data if self._active.accepts(data["key"]) else None

    def login_form_token(self) -> tuple[str, str]:
        """(token for the form's hidden field, signed copy for the cookie)."""
        token = secrets.token_urlsafe(32)
        return token, self._login_forms.dumps(token)

    def login_form_valid(self, cookie: str | None, field: str) -> bool:
        """True if field is the token signed into cookie, and the form is less than an hour old."""
        try:
            token = self._login_forms.loads(cookie or "", max_age=LOGIN_FORM_SECONDS)
        except BadSignature:
            return False
        return isinstance(token, str) and same_token(token, field)


def same_token(expected: str, presented: str) -> bool:
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "surrogatepass"))
