"""Start-up validation: every bad variable named at once, no key ever printed."""

from __future__ import annotations

import pytest

from config import ConfigError, Limits, load_settings
from tests.support import ADMIN_KEY, SECRET_KEY, WIDGET_KEY

GOOD = {"WIDGET_API_KEY": WIDGET_KEY, "ADMIN_API_KEY": ADMIN_KEY, "OPENAI_API_KEY": "sk-test", "SECRET_KEY": SECRET_KEY}
SHORT_KEY = "short-secret-key-23chars"[:23]


def problems(env: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return str(caught.value)


def test_defaults_of_a_minimal_production_configuration():
    settings = load_settings(GOOD)
    assert settings.production and not settings.demo_mode
    assert settings.redis_url is None and settings.redis_prefix == "ocw"
    assert settings.openai_base_url == "https://api.openai.com/v1"
    assert settings.openai_model == "gpt-4.1-mini"
    assert settings.max_history_messages == 30 and settings.max_output_tokens is None
    assert settings.llm_timeout_seconds == 60 and settings.heartbeat_seconds == 15
    assert settings.limits == Limits(
        window_ms=60000,
        max_requests=30,
        session_window_ms=3600_000,
        session_max_messages=60,
        daily_max_requests=0,
        daily_max_tokens=0,
    )
    assert settings.max_history_chars == 24000 and settings.stream_usage
    assert settings.trusted_proxy_count == 0 and settings.cors_origins == ()


@pytest.mark.parametrize(
    "env, variable",
    [
        ({**GOOD, "WIDGET_API_KEY": ""}, "WIDGET_API_KEY is required"),
        ({**GOOD, "WIDGET_API_KEY": SHORT_KEY}, "WIDGET_API_KEY: every key must be at least 24"),
        ({**GOOD, "WIDGET_API_KEY": f"{WIDGET_KEY},{SHORT_KEY}"}, "WIDGET_API_KEY: every key must be at least 24"),
        ({**GOOD, "ADMIN_API_KEY": SHORT_KEY}, "ADMIN_API_KEY: every key must be at least 24"),
        ({**GOOD, "ADMIN_API_KEY": WIDGET_KEY}, "WIDGET_API_KEY and ADMIN_API_KEY must not share a key"),
        ({**GOOD, "ADMIN_API_KEY": f"{ADMIN_KEY},{WIDGET_KEY}"}, "must not share a key"),
        ({**GOOD, "CORS_ORIGIN": "*"}, "CORS_ORIGIN='*' is only allowed when APP_ENV=development"),
        ({**GOOD, "CORS_ORIGIN": "example.com"}, "CORS_ORIGIN entries"),
        ({**GOOD, "CORS_ORIGIN": "https://www.example.com/shop"}, "CORS_ORIGIN entries"),
        ({**GOOD, "CORS_ORIGIN": "https://www.example.com?x=1"}, "CORS_ORIGIN entries"),
        ({**GOOD, "CORS_ORIGIN": "ftp://www.example.com"}, "CORS_ORIGIN entries"),
        ({**GOOD, "CORS_ORIGIN": "https://user@www.example.com"}, "CORS_ORIGIN entries"),
        ({**GOOD, "CORS_ORIGIN": "https://*.com"}, "CORS_ORIGIN entries"),
        ({**GOOD, "CORS_ORIGIN": "https://*example.com"}, "CORS_ORIGIN entries"),
        ({**GOOD, "CORS_ORIGIN": "https://shop.*.example.com"}, "CORS_ORIGIN entries"),
        ({**GOOD, "OPENAI_API_KEY": ""}, "OPENAI_API_KEY is required in production"),
        ({**GOOD, "APP_ENV": "staging"}, "APP_ENV must be"),
        ({**GOOD, "REDIS_URL": "http://redis"}, "REDIS_URL must start with"),
        ({**GOOD, "REDIS_TLS_VERIFY": "maybe"}, "REDIS_TLS_VERIFY"),
        ({**GOOD, "REDIS_PREFIX": "a{b}"}, "REDIS_PREFIX"),
        ({**GOOD, "MAX_HISTORY_MESSAGES": "lots"}, "MAX_HISTORY_MESSAGES must be a number"),
        ({**GOOD, "MAX_HISTORY_MESSAGES": "0"}, "MAX_HISTORY_MESSAGES must be between"),
        ({**GOOD, "RATE_LIMIT_MAX_REQUESTS": "-1"}, "RATE_LIMIT_MAX_REQUESTS must be at least 1"),
        ({**GOOD, "LLM_TIMEOUT_SECONDS": "soon"}, "LLM_TIMEOUT_SECONDS must be a number"),
        ({**GOOD, "TRUSTED_PROXY_COUNT": "x"}, "TRUSTED_PROXY_COUNT"),
        ({**GOOD, "SECRET_KEY": ""}, "SECRET_KEY is required in production when ADMIN_API_KEY is set"),
        ({**GOOD, "SECRET_KEY": "a-secret-of-only-31-characters"[:31]}, "SECRET_KEY must be at least 32 characters"),
        ({**GOOD, "SECRET_KEY": "x" * 32, "ADMIN_API_KEY": "x" * 32}, "SECRET_KEY must not be one of the API keys"),
    ],
)
def test_bad_configuration_is_refused_naming_the_variable_without_the_key(env, variable):
    message = problems(env)
    assert variable in message
    for name, value in env.items():
        if name == "CORS_ORIGIN":
            continue  # origins are public (browsers send them): the refusal names the bad ones
        for key in value.split(","):
            if len(key) >= 20:
                assert key not in message


def test_every_bad_variable_is_named_at_once():
    message = problems({"WIDGET_API_KEY": SHORT_KEY, "CORS_ORIGIN": "*", "RATE_LIMIT_WINDOW_MS": "x"})
    for variable in ("WIDGET_API_KEY", "OPENAI_API_KEY", "CORS_ORIGIN", "RATE_LIMIT_WINDOW_MS"):
        assert variable in message
    assert SHORT_KEY not in message


def test_development_allows_wildcard_origin_and_demo_responder():
    settings = load_settings({"APP_ENV": "development", "WIDGET_API_KEY": WIDGET_KEY, "CORS_ORIGIN": "*"})
    assert settings.demo_mode and settings.cors_origins == ("*",)


def test_production_never_uses_the_demo_responder():
    assert not load_settings(GOOD).demo_mode


def test_keys_are_split_on_commas_and_trimmed():
    settings = load_settings({**GOOD, "WIDGET_API_KEY": f" {WIDGET_KEY} , ,{WIDGET_KEY}x "})
    assert settings.widget_keys == (WIDGET_KEY, WIDGET_KEY + "x")


def test_gunicorn_refuses_to_start_with_bad_configuration_and_never_prints_the_key(start_gunicorn):
    server = start_gunicorn(
        wait=False, WIDGET_API_KEY=SHORT_KEY, ADMIN_API_KEY="other-short-admin-key", CORS_ORIGIN="*"
    )
    assert server.process.wait(timeout=60) != 0
    output = server.output()
    assert "WIDGET_API_KEY" in output and "ADMIN_API_KEY" in output and "CORS_ORIGIN" in output
    assert SHORT_KEY not in output and "other-short-admin-key" not in output
    assert "Traceback" not in output


def test_gunicorn_refuses_the_same_key_in_both_roles(start_gunicorn):
    server = start_gunicorn(wait=False, ADMIN_API_KEY=WIDGET_KEY)
    assert server.process.wait(timeout=60) != 0
    assert "must not share a key" in server.output()
    assert WIDGET_KEY not in server.output()


# ---- retention and log format --------------------------------------------------------------


def test_retention_is_unset_by_default_and_logs_are_text():
    settings = load_settings(GOOD)
    assert settings.retention_ms is None
    assert settings.log_format == "text"


@pytest.mark.parametrize("days, ms", [("30", 30 * 86_400_000), ("0.5", 43_200_000), ("0.00005", 4320)])
def test_retention_days_may_be_fractional_so_tests_can_use_seconds(days, ms):
    assert load_settings({**GOOD, "CONVERSATION_RETENTION_DAYS": days}).retention_ms == ms


@pytest.mark.parametrize(
    "variable, value",
    [
        ("CONVERSATION_RETENTION_DAYS", "0"),
        ("CONVERSATION_RETENTION_DAYS", "-1"),
        ("CONVERSATION_RETENTION_DAYS", "a week"),
        ("CONVERSATION_RETENTION_DAYS", "nan"),
        ("CONVERSATION_RETENTION_DAYS", "inf"),
        ("LLM_TIMEOUT_SECONDS", "nan"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_bad_retention_log_format_or_non_finite_numbers_are_refused(variable, value):
    assert variable in problems({**GOOD, variable: value})


@pytest.mark.parametrize("value", ["json", "JSON", " text "])
def test_log_format_is_text_or_json_in_any_case(value):
    assert load_settings({**GOOD, "LOG_FORMAT": value}).log_format == value.strip().lower()


# ---- the dashboard's SECRET_KEY ------------------------------------------------------------


def test_secret_key_is_not_needed_in_production_without_an_admin_key():
    settings = load_settings({**GOOD, "ADMIN_API_KEY": "", "SECRET_KEY": ""})
    assert settings.secret_key is None and settings.admin_keys == ()


def test_development_may_leave_secret_key_unset_for_the_dashboard_to_generate():
    settings = load_settings({"APP_ENV": "development", "WIDGET_API_KEY": WIDGET_KEY, "ADMIN_API_KEY": ADMIN_KEY})
    assert settings.secret_key is None


# ---- values we send in a header or a URL ----------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "sk-proj\u2013abc123",  # an en dash pasted from a document
        "sk-abc\u00a0123",  # a non-breaking space
        "sk-abc 123",
        "\u201csk-abc123\u201d",  # curly quotes
    ],
)
def test_an_openai_api_key_that_no_http_header_can_carry_is_refused_by_name_not_value(value):
    message = problems({**GOOD, "OPENAI_API_KEY": value})
    assert "OPENAI_API_KEY must be visible ASCII characters only" in message
    assert value not in message and value.strip("\u201c\u201d") not in message


@pytest.mark.parametrize(
    "url",
    [
        "ftp://models.example/v1",
        "https://",
        "models.example/v1",
        "https://b\u00fccher.example/v1",
        "https://models.example:99999/v1",
        "https://models.example/v 1",
    ],
)
def test_an_openai_base_url_that_can_never_be_requested_is_refused(url):
    assert "OPENAI_BASE_URL must be an http:// or https:// URL with a host" in problems(
        {**GOOD, "OPENAI_BASE_URL": url}
    )


@pytest.mark.parametrize("url", ["redis://cache.example:port/0", "redis://:p\u00e4ss@cache.example:6379/0"])
def test_a_redis_url_that_can_never_connect_is_refused_without_its_password(url):
    message = problems({**GOOD, "REDIS_URL": url})
    assert "REDIS_URL must be a URL in ASCII with a valid port" in message and "p\u00e4ss" not in message


@pytest.mark.parametrize(
    "variable, value",
    [
        ("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1"),
        ("OPENAI_BASE_URL", "https://xn--bcher-kva.example/v1"),
        ("REDIS_URL", "rediss://:pa%C3%A4ss@cache.example:6380/0"),
        ("OPENAI_API_KEY", "sk-proj-AbC_123.456~x"),
    ],
)
def test_working_urls_and_keys_are_accepted(variable, value):
    assert load_settings({**GOOD, variable: value})


@pytest.mark.parametrize(
    "configured, serialized",
    [
        ("https://Shop.Example.com", "https://shop.example.com"),
        ("https://shop.example.com:443/", "https://shop.example.com"),
        ("http://localhost:80", "http://localhost"),
        ("http://localhost:8000", "http://localhost:8000"),
        ("https://b\u00fccher.example", "https://xn--bcher-kva.example"),
        ("https://*.Example.com", "https://*.example.com"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_configured_origins_are_kept_as_browsers_serialise_them(configured, serialized):
    assert load_settings({**GOOD, "CORS_ORIGIN": configured}).cors_origins == (serialized,)


def test_a_cors_entry_that_can_never_match_is_named_in_the_refusal():
    message = problems({**GOOD, "CORS_ORIGIN": "https://ok.example.com, https://Shop.Example.com/path, https://*.com"})
    assert "CORS_ORIGIN entries 'https://Shop.Example.com/path', 'https://*.com' can never match" in message
    assert "'https://ok.example.com'" not in message
