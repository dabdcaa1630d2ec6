"""The admin dashboard through Flask's test client: sign-in, the session cookie and its end,
CSRF, the sign-in rate limit, the pages, escaping, headers and error pages.

The browser flows (real Chromium against gunicorn) are in test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

import auth
import dashboard
import services
from tests.support import ADMIN_KEY, ADMIN_KEY_2, SECRET_KEY, WIDGET_KEY, found
from tests.test_admin import add_conversation

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def form_token(client) -> str:
    """The CSRF token of the page the client gets at /admin (sign-in form or, signed in, the nav)."""
    response = client.get("/admin", follow_redirects=True)
    return found(CSRF_FIELD.search(response.get_data(as_text=True)), 1)


def sign_in(client, key=ADMIN_KEY, **kwargs):
    return client.post("/admin/login", data={"csrf": form_token(client), "admin_key": key}, **kwargs)


def session_cookie(client):
    return client.get_cookie(dashboard.SESSION_COOKIE, path="/admin")


def set_cookies(response) -> dict[str, dict]:
    """name -> attributes of every Set-Cookie of response."""
    found = {}
    for header in response.headers.getlist("Set-Cookie"):
        cookie = SimpleCookie(header)
        for name, morsel in cookie.items():
            found[name] = {"value": morsel.value, **{k: v for k, v in morsel.items() if v}}
    return found


def signed_in(app):
    client = app.test_client()
    assert sign_in(client).status_code == 303
    return client


def page_text(response) -> str:
    return response.get_data(as_text=True)


# ---- sign-in -------------------------------------------------------------------------------


def test_admin_is_a_sign_in_form_with_a_csrf_token(client):
    response = client.get("/admin")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = page_text(response)
    assert 'name="admin_key"' in html and 'type="password"' in html
    assert CSRF_FIELD.search(html)
    assert client.get("/admin/").status_code == 200


def test_a_wrong_key_shows_an_error_and_sets_no_session_cookie(client):
    for wrong in ("not-the-admin-key-at-all-0000", WIDGET_KEY, ""):
        response = sign_in(client, wrong)
        assert response.status_code == 401
        assert "not an admin key" in page_text(response)
        assert dashboard.SESSION_COOKIE not in set_cookies(response)
        assert session_cookie(client) is None


def test_sign_in_sets_a_signed_httponly_strict_session_cookie_scoped_to_admin_and_secure_in_production(client):
    response = sign_in(client)
    assert response.status_code == 303 and response.headers["Location"] == "/admin/conversations"
    cookie = set_cookies(response)[dashboard.SESSION_COOKIE]
    assert cookie["path"] == "/admin" and cookie["httponly"] and cookie["secure"]
    assert cookie["samesite"] == "Strict" and int(cookie["max-age"]) == auth.SESSION_SECONDS
    assert ADMIN_KEY not in cookie["value"]
    assert client.get("/admin/conversations").status_code == 200


def test_the_session_cookie_is_not_secure_in_development_so_plain_http_works(make_app):
    client = make_app(APP_ENV="development", CORS_ORIGIN="*").test_client()
    cookie = set_cookies(sign_in(client))[dashboard.SESSION_COOKIE]
    assert "secure" not in cookie and cookie["httponly"] and cookie["samesite"] == "Strict"


def test_the_session_records_an_hmac_of_the_key_not_the_key_or_a_short_hash(app):
    client = signed_in(app)
    serializer = URLSafeTimedSerializer(SECRET_KEY, salt="ocw-dashboard-session", signer_kwargs=auth.SIGNER)
    payload = serializer.loads(session_cookie(client).value)
    assert set(payload) == {"key", "csrf", "sid"}
    assert len(payload["key"]) == 64 and ADMIN_KEY not in json.dumps(payload)
    assert payload["key"] == dashboard.cookies(app).fingerprint(ADMIN_KEY)


def test_signed_in_admin_at_the_root_goes_to_the_conversations(app):
    response = signed_in(app).get("/admin")
    assert response.status_code == 303 and response.headers["Location"] == "/admin/conversations"


def test_sign_in_without_the_forms_token_is_refused(client):
    client.get("/admin")  # the form's cookie is there, its field is not sent
    for data in ({"admin_key": ADMIN_KEY}, {"admin_key": ADMIN_KEY, "csrf": "made-up"}):
        response = client.post("/admin/login", data=data)
        assert response.status_code == 403
        assert dashboard.SESSION_COOKIE not in set_cookies(response)


def test_sign_in_from_another_origin_is_refused(client):
    token = form_token(client)
    response = client.post(
        "/admin/login", data={"csrf": token, "admin_key": ADMIN_KEY}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403 and session_cookie(client) is None


def test_keys_never_reach_the_log(client, caplog):
    caplog.set_level(logging.INFO)
    sign_in(client, "wrong-admin-key-0123456789abcd")
    sign_in(client)
    assert "wrong-admin-key-0123456789abcd" not in caplog.text and ADMIN_KEY not in caplog.text
    assert "401 dashboard sign-in" in caplog.text and "Dashboard sign-in from" in caplog.text


# ---- rate limit ----------------------------------------------------------------------------


def test_failed_sign_ins_are_limited_per_ip_even_for_the_right_key(app, redis_client):
    client = app.test_client()
    for _ in range(dashboard.LOGIN_MAX_FAILURES):
        assert sign_in(client, "wrong-admin-key-0123456789abcd").status_code == 401
    blocked = sign_in(client)
    assert blocked.status_code == 429
    assert 0 < int(blocked.headers["Retry-After"]) <= dashboard.LOGIN_WINDOW_MS // 1000
    assert dashboard.SESSION_COOKIE not in set_cookies(blocked)
    # Another address is not affected, and the window expires.
    other = app.test_client()
    assert sign_in(other, environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 303
    assert 0 < redis_client.pttl("ocw:{admission}:login:127.0.0.1") <= dashboard.LOGIN_WINDOW_MS


def test_simultaneous_wrong_sign_ins_get_exactly_the_allowed_tries_checked(app):
    def attempt(_):
        client = app.test_client()
        token = form_token(client)
        return client.post(
            "/admin/login", data={"csrf": token, "admin_key": "wrong-admin-key-0123456789abcd"}
        ).status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        statuses = list(pool.map(attempt, range(200)))
    assert (
        statuses.count(401) == dashboard.LOGIN_MAX_FAILURES
        and statuses.count(429) == 200 - dashboard.LOGIN_MAX_FAILURES
    )


def test_others_failures_from_the_admins_address_do_not_lock_out_a_browser_that_signed_in_before(app):
    admin = signed_in(app)  # this browser now carries a device cookie
    admin.post("/admin/logout", data={"csrf": form_token(admin)})
    attacker = app.test_client()  # same address, no device cookie
    for _ in range(dashboard.LOGIN_MAX_FAILURES):
        assert sign_in(attacker, "wrong-admin-key-0123456789abcd").status_code == 401
    assert sign_in(attacker).status_code == 429  # the address is locked, right key or not
    assert sign_in(admin).status_code == 303  # the admin's browser is not


def test_a_device_cookie_gives_no_extra_guesses(app):
    browser = signed_in(app)
    browser.post("/admin/logout", data={"csrf": form_token(browser)})
    for _ in range(dashboard.LOGIN_MAX_FAILURES):
        assert sign_in(browser, "wrong-admin-key-0123456789abcd").status_code == 401
    assert sign_in(browser, "another-wrong-admin-key-0123456").status_code == 429


def test_a_forged_or_foreign_device_cookie_is_just_an_unknown_browser(app, make_app):
    foreign = make_app(SECRET_KEY="a-different-secret-key-of-40-characters!")
    device = signed_in(foreign).get_cookie(dashboard.DEVICE_COOKIE, path="/admin").value
    client = app.test_client()
    client.set_cookie(dashboard.DEVICE_COOKIE, device, path="/admin")
    for _ in range(dashboard.LOGIN_MAX_FAILURES):
        sign_in(client, "wrong-admin-key-0123456789abcd")
    other = app.test_client()  # same address: locked with the client above
    assert sign_in(other).status_code == 429


def test_failed_sign_ins_count_as_401s_in_the_stats(app):
    sign_in(app.test_client(), "wrong-admin-key-0123456789abcd")
    assert services.of(app).store.stats()["lastHour"]["unauthorized"] == 1


# ---- the session's end ---------------------------------------------------------------------


def forge(payload, secret=SECRET_KEY, age_seconds=0):
    """A cookie value signed like the dashboard's, with any secret and any age."""

    class Dated(TimestampSigner):
        def get_timestamp(self):
            return int(time.time()) - age_seconds

    return URLSafeTimedSerializer(secret, salt="ocw-dashboard-session", signer=Dated, signer_kwargs=auth.SIGNER).dumps(
        payload
    )


