"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against gunicorn
started as the Procfile says, in production mode.

Screenshots of the list and of a thread are saved under test-output/dashboard/.
"""

from __future__ import annotations

import pytest
import requests

import storage
from tests.support import ADMIN_KEY, ADMIN_KEY_2, ROOT, chat_headers

SCREENSHOTS = ROOT / "test-output" / "dashboard"
ATTACK = '<script>window.pwned = 1</script><img src="x" onerror="window.pwned = 2">'


@pytest.fixture
def context(browser):
    # A time zone far from UTC, so the local-time rendering is visible.
    context = browser.new_context(
        timezone_id="America/New_York", locale="en-US", viewport={"width": 1200, "height": 800}
    )
    yield context
    context.close()


@pytest.fixture
def page(context):
    page = context.new_page()
    page.on("dialog", lambda dialog: pytest.fail(f"a dialog opened: {dialog.message}"))
    return page


def chat(server, session, message):
    response = requests.post(
        server.url + "/v1/chat", json={"sessionId": session, "message": message}, headers=chat_headers(), timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()["conversationId"]


def sign_in(page, server, key=ADMIN_KEY):
    page.goto(server.url + "/admin")
    page.fill("#admin_key", key)
    page.click("button:has-text('Sign in')")


def on_sign_in_form(page) -> bool:
    return page.locator("#admin_key").count() == 1


def test_a_wrong_key_shows_an_error_and_sets_no_session_cookie(start_gunicorn, page, context):
    server = start_gunicorn()
    sign_in(page, server, key="not-the-admin-key-0123456789")
    assert page.get_by_role("alert").inner_text() == "That is not an admin key of this deployment."
    assert on_sign_in_form(page)
    assert "ocw_admin_session" not in {cookie["name"] for cookie in context.cookies()}


def test_sign_in_list_thread_delete_and_the_conversation_is_gone_then_sign_out(
    start_gunicorn, redis_server, upstream, page, context, capsys
):
    server = start_gunicorn()
    upstream.reply = "Your order left the warehouse this morning."
    chat(server, "visitor-older", "Do you ship to Norway?")
    conversation_id = chat(server, "visitor-42", "Where is my order?")
    # A reply cut mid-stream, as the service stores it when the visitor leaves.
    store = storage.Storage(storage.connect(redis_server.url), "ocw")
    store.conversations.append_message(
        conversation_id, "visitor-42", "assistant", "Let me check the tracking", interrupted=True
    )

    sign_in(page, server)
    assert page.url == server.url + "/admin/conversations"
    cookie = next(c for c in context.cookies() if c["name"] == "ocw_admin_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"
    rows = page.locator("table.list tbody tr")
    assert rows.count() == 2
    assert "visitor-42" in rows.nth(0).inner_text() and "visitor-older" in rows.nth(1).inner_text()
    assert "Let me check the tracking" in rows.nth(0).inner_text() and "\t3\t" in rows.nth(0).inner_text()
    # Times are shown in the reader's zone by the page's script; the UTC text stays as the title.
    updated = rows.nth(0).locator("time")
    assert "UTC" not in updated.inner_text() and updated.get_attribute("title").endswith("UTC")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "list.png"), full_page=True)

    page.click("text=visitor-42")
    messages = page.locator("ol.thread li.message")
    assert messages.count() == 3
    assert [messages.nth(i).locator(".role").inner_text() for i in range(3)] == ["Visitor", "Assistant", "Assistant"]
    assert "Your order left the warehouse" in messages.nth(1).inner_text()
    assert messages.nth(2).locator(".badge").inner_text() == "interrupted"
    assert messages.nth(1).locator(".badge").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "thread.png"), full_page=True)
    with capsys.disabled():
        print(f"\nDashboard screenshots: {SCREENSHOTS / 'list.png'} and {SCREENSHOTS / 'thread.png'}")

    page.click("text=Delete…")
    assert page.locator("h1").inner_text() == "Delete this conversation?"
    page.click("button:has-text('Delete')")
    assert page.url.endswith("/admin/conversations?deleted=1")
    assert page.get_by_role("status").inner_text() == "Conversation deleted."
    assert "visitor-42" not in page.locator("table.list").inner_text()
    assert page.goto(f"{server.url}/admin/conversations/{conversation_id}").status == 404
    assert store.conversations.get(conversation_id) is None

    page.goto(server.url + "/admin/conversations")
    page.click("button:has-text('Sign out')")
    assert on_sign_in_form(page)
    page.goto(server.url + "/admin/conversations")
    assert on_sign_in_form(page) and page.url == server.url + "/admin"


@pytest.mark.parametrize("tamper", ["edited", "made up"])
def test_a_forged_or_tampered_cookie_is_refused(start_gunicorn, page, context, tamper):
    server = start_gunicorn()
    sign_in(page, server)
    genuine = next(c for c in context.cookies() if c["name"] == "ocw_admin_session")
    payload, _, rest = genuine["value"].partition(".")
    forged = {
        # The payload says the same thing with another CSRF token; the signature no longer fits.
        "edited": payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB") + "." + rest,
        "made up": "eyJrZXkiOiJhZG1pbiIsImNzcmYiOiJ4In0.aaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbb",
    }[tamper]
    context.clear_cookies()
    context.add_cookies([{**genuine, "value": forged}])
    page.goto(server.url + "/admin/conversations")
    assert on_sign_in_form(page) and page.url == server.url + "/admin"


def test_stored_markup_shows_as_text_and_runs_nothing(start_gunicorn, upstream, page):
    server = start_gunicorn()
    upstream.reply = ATTACK  # a model can be talked into repeating it, so replies carry it too
    conversation_id = chat(server, "attacker", ATTACK)
    sign_in(page, server)
    assert ATTACK in page.locator("table.list").inner_text()  # the last message, in the list
    page.goto(f"{server.url}/admin/conversations/{conversation_id}")
    contents = page.locator("ol.thread li.message .content")
    assert [contents.nth(i).inner_text() for i in range(contents.count())] == [ATTACK, ATTACK]
    assert page.locator("ol.thread img").count() == 0 and page.locator("main script").count() == 0
    page.wait_for_timeout(200)  # an onerror would have fired by now
    assert page.evaluate("window.pwned") is None


def test_a_post_without_the_csrf_token_is_refused(start_gunicorn, page):
    server = start_gunicorn()
    conversation_id = chat(server, "kept", "Please keep me")
    sign_in(page, server)
    page.goto(f"{server.url}/admin/conversations/{conversation_id}/delete")
    page.evaluate("document.querySelector('form.actions input[name=csrf]').remove()")
    page.click("button:has-text('Delete')")
    assert page.locator("h1").inner_text() == "Refused"
    assert "CSRF token is missing or wrong" in page.locator("main").inner_text()
    page.goto(f"{server.url}/admin/conversations/{conversation_id}")
    assert "Please keep me" in page.locator("ol.thread").inner_text()


def test_the_session_dies_when_its_key_is_rotated_out(start_gunicorn, page):
    before = start_gunicorn(ADMIN_API_KEY=f"{ADMIN_KEY},{ADMIN_KEY_2}")
    sign_in(page, before)
    assert page.url == before.url + "/admin/conversations"
    before.stop()

    # Cookies do not depend on the port: the browser sends the same session to the new server.
    after = start_gunicorn(ADMIN_API_KEY=ADMIN_KEY_2)
    page.goto(after.url + "/admin/conversations")
    assert on_sign_in_form(page) and page.url == after.url + "/admin"
    sign_in(page, after, key=ADMIN_KEY_2)
    assert page.url == after.url + "/admin/conversations"


def test_the_knowledge_page_uploads_shows_and_deletes_a_document(start_gunicorn, page, tmp_path):
    server = start_gunicorn()
    policy = tmp_path / "returns policy.md"
    policy.write_text("# Returns\n\nSend it back within 30 days.\n\n## Refunds\n\nWithin 14 days.")
    sign_in(page, server)
    page.click("nav >> text=Knowledge")
    assert page.locator("h1").inner_text() == "Knowledge"
    page.set_input_files("#document", str(policy))
    page.click("button:has-text('Upload')")
    assert page.get_by_role("status").inner_text() == "Stored returns-policy.md."
    row = page.locator("table.list tbody tr")
    assert row.count() == 1 and "Returns" in row.inner_text() and "\t2\t" in row.inner_text()
    delete = row.get_by_role("button", name="Delete returns-policy.md")
    # A link-styled button in a white table: its text must not be white (it was, in the header's style).
    assert delete.evaluate("b => getComputedStyle(b).color") != "rgb(255, 255, 255)"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "knowledge.png"), full_page=True)
    delete.click()
    assert page.get_by_role("status").inner_text() == "Deleted returns-policy.md."
    assert page.locator("table.list").count() == 0


def test_every_dashboard_page_fits_a_390_pixel_phone(start_gunicorn, upstream, browser):
    """No page scrolls sideways, the header's links (Sign out too) and the search's Find button
    stay on screen, and listings read as one card per conversation."""
    server = start_gunicorn()
    upstream.reply = "Your parcel left the warehouse this morning and arrives tomorrow before noon."
    conversation_id = chat(server, "visitor-with-a-rather-long-session-id-42", "Where is my order? " * 6)
    requests.put(
        f"{server.url}/v1/admin/knowledge/shipping-and-delivery-times.md",
        json={"title": "Shipping and delivery times for every country", "content": "# Shipping\n\nTwo days."},
        headers={"X-Admin-Api-Key": ADMIN_KEY},
        timeout=10,
    ).raise_for_status()
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.goto(server.url + "/admin")
        assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
        page.screenshot(path=str(SCREENSHOTS / "phone-login.png"), full_page=True)
        sign_in(page, server)
        pages = {
            "conversations": "/admin/conversations",
            "thread": f"/admin/conversations/{conversation_id}",
            "delete": f"/admin/conversations/{conversation_id}/delete",
            "knowledge": "/admin/knowledge",
            "stats": "/admin/stats",
        }
        for name, path in pages.items():
            page.goto(server.url + path)
            sideways = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert sideways <= 0, f"{name} scrolls {sideways} px sideways"
            for control in (page.get_by_role("button", name="Sign out"), page.get_by_role("link", name="Stats")):
                box = control.bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, f"{name}: off screen"
            page.screenshot(path=str(SCREENSHOTS / f"phone-{name}.png"), full_page=True)
        page.goto(server.url + "/admin/conversations")
        find = page.get_by_role("button", name="Find").bounding_box()
        assert find is not None and find["x"] + find["width"] <= 390
        row = page.locator("table.list tbody tr").first
        assert row.bounding_box()["width"] <= 390 - 2 * 16 + 1  # a card inside the page's padding
        assert page.locator("table.list thead").is_hidden()  # each card labels its own values
        assert row.locator("td[data-label='Messages']").inner_text() == "2"
    finally:
        context.close()
