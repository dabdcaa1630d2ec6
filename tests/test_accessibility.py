"""axe-core, the accessibility engine most audits use (from the npm registry, web/package.json),
run in Chromium on the open widget and on every dashboard page: no serious or critical
violation of the WCAG rules it checks."""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect

from tests.browser import embed_tag, serious_accessibility_violations, visit
from tests.support import ADMIN_KEY, chat_headers

WIDGET_VIEWS: dict[str, dict] = {
    "light": {"viewport": {"width": 1280, "height": 800}, "color_scheme": "light"},
    "dark": {"viewport": {"width": 1280, "height": 800}, "color_scheme": "dark"},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}
MARKDOWN_REPLY = (
    "**Yes.** See [the guide](https://shop.example/guide):\n\n"
    "1. `Settings`\n2. *Reset*\n\n| a | b |\n|---|---|\n| 1 | 2 |"
)


@pytest.mark.parametrize("view", [*WIDGET_VIEWS, "right to left"])
def test_the_open_widget_has_no_serious_accessibility_violations(browser, api, host_site, upstream, view):
    upstream.reply = MARKDOWN_REPLY
    options = WIDGET_VIEWS.get(view, WIDGET_VIEWS["light"])
    html_attributes = 'lang="ar" dir="rtl"' if view == "right to left" else 'lang="en"'
    context = browser.new_context(**options)
    try:
        page = context.new_page()
        tag = embed_tag(api.url, subtitle="Usually answers in seconds", suggestions="Track my order|Return an item")
        widget = visit(page, host_site.page(f"/axe-{view.replace(' ', '-')}", tag, html_attributes=html_attributes))
        widget.launcher.click()
        expect(widget.panel).to_be_visible()
        assert serious_accessibility_violations(page) == []  # the welcome message and starter questions
        page.locator(".suggestion").first.click()
        widget.wait_until_idle()
        expect(page.locator(".message.assistant strong")).to_have_count(1)
        assert serious_accessibility_violations(page) == []  # a Markdown reply, and the composer after it
    finally:
        context.close()


def test_every_dashboard_page_has_no_serious_accessibility_violations(browser, start_gunicorn, upstream):
    server = start_gunicorn()
    upstream.reply = MARKDOWN_REPLY
    chatted = requests.post(
        server.url + "/v1/chat",
        json={"sessionId": "axe-visitor", "message": "Can I reset it?"},
        headers=chat_headers(),
        timeout=10,
    )
    conversation_id = chatted.json()["conversationId"]
    requests.put(
        f"{server.url}/v1/admin/knowledge/guide",
        json={"title": "Guide", "url": "https://shop.example/guide", "content": "# Reset\n\nOpen Settings."},
        headers={"X-Admin-Api-Key": ADMIN_KEY},
        timeout=10,
    ).raise_for_status()
    context = browser.new_context(viewport={"width": 1200, "height": 800}, bypass_csp=True)
    try:
        page = context.new_page()
        found = {}
        page.goto(server.url + "/admin")
        found["sign in"] = serious_accessibility_violations(page)
        page.fill("#admin_key", "not the key")
        page.click("button:has-text('Sign in')")
        found["sign in, refused"] = serious_accessibility_violations(page)
        page.fill("#admin_key", ADMIN_KEY)
        page.click("button:has-text('Sign in')")
        for name, path in {
            "conversations": "/admin/conversations",
            "search": "/admin/conversations?session=axe-visitor",
            "thread": f"/admin/conversations/{conversation_id}",
            "delete": f"/admin/conversations/{conversation_id}/delete",
            "knowledge": "/admin/knowledge",
            "stats": "/admin/stats",
            "not found": "/admin/conversations/no-such-conversation",
        }.items():
            page.goto(server.url + path)
            expect(page.get_by_role("button", name="Sign out")).to_be_visible()  # signed in, not sent back
            found[name] = serious_accessibility_violations(page)
        assert found == dict.fromkeys(found, [])
    finally:
        context.close()