def refused(client) -> bool:
    response = client.get("/admin/conversations")
    return response.status_code == 303 and response.headers["Location"] == "/admin"


@pytest.mark.parametrize("tamper", ["flip a character", "other secret", "unsigned", "expired", "no key field"])
def test_a_forged_tampered_or_expired_cookie_is_refused(app, tamper):
    client = signed_in(app)
    genuine = session_cookie(client).value
    fingerprint = dashboard.cookies(app).fingerprint(ADMIN_KEY)
    value = {
        "flip a character": genuine[:-3] + ("A" if genuine[-3] != "A" else "B") + genuine[-2:],
        "other secret": forge({"key": fingerprint, "csrf": "x"}, secret="another-secret-of-32-characters-or-more"),
        "unsigned": json.dumps({"key": fingerprint, "csrf": "x"}),
        "expired": forge({"key": fingerprint, "csrf": "x"}, age_seconds=auth.SESSION_SECONDS + 1),
        "no key field": forge({"csrf": "x"}),
    }[tamper]
    client.set_cookie(dashboard.SESSION_COOKIE, value, path="/admin")
    response = client.get("/admin/stats")
    assert response.status_code == 303 and response.headers["Location"] == "/admin"
    assert set_cookies(response)[dashboard.SESSION_COOKIE]["max-age"] == "0"  # the bad cookie is cleared


