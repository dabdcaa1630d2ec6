"""Settings read from the environment, validated all at once."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_SYSTEM_PROMPT = "You are a concise and helpful AI assistant embedded in a support chat widget."
MIN_KEY_LENGTH = 24
MIN_SECRET_KEY_LENGTH = 32
DAY_MS = 24 * 3600 * 1000
# What a turn reserves of the daily token budget when MAX_OUTPUT_TOKENS does not bound replies.
DEFAULT_TOKEN_RESERVATION = 1000
# What JavaScript's String.prototype.trim() removes, which is also what `\s` means in the OpenAPI
# document's patterns: the service, the original backend and the document then agree on what
# "only whitespace" is (Python's own strip() also removes \x1c-\x1f and \x85).
JS_WHITESPACE = (
    "\t\n\v\f\r \xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# What an HTTP header value or a URL can carry as it is (RFC 9110 field-vchar, RFC 3986).
VISIBLE_ASCII = re.compile(r"[\x21-\x7e]+")


class ConfigError(Exception):
    """Start-up configuration is invalid; the message names every bad variable."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("Invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Limits:
    """What one client, one session and the whole deployment may spend (0 = unlimited)."""

    window_ms: int
    max_requests: int
    session_window_ms: int
    session_max_messages: int
    daily_max_requests: int
    daily_max_tokens: int
    # Output tokens a turn reserves against daily_max_tokens when it is admitted, settled with
    # the real count when it ends (0 when there is no token budget).
    turn_token_reservation: int = 0


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    env: str
    widget_keys: tuple[str, ...]
    admin_keys: tuple[str, ...]
    redis_url: str | None
    redis_tls_verify: bool
    redis_prefix: str
    openai_api_key: str | None
    openai_base_url: str
    openai_model: str
    system_prompt: str
    max_history_messages: int
    max_output_tokens: int | None
    max_history_chars: int
    stream_usage: bool
    # Knowledge: passages given to the model per turn, and the embeddings model (None: lexical only).
    knowledge_top_k: int
    embedding_model: str | None
    llm_timeout_seconds: float
    heartbeat_seconds: float
    # After SIGTERM, streams in flight may go on this long before they are ended (drain.py).
    shutdown_drain_seconds: float
    # The longest silence while a request body arrives (connections.py), and how many requests
    # one client may have open in one worker (0: no bound).
    request_body_timeout_seconds: float
    client_max_open_requests: int
    cors_origins: tuple[str, ...]
    limits: Limits
    trusted_proxy_count: int
    # Only requests from these networks have their X-Forwarded-For read (empty: from anywhere).
    trusted_proxy_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    data_dir: str
    retention_ms: int | None  # conversations idle longer than this expire; None keeps them
    log_format: str  # 'text' or 'json'
    # Signs the dashboard's session cookies. None only in development, where the dashboard
    # generates one and keeps it in the data folder.
    secret_key: str | None = None

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def demo_mode(self) -> bool:
        """Development without a model key answers with the offline demo responder."""
        return not self.production and not self.openai_api_key


def valid_url(url: str) -> bool:
    """True for a URL of visible ASCII whose port, if any, is a number from 0 to 65535."""
    if not VISIBLE_ASCII.fullmatch(url):
        return False
    try:
        _ = urlsplit(url).port  # reading the port is what validates it
    except ValueError:
        return False
    return True


def http_url(url: str) -> bool:
    """True for a valid http:// or https:// URL with a host."""
    return valid_url(url) and urlsplit(url).scheme in ("http", "https") and bool(urlsplit(url).hostname)


DEFAULT_PORTS = {"http": 80, "https": 443}


def serialized_origin(entry: str) -> str | None:
    """A configured origin as browsers serialise the `Origin` header (RFC 6454, the URL
    standard): lower-case scheme and host, the host in its ASCII (xn--) form, no default port,
    no trailing slash. `https://*.example.com` stays a wildcard of that form. None for an entry
    that can never match what a browser sends: a scheme other than http(s), a path, a query, a
    fragment, credentials, a bad port, or a wildcard anywhere but the first label.
    """
    try:
        parts = urlsplit(entry.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if scheme not in DEFAULT_PORTS or parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    if parts.username is not None or parts.password is not None or "[" in parts.netloc.split("]")[-1]:
        return None
    wildcard = host.startswith("*.")
    labels = host[2:] if wildcard else host
    if not labels or "*" in labels or (wildcard and "." not in labels):
        return None
    try:
        labels = labels.encode("idna").decode("ascii") if not labels.isascii() else labels
    except UnicodeError:
        return None
    if ":" in labels:  # an IPv6 address, written with brackets in an origin
        labels = f"[{labels}]"
    elif not re.fullmatch(r"[a-z0-9.-]+", labels):
        return None
    port_part = f":{port}" if port is not None and port != DEFAULT_PORTS[scheme] else ""
    return f"{scheme}://{'*.' if wildcard else ''}{labels}{port_part}"


def networks(entries: tuple[str, ...]) -> tuple | None:
    """IP networks (a bare address is a network of one), or None if an entry is neither."""
    try:
        return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)
    except ValueError:
        return None


