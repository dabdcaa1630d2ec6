"""Cross-cutting HTTP behaviour: CORS, security headers, JSON errors, health, readiness, and the
public pages (widget script, home page)."""

from __future__ import annotations

import gzip

import pytest

from tests.support import ADMIN_KEY, ROOT, WIDGET_KEY, WIDGET_KEY_2, chat_headers, free_port

ALLOWED = "https://allowed.example"
FOREIGN = "https://evil.example"
BODY = {"sessionId": "cors", "message": "hello"}
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type, x-widget-api-key",
}


@pytest.mark.parametrize(
    "method, path",
    [
        ("POST", "/v1/chat"),
        ("POST", "/v1/chat/stream"),
        ("POST", "/chat"),
        ("GET", "/v1/chat/history"),
        ("GET", "/v1/admin/conversations"),
    ],
)
def test_preflight_needs_no_key_and_allows_the_configured_origin(client, method, path):
    preflight = {**PREFLIGHT, "Access-Control-Request-Method": method}
    response = client.options(path, headers={"Origin": ALLOWED, **preflight})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in response.headers["Vary"]
    assert set(response.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "POST", "DELETE", "OPTIONS"}
    allowed_headers = response.headers["Access-Control-Allow-Headers"].split(", ")
    assert set(allowed_headers) == {"Content-Type", "X-Api-Key", "X-Widget-Api-Key", "X-Admin-Api-Key", "Authorization"}


def test_preflight_is_not_rate_limited(make_app):
    client = make_app(RATE_LIMIT_MAX_REQUESTS="1").test_client()
    for _ in range(5):
        assert client.options("/v1/chat", headers={"Origin": ALLOWED, **PREFLIGHT}).status_code == 204


def test_preflight_from_a_foreign_origin_gets_no_cors_headers(client):
    response = client.options("/v1/chat", headers={"Origin": FOREIGN, **PREFLIGHT})
    assert response.status_code == 204
    assert "Access-Control-Allow-Origin" not in response.headers


def test_allowed_origin_gets_cors_headers_on_the_actual_request(client):
    response = client.post("/v1/chat", json=BODY, headers=chat_headers(Origin=ALLOWED))
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in response.headers["Vary"]


@pytest.mark.parametrize("path", ["/v1/chat", "/v1/chat/stream", "/chat"])
def test_post_from_a_foreign_origin_is_403_and_never_reaches_the_model(client, upstream, redis_client, path):
    response = client.post(path, json=BODY, headers=chat_headers(Origin=FOREIGN))
    assert response.status_code == 403
    assert response.get_json() == {"error": "Origin not allowed"}
    assert "Access-Control-Allow-Origin" not in response.headers
    assert upstream.requests == []
    assert [key for key in redis_client.keys("*") if ":count:refusedOrigins:" not in key] == []


def test_delete_from_a_foreign_origin_is_403(client):
    response = client.delete("/v1/admin/conversations/x", headers={"Origin": FOREIGN, "X-Admin-Api-Key": ADMIN_KEY})
    assert response.status_code == 403


def test_get_from_a_foreign_origin_gets_no_cors_headers_and_no_500(client):
    response = client.get("/health", headers={"Origin": FOREIGN})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


def test_requests_without_origin_and_from_own_origin_pass(client):
    assert client.post("/v1/chat", json=BODY, headers=chat_headers()).status_code == 200
    own = client.post("/v1/chat", json=BODY, headers=chat_headers(Origin="http://localhost"))
    assert own.status_code == 200


def test_no_cors_origin_configured_refuses_every_foreign_browser_post(make_app, caplog):
    app = make_app(CORS_ORIGIN=None)
    assert "CORS_ORIGIN is not set" in caplog.text
    response = app.test_client().post("/v1/chat", json=BODY, headers=chat_headers(Origin=ALLOWED))
    assert response.status_code == 403


def test_wildcard_origin_in_development_allows_any_origin(make_app):
    client = make_app(APP_ENV="development", CORS_ORIGIN="*").test_client()
    response = client.post("/v1/chat", json=BODY, headers=chat_headers(Origin=FOREIGN))
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == FOREIGN