def test_a_session_dies_when_its_key_is_rotated_out_but_survives_a_restart_that_keeps_it(make_app):
    both = make_app(ADMIN_API_KEY=f"{ADMIN_KEY},{ADMIN_KEY_2}")
    client = signed_in(both)
    cookie = session_cookie(client).value

    restarted = make_app(ADMIN_API_KEY=f"{ADMIN_KEY_2},{ADMIN_KEY}").test_client()
    restarted.set_cookie(dashboard.SESSION_COOKIE, cookie, path="/admin")
    assert restarted.get("/admin/conversations").status_code == 200

    rotated = make_app(ADMIN_API_KEY=ADMIN_KEY_2).test_client()
    rotated.set_cookie(dashboard.SESSION_COOKIE, cookie, path="/admin")
    assert refused(rotated)


def test_a_new_secret_key_signs_everyone_out(make_app):
    cookie = session_cookie(signed_in(make_app())).value
    other = make_app(SECRET_KEY="a-different-secret-key-of-40-characters!").test_client()
    other.set_cookie(dashboard.SESSION_COOKIE, cookie, path="/admin")
    assert refused(other)


def test_sign_out_clears_the_cookie(app):
    client = signed_in(app)
    response = client.post("/admin/logout", data={"csrf": form_token(client)})
    assert response.status_code == 303 and response.headers["Location"] == "/admin"
    assert set_cookies(response)[dashboard.SESSION_COOKIE]["max-age"] == "0"
    assert refused(client)


def test_sign_out_ends_the_session_for_every_copy_of_its_cookie(app):
    client = signed_in(app)
    copied = session_cookie(client).value  # as a shared machine's browser, or a thief, would keep it
    client.post("/admin/logout", data={"csrf": form_token(client)})
    thief = app.test_client()
    thief.set_cookie(dashboard.SESSION_COOKIE, copied, path="/admin")
    assert refused(thief)
    assert thief.get("/admin/export").status_code == 303  # back to sign-in, nothing exported


def test_other_sessions_stay_open_when_one_signs_out(app):
    first, second = signed_in(app), signed_in(app)
    first.post("/admin/logout", data={"csrf": form_token(first)})
    assert second.get("/admin/conversations").status_code == 200


# ---- CSRF ----------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [{}, {"csrf": ""}, {"csrf": "guessed-token"}])
def test_a_post_without_the_sessions_csrf_token_is_refused(app, data):
    conversation_id = add_conversation(app, "kept")
    client = signed_in(app)
    response = client.post(f"/admin/conversations/{conversation_id}/delete", data=data)
    assert response.status_code == 403 and "CSRF" in page_text(response)
    assert services.of(app).store.conversations.get(conversation_id) is not None
    assert client.post("/admin/logout", data=data).status_code == 403
    assert client.get("/admin/conversations").status_code == 200  # still signed in


def test_another_sessions_csrf_token_is_refused(app):
    conversation_id = add_conversation(app, "kept")
    mine, theirs = signed_in(app), signed_in(app)
    response = mine.post(f"/admin/conversations/{conversation_id}/delete", data={"csrf": form_token(theirs)})
    assert response.status_code == 403


# ---- pages ---------------------------------------------------------------------------------


def test_pages_need_a_session(app):
    conversation_id = add_conversation(app, "private")
    client = app.test_client()
    for path in (
        "/admin/conversations",
        f"/admin/conversations/{conversation_id}",
        "/admin/stats",
        "/admin/export",
        f"/admin/conversations/{conversation_id}/delete",
    ):
        response = client.get(path)
        assert response.status_code == 303 and response.headers["Location"] == "/admin", path
    assert client.post(f"/admin/conversations/{conversation_id}/delete").status_code == 303
    assert services.of(app).store.conversations.get(conversation_id) is not None