def split_list(raw: str | None) -> tuple[str, ...]:
    """Parse a comma-separated list, ignoring blanks and surrounding spaces."""
    return tuple(item.strip() for item in (raw or "").split(",") if item.strip())


class _Reader:
    """Reads typed values from an environment mapping, collecting problems instead of raising."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.problems: list[str] = []

    def text(self, name: str) -> str | None:
        """The variable's value without surrounding spaces; None when unset or blank."""
        return self.environ.get(name, "").strip() or None

    def text_or(self, name: str, default: str) -> str:
        """The variable's value, or default when unset or blank."""
        return self.text(name) or default

    def flag(self, name: str, default: bool) -> bool:
        raw = (self.text(name) or str(default)).lower()
        if raw not in ("true", "false"):
            self.problems.append(f"{name} must be 'true' or 'false'")
        return raw != "false" if raw in ("true", "false") else default

    def number(self, name, default, kind=int, minimum=None, maximum=None):
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):  # float() also reads "nan" and "inf"
            self.problems.append(f"{name} must be a number")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            self.problems.append(f"{name} must be {bounds}")
            return default
        return value

    def keys(self, name: str, required: bool) -> tuple[str, ...]:
        keys = split_list(self.environ.get(name))
        if not keys and required:
            self.problems.append(f"{name} is required")
        if any(len(key) < MIN_KEY_LENGTH for key in keys):
            # Never echo the key: name the variable and the rule only.
            self.problems.append(f"{name}: every key must be at least {MIN_KEY_LENGTH} characters")
        return keys


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from environ (default os.environ) or raise ConfigError listing every problem."""
    read = _Reader(os.environ if environ is None else environ)
    env = read.text_or("APP_ENV", "production")
    if env not in ("production", "development"):
        read.problems.append("APP_ENV must be 'production' or 'development'")
    production = env != "development"

    widget_keys = read.keys("WIDGET_API_KEY", required=True)
    admin_keys = read.keys("ADMIN_API_KEY", required=False)
    if set(widget_keys) & set(admin_keys):
        read.problems.append("WIDGET_API_KEY and ADMIN_API_KEY must not share a key")

    openai_api_key = read.text("OPENAI_API_KEY")
    if production and not openai_api_key:
        read.problems.append("OPENAI_API_KEY is required in production")
    if openai_api_key and not VISIBLE_ASCII.fullmatch(openai_api_key):
        # It goes into an HTTP header, which carries visible ASCII only; name the rule, never the value.
        read.problems.append(
            "OPENAI_API_KEY must be visible ASCII characters only (no spaces, dashes such as "
            "'–' or quotes pasted from a document)"
        )
    openai_base_url = read.text_or("OPENAI_BASE_URL", "https://api.openai.com/v1").rstrip("/")
    if not http_url(openai_base_url):
        read.problems.append(
            "OPENAI_BASE_URL must be an http:// or https:// URL with a host, in ASCII "
            "(an international host name in its xn-- form)"
        )

    redis_url = read.text("REDIS_URL")
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://", "redis+cluster://")):
        read.problems.append("REDIS_URL must start with redis://, rediss://, unix:// or redis+cluster://")
    elif redis_url and not valid_url(redis_url):
        read.problems.append("REDIS_URL must be a URL in ASCII with a valid port (percent-encode other characters)")
    prefix = read.text_or("REDIS_PREFIX", "ocw")
    if any(ch in prefix for ch in "{} "):
        read.problems.append("REDIS_PREFIX must not contain braces or spaces")

    cors_entries = split_list(read.text("CORS_ORIGIN"))
    if "*" in cors_entries and production:
        read.problems.append("CORS_ORIGIN='*' is only allowed when APP_ENV=development")
    cors_origins = tuple(entry if entry == "*" else serialized_origin(entry) for entry in cors_entries)
    never_match = [entry for entry, origin in zip(cors_entries, cors_origins, strict=True) if origin is None]
    if never_match:
        # Origins are public (browsers send them with every request), so naming them is safe.
        read.problems.append(
            f"CORS_ORIGIN entries {', '.join(repr(entry) for entry in never_match)} can never match what a browser "
            "sends: use origins such as https://www.example.com (scheme, host and port only: no path, query or "
            "credentials), https://*.example.com for every subdomain of a name with a dot, or '*' (development only)"
        )

    retention_days = read.number("CONVERSATION_RETENTION_DAYS", None, kind=float, minimum=0, maximum=36500)
    if retention_days == 0:
        read.problems.append("CONVERSATION_RETENTION_DAYS must be more than 0 (unset keeps conversations forever)")
    secret_key = read.text("SECRET_KEY")
    if secret_key is None and production and admin_keys:
        read.problems.append(
            "SECRET_KEY is required in production when ADMIN_API_KEY is set (it signs dashboard sessions)"
        )
    elif secret_key is not None and len(secret_key) < MIN_SECRET_KEY_LENGTH:
        read.problems.append(f"SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters")
    if secret_key is not None and secret_key in widget_keys + admin_keys:
        # The widget key is public; a signing secret equal to it would let anyone forge sessions.
        read.problems.append("SECRET_KEY must not be one of the API keys")
    trusted_proxy_networks = networks(split_list(read.text("TRUSTED_PROXY_IPS")))
    if trusted_proxy_networks is None:
        read.problems.append(
            "TRUSTED_PROXY_IPS must list IP addresses or networks (10.0.0.0/8, 2001:db8::/32), separated by commas"
        )
        trusted_proxy_networks = ()
    log_format = read.text_or("LOG_FORMAT", "text").lower()
    if log_format not in ("text", "json"):
        read.problems.append("LOG_FORMAT must be 'text' or 'json'")

    daily_max_tokens = read.number("DAILY_MAX_TOKENS", 0, minimum=1)
    max_output_tokens = read.number("MAX_OUTPUT_TOKENS", None, minimum=1)
    settings = Settings(
        env=env,
        widget_keys=widget_keys,
        admin_keys=admin_keys,
        redis_url=redis_url,
        redis_tls_verify=read.flag("REDIS_TLS_VERIFY", True),
        redis_prefix=prefix,
        openai_api_key=openai_api_key,
        openai_base_url=openai_base_url,
        openai_model=read.text_or("OPENAI_MODEL", "gpt-4.1-mini"),
        system_prompt=read.text_or("SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT),
        max_history_messages=read.number("MAX_HISTORY_MESSAGES", 30, minimum=1, maximum=1000),
        max_output_tokens=max_output_tokens,
        max_history_chars=read.number("MAX_HISTORY_CHARS", 24000, minimum=1),
        stream_usage=read.flag("OPENAI_STREAM_USAGE", True),
        knowledge_top_k=read.number("KNOWLEDGE_TOP_K", 4, minimum=1, maximum=20),
        embedding_model=read.text("EMBEDDING_MODEL"),
        llm_timeout_seconds=read.number("LLM_TIMEOUT_SECONDS", 60.0, kind=float, minimum=0.1),
        heartbeat_seconds=read.number("STREAM_HEARTBEAT_SECONDS", 15.0, kind=float, minimum=0.05),
        shutdown_drain_seconds=read.number("SHUTDOWN_DRAIN_SECONDS", 20.0, kind=float, minimum=0, maximum=3600),
        request_body_timeout_seconds=read.number(
            "REQUEST_BODY_TIMEOUT_SECONDS", 10.0, kind=float, minimum=0.1, maximum=600
        ),
        client_max_open_requests=read.number("CLIENT_MAX_OPEN_REQUESTS", 100, minimum=0),
        cors_origins=tuple(origin for origin in cors_origins if origin is not None),
        limits=Limits(
            window_ms=read.number("RATE_LIMIT_WINDOW_MS", 60000, minimum=1),
            max_requests=read.number("RATE_LIMIT_MAX_REQUESTS", 30, minimum=1),
            session_window_ms=int(1000 * read.number("SESSION_WINDOW_SECONDS", 3600.0, kind=float, minimum=0.001)),
            session_max_messages=read.number("SESSION_MAX_MESSAGES", 60, minimum=1),
            daily_max_requests=read.number("DAILY_MAX_REQUESTS", 0, minimum=1),
            daily_max_tokens=daily_max_tokens,
            turn_token_reservation=(max_output_tokens or DEFAULT_TOKEN_RESERVATION) if daily_max_tokens else 0,
        ),
        trusted_proxy_count=read.number("TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=10),
        trusted_proxy_networks=trusted_proxy_networks,
        data_dir=os.path.abspath(read.text_or("DATA_DIR", "data")),
        # Fractions are allowed, so tests can use a retention of seconds (0.00005 days = 4.32 s).
        retention_ms=max(1, round(retention_days * DAY_MS)) if retention_days else None,
        log_format=log_format,
        secret_key=secret_key,
    )
    if read.problems:
        raise ConfigError(read.problems)
    return settings


def dashboard_secret(settings: Settings) -> str:
    """What signs the dashboard's cookies: SECRET_KEY; in development without one, a secret
    generated once and kept in DATA_DIR (so sign-ins survive restarts)."""
    if settings.secret_key:
        return settings.secret_key
    if settings.production:
        # Configuration requires SECRET_KEY whenever ADMIN_API_KEY is set, so this deployment has
        # no admin key: every dashboard page answers 503 and nothing is ever signed.
        return secrets.token_urlsafe(48)
    path = Path(settings.data_dir) / "secret-key"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Written aside, then linked into place: of several workers starting at once, one wins
        # and they all read the same secret.
        draft = path.with_name(f".secret-key.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(48))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()