def test_several_origins_are_each_allowed(make_app):
    client = make_app(CORS_ORIGIN=f"{ALLOWED}, https://second.example").test_client()
    for origin in (ALLOWED, "https://second.example"):
        assert client.post("/v1/chat", json=BODY, headers=chat_headers(Origin=origin)).status_code == 200
    assert (
        client.post("/v1/chat", json=BODY, headers=chat_headers(Origin="https://allowed.example.evil")).status_code
        == 403
    )


@pytest.mark.parametrize(
    "configured",
    [
        "https://Shop.Example.com",
        "https://shop.example.com:443",
        "https://shop.example.com/",
        "HTTPS://SHOP.EXAMPLE.COM",
    ],
)
def test_a_configured_origin_matches_what_browsers_send_whatever_its_spelling(make_app, configured):
    client = make_app(CORS_ORIGIN=configured).test_client()
    response = client.post("/v1/chat", json=BODY, headers=chat_headers(Origin="https://shop.example.com"))
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example.com"


@pytest.mark.parametrize(
    "origin, allowed",
    [
        ("https://shop.example.com", True),
        ("https://a.b.example.com", True),
        ("https://example.com", False),  # the bare suffix is not a subdomain
        ("https://evil-example.com", False),  # a look-alike
        ("https://example.com.evil.com", False),
        ("https://shopexample.com", False),
        ("http://shop.example.com", False),  # another scheme
        ("https://shop.example.com:8443", False),  # another port
        ("https://.example.com", False),
        ("null", False),
    ],
)
def test_a_subdomain_wildcard_allows_subdomains_only_never_the_suffix_or_a_look_alike(make_app, origin, allowed):
    client = make_app(CORS_ORIGIN="https://*.example.com").test_client()
    response = client.post("/v1/chat", json=BODY, headers=chat_headers(Origin=origin))
    assert response.status_code == (200 if allowed else 403)
    assert (response.headers.get("Access-Control-Allow-Origin") == origin) is allowed


@pytest.mark.parametrize(
    "method, path, headers",
    [
        ("GET", "/health", {}),
        ("GET", "/nope", {}),
        ("POST", "/v1/chat", {}),
        ("POST", "/v1/chat", {"X-Api-Key": "widget-key-0123456789abcdef"}),
        ("GET", "/v1/admin/conversations", {"X-Admin-Api-Key": ADMIN_KEY}),
        ("OPTIONS", "/v1/chat", {"Origin": ALLOWED}),
    ],
)
def test_every_response_carries_security_headers_and_hsts_in_production(client, method, path, headers):
    kwargs = {"json": BODY} if method == "POST" else {}
    response = client.open(path, method=method, headers=headers, **kwargs)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_no_hsts_in_development(make_app):
    response = make_app(APP_ENV="development").test_client().get("/health")
    assert "Strict-Transport-Security" not in response.headers
    assert response.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize(
    "method, path, status",
    [
        ("GET", "/does-not-exist", 404),
        ("POST", "/v1/nothing", 404),
        ("GET", "/v1/chat", 405),
        ("PUT", "/v1/chat/stream", 405),
        ("DELETE", "/health", 405),
        ("PATCH", "/v1/admin/conversations", 405),
        ("GET", "/widget/chat-widget.js/../app.py", 404),
    ],
)
def test_unknown_routes_and_methods_answer_json_not_html(client, method, path, status):
    response = client.open(path, method=method)
    assert response.status_code == status
    assert response.is_json
    assert set(response.get_json()) == {"error"}
    assert b"<html" not in response.data.lower()


def test_health_never_touches_redis(make_app):
    client = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").test_client()
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


def test_ready_reports_redis(client):
    assert client.get("/ready").get_json() == {"status": "ok"}


def test_ready_and_routes_answer_503_json_when_redis_is_unreachable(make_app):
    client = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").test_client()
    ready = client.get("/ready")
    assert ready.status_code == 503 and ready.get_json() == {"status": "unavailable"}
    chat = client.post("/v1/chat", json=BODY, headers=chat_headers())
    assert chat.status_code == 503 and chat.get_json() == {"error": "Storage unavailable"}
    admin = client.get("/v1/admin/conversations", headers={"X-Admin-Api-Key": ADMIN_KEY})
    assert admin.status_code == 503 and admin.get_json() == {"error": "Storage unavailable"}