def test_the_list_is_newest_first_with_session_last_message_count_and_time(app):
    add_conversation(app, "older-session", "first question")
    time.sleep(0.002)
    newest = add_conversation(app, "newer-session", "second question")
    services.of(app).store.conversations.append_message(newest, "newer-session", "assistant", "an answer")
    html = page_text(signed_in(app).get("/admin/conversations"))
    assert html.index("newer-session") < html.index("older-session")
    assert "an answer" in html and "first question" in html and "2 conversations" in html
    row = html[html.index("newer-session") : html.index("older-session")]
    assert '<td class="num" data-label="Messages">2</td>' in row
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ">', row)


def test_the_list_pages_with_a_cursor(app):
    store = services.of(app).store
    for i in range(dashboard.PAGE_SIZE + 1):
        add_conversation(app, f"s-{i:03d}")
    client = signed_in(app)
    first = page_text(client.get("/admin/conversations"))
    assert first.count('href="/admin/conversations/') == dashboard.PAGE_SIZE
    next_link = found(re.search(r'href="(/admin/conversations\?cursor=[^"]+)" rel="next"', first), 1)
    second = page_text(client.get(next_link.replace("&amp;", "&")))
    assert second.count('href="/admin/conversations/') == 1 and 'rel="next"' not in second
    last_id = store.conversations.page(dashboard.PAGE_SIZE + 1).conversations[-1]["_id"]
    assert f'href="/admin/conversations/{last_id}"' in second


def test_search_by_session_id_finds_its_conversation(app):
    wanted = add_conversation(app, "visitor-42")
    add_conversation(app, "visitor-43")
    client = signed_in(app)
    html = page_text(client.get("/admin/conversations", query_string={"session": "visitor-42"}))
    assert f"/admin/conversations/{wanted}" in html and "visitor-43" not in html
    assert "No conversation" in page_text(client.get("/admin/conversations", query_string={"session": "nobody"}))


@pytest.mark.parametrize(
    "query, message",
    [
        ({"session": "not a session id"}, "A session id must be"),
        ({"session": "x" * 129}, "A session id must be"),
        ({"cursor": "garbage"}, "That page link is not valid"),
    ],
)
def test_bad_search_or_cursor_is_a_400_page(app, query, message):
    response = signed_in(app).get("/admin/conversations", query_string=query)
    assert response.status_code == 400 and message in page_text(response)


def test_the_thread_shows_a_reply_the_model_cut_short(app):
    store = services.of(app).store
    conversation_id = store.conversations.id_for_session("cut-session")
    store.conversations.append_message(conversation_id, "cut-session", "user", "Explain everything")
    store.conversations.append_message(
        conversation_id, "cut-session", "assistant", "First, the", finish_reason="length"
    )
    html = signed_in(app).get(f"/admin/conversations/{conversation_id}").get_data(as_text=True)
    assert ">cut short: length</span>" in html


def test_the_thread_shows_roles_times_and_interrupted_replies(app):
    store = services.of(app).store
    conversation_id = add_conversation(app, "thread-session", "Where is my order?")
    store.conversations.append_message(
        conversation_id, "thread-session", "assistant", "It left the warehouse", interrupted=True
    )
    html = page_text(signed_in(app).get(f"/admin/conversations/{conversation_id}"))
    assert html.index("Where is my order?") < html.index("It left the warehouse")
    assert "Visitor" in html and "Assistant" in html
    assert html.count('class="message assistant interrupted"') == 1 and ">interrupted</span>" in html
    assert html.count("<time datetime=") == 4  # two messages, plus started and updated


def test_stored_markup_is_shown_as_text(app):
    attack = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
    conversation_id = add_conversation(app, "xss", attack)
    client = signed_in(app)
    for path in ("/admin/conversations", f"/admin/conversations/{conversation_id}"):
        html = page_text(client.get(path))
        assert "<script>window" not in html and "<img src=x" not in html
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;&lt;img src=x onerror=" in html


def test_unknown_conversation_is_a_404_page(app):
    client = signed_in(app)
    for path in (
        "/admin/conversations/no-such-id",
        "/admin/conversations/no-such-id/delete",
        "/admin/conversations/%C3%A9",
    ):
        response = client.get(path)
        assert response.status_code == 404 and response.mimetype == "text/html", path
    response = client.post("/admin/conversations/no-such-id/delete", data={"csrf": form_token(client)})
    assert response.status_code == 404


def test_delete_asks_first_then_removes_the_conversation(app):
    conversation_id = add_conversation(app, "to-delete", "bye")
    client = signed_in(app)
    confirm = client.get(f"/admin/conversations/{conversation_id}/delete")
    assert confirm.status_code == 200 and "Delete this conversation?" in page_text(confirm)
    assert services.of(app).store.conversations.get(conversation_id) is not None  # asking deletes nothing
    token = found(CSRF_FIELD.search(page_text(confirm)), 1)
    response = client.post(f"/admin/conversations/{conversation_id}/delete", data={"csrf": token})
    assert response.status_code == 303 and response.headers["Location"] == "/admin/conversations?deleted=1"
    assert services.of(app).store.conversations.get(conversation_id) is None
    assert services.of(app).store.conversations.of_session("to-delete") is None
    listing = page_text(client.get(response.headers["Location"]))
    assert "Conversation deleted." in listing and "to-delete" not in listing


def test_export_is_an_ndjson_download_of_every_conversation(app):
    ids = {add_conversation(app, "one"), add_conversation(app, "two")}
    response = signed_in(app).get("/admin/export")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == 'attachment; filename="conversations.ndjson"'
    lines = [json.loads(line) for line in page_text(response).splitlines()]
    assert {line["conversation"]["_id"] for line in lines} == ids


def test_stats_page_shows_the_totals_and_counters(app):
    add_conversation(app, "counted")
    html = page_text(signed_in(app).get("/admin/stats"))
    assert "<strong>1</strong> conversations" in html and "<strong>1</strong> messages" in html
    assert "Requests answered 401" in html


# ---- headers and error pages ---------------------------------------------------------------


def test_pages_carry_a_strict_csp_no_store_and_the_security_headers(app):
    client = signed_in(app)
    for path in ("/admin/conversations", "/admin/stats"):
        response = client.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Frame-Options"] == "DENY"
        html = page_text(response)
        assert not re.search(r"<script(?![^>]*\bsrc=)", html) and "style=" not in html and "<style" not in html
        assert not re.search(r"\son[a-z]+=", html)
    css = client.get("/admin/static/dashboard.css")
    assert css.status_code == 200 and css.mimetype == "text/css"


def test_without_admin_key_every_dashboard_page_is_a_clear_503(make_app):
    client = make_app(ADMIN_API_KEY=None, SECRET_KEY=None).test_client()
    for response in (client.get("/admin"), client.get("/admin/conversations"), client.post("/admin/login")):
        assert response.status_code == 503 and response.mimetype == "text/html"
        assert "ADMIN_API_KEY is not configured" in page_text(response)
    assert client.get("/admin/static/dashboard.css").status_code == 200


def test_redis_down_is_an_html_503_page(app, redis_server):
    client = signed_in(app)
    redis_server.stop()
    try:
        response = client.get("/admin/conversations")
        assert response.status_code == 503 and response.mimetype == "text/html"
        assert "Storage unavailable" in page_text(response)
    finally:
        redis_server.start()


def test_a_huge_form_is_a_413_page_not_a_500(app):
    response = app.test_client().post("/admin/login", data={"admin_key": "x" * (3 * 1024 * 1024)})
    assert response.status_code == 413 and response.mimetype == "text/html"


def test_development_generates_one_secret_in_the_data_folder_shared_by_every_worker(make_app, tmp_path):
    development = {"APP_ENV": "development", "CORS_ORIGIN": "*", "SECRET_KEY": None}
    first, second = make_app(**development), make_app(**development)
    secret_file = tmp_path / "data" / "secret-key"
    assert secret_file.stat().st_mode & 0o777 == 0o600 and len(secret_file.read_text()) >= 32
    other_worker = second.test_client()
    other_worker.set_cookie(dashboard.SESSION_COOKIE, session_cookie(signed_in(first)).value, path="/admin")
    assert other_worker.get("/admin/conversations").status_code == 200


def test_a_sign_in_whose_window_expired_meanwhile_leaves_no_counter_behind(app, redis_client):
    storage = services.of(app).store
    assert storage.limits.take_sign_in_attempt("203.0.113.5", dashboard.LOGIN_MAX_FAILURES, 60000) == (True, 0)
    redis_client.delete("ocw:{admission}:login:203.0.113.5")  # the window expires before the key is checked
    storage.limits.give_back_sign_in_attempt("203.0.113.5")
    assert redis_client.exists("ocw:{admission}:login:203.0.113.5") == 0  # not a -1 that never expires