def test_widget_script_is_served_as_javascript_with_an_etag_and_a_short_cache(client):
    response = client.get("/widget/chat-widget.js")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/javascript; charset=utf-8"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    assert response.data == (ROOT / "static" / "chat-widget.js").read_bytes()
    etag = response.headers["ETag"]
    unchanged = client.get("/widget/chat-widget.js", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.data == b""
    assert unchanged.headers["ETag"] == etag
    changed = client.get("/widget/chat-widget.js", headers={"If-None-Match": '"some-older-version"'})
    assert changed.status_code == 200


def test_widget_script_is_gzipped_for_browsers_that_accept_it(client):
    script = (ROOT / "static" / "chat-widget.js").read_bytes()
    plain = client.get("/widget/chat-widget.js", headers={"Accept-Encoding": "br;q=1, gzip;q=0"})
    assert "Content-Encoding" not in plain.headers and plain.data == script  # q=0: not acceptable
    response = client.get("/widget/chat-widget.js", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["Vary"]
    assert gzip.decompress(response.data) == script
    assert len(response.data) < len(script) / 2
    assert response.headers["ETag"] != plain.headers["ETag"]  # a cache must never swap one for the other
    unchanged = client.get(
        "/widget/chat-widget.js", headers={"Accept-Encoding": "gzip", "If-None-Match": response.headers["ETag"]}
    )
    assert unchanged.status_code == 304


# ---- the home page -------------------------------------------------------------------------


def test_home_in_production_exposes_no_key(make_app):
    client = make_app(WIDGET_API_KEY=f"{WIDGET_KEY},{WIDGET_KEY_2}").test_client()
    response = client.get("/")
    assert response.status_code == 200
    assert response.get_json() == {
        "service": "Open Chat Widget API",
        "openapi": "/v1/openapi.json",
        "widget": "/widget/chat-widget.js",
    }
    for secret in (WIDGET_KEY, WIDGET_KEY_2, ADMIN_KEY, "sk-test-upstream-key"):
        assert secret not in response.get_data(as_text=True)


def test_demo_page_in_development_embeds_the_widget_with_the_first_widget_key(make_app):
    client = make_app(APP_ENV="development", WIDGET_API_KEY=f"{WIDGET_KEY},{WIDGET_KEY_2}").test_client()
    response = client.get("/", base_url="http://demo.example:8000")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    script_tag = (
        '<script src="http://demo.example:8000/widget/chat-widget.js" data-api-url="http://demo.example:8000/chat"'
        f' data-api-key="{WIDGET_KEY}"'
    )
    assert script_tag in page
    assert f'\n  data-api-key="{WIDGET_KEY}"\n' in page  # the embed snippet, one attribute a line
    assert "http://demo.example:8000/v1/chat/stream" in page  # the headless fetch example
    assert WIDGET_KEY_2 not in page and ADMIN_KEY not in page


def test_demo_page_allows_only_its_own_scripts_and_its_nonced_style(make_app):
    client = make_app(APP_ENV="development").test_client()
    first, second = client.get("/"), client.get("/")
    policy = first.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "'unsafe-inline'" not in policy
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert f'<style nonce="{nonce}">' in first.get_data(as_text=True)
    assert second.headers["Content-Security-Policy"] != policy  # a fresh nonce every time
    assert first.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize(
    "path",
    [
        "/admin//x",
        "/admin//conversations",
        "//health",
        "/v1//openapi.json",
        "/admin//",
        "/admin/conversations//x",
        "/health/",
        "/admin/conversations/",
        "/v1/chat/history/",
    ],
)
def test_no_path_answers_a_redirect_to_a_host_the_request_chose(client, path):
    response = client.get(path, headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"})
    location = response.headers.get("Location", "")
    assert "evil.example" not in location and not location.startswith(("http:", "https:", "//"))
    if not path.startswith("/admin"):  # the dashboard answers in HTML, the API never does
        assert response.is_json, response.get_data(as_text=True)[:200]
