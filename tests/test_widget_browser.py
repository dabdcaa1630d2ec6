"""The widget in a real browser: Debian's Chromium driven by Playwright, the API served by gunicorn,
and the host page served from another origin, so every call the widget makes goes through a real
CORS preflight. Screenshots of the open widget are saved in test-output/.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
import requests
from playwright.sync_api import expect

from tests.browser import embed_tag, history, visit
from tests.support import WIDGET_KEY, admin_headers, free_port, wait_until

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

# What the visitor reads for each failure, in English (web/src/i18n.js).
UNAUTHORIZED = "This chat is not set up correctly: the website's chat key was refused. Please let the site owner know."
RATE_LIMITED = "You are sending messages too quickly. Please wait a moment, then retry."
UNAVAILABLE = "The assistant is unavailable right now. Please try again in a little while."
UNREACHABLE = "The assistant could not be reached. Check your connection, then retry."


# ---- the browser, the host site, the API ---------------------------------------------------


# ---- chatting ------------------------------------------------------------------------------


def test_reply_streams_in_token_by_token_through_a_real_cors_preflight(page, api, host_site, upstream):
    upstream.reply = "one two three four five six"
    upstream.token_delay = 0.25
    log_start = len(api.output())
    widget = visit(page, host_site.page("/shop", embed_tag(api.url, title="Support")))
    widget.open()
    expect(widget.replies.first).to_have_text("Hi! Ask me anything and I will help you out.")
    widget.send("Count for me")
    expect(widget.questions).to_have_text(["Count for me"])

    seen: list[str] = []
    reply = widget.replies.nth(1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        # Busy first, then the text: once the reply is done, the text read after it is final.
        done = widget.log.get_attribute("aria-busy") == "false"
        text = reply.text_content()
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        if done:
            break
        time.sleep(0.03)
    assert seen[-1] == "one two three four five six"
    partial = [text for text in seen[:-1] if "one two three four five six".startswith(text)]
    assert len(partial) >= 2, f"the reply did not appear progressively: {seen}"
    widget.screenshot("widget-open.png")

    assert UUID.fullmatch(widget.session_id())
    assert [m["content"] for m in history(api, widget.session_id())] == ["Count for me", "one two three four five six"]
    log = api.output()[log_start:]
    assert " OPTIONS /chat 204 " in log, "the browser did not preflight the cross-origin POST"
    assert " POST /chat 200 " in log
    assert widget.errors == []


def test_reload_redraws_the_thread_and_keeps_the_panel_open(page, api, host_site, upstream):
    log_start = len(api.output())
    url = host_site.page("/reload", embed_tag(api.url))
    widget = visit(page, url)
    widget.open()
    for question in ("First question", "Second question"):
        upstream.reply = f"Answer to {question.lower()}"
        widget.send(question)
        widget.wait_until_idle()
    session_id = widget.session_id()

    page.reload()
    expect(widget.panel).to_be_visible()  # reopened from os-chatbot-widget-open, without a click
    expect(widget.questions).to_have_text(["First question", "Second question"])
    expect(widget.replies).to_have_text(
        [
            "Hi! Ask me anything and I will help you out.",
            "Answer to first question",
            "Answer to second question",
        ]
    )
    assert widget.session_id() == session_id
    assert page.evaluate("localStorage.getItem('os-chatbot-widget-open')") == "true"

    page.get_by_role("button", name="Close chat").click()
    page.reload()
    expect(page.get_by_role("button", name="Open chat")).to_be_visible()
    expect(widget.panel).to_be_hidden()
    log = api.output()[log_start:]
    assert log.count(" GET /v1/chat/history 200 ") == 1  # fetched once, by the reload that found the panel open
    assert "sessionId=" not in log, "the access log must not carry query strings"


def test_stop_keeps_the_partial_reply_shown_and_stored_as_interrupted(page, api, host_site, upstream):
    upstream.reply = " ".join(f"w{i}" for i in range(60))
    upstream.token_delay = 0.1
    widget = visit(page, host_site.page("/stop", embed_tag(api.url)))
    widget.open()
    widget.send("Tell me everything")
    reply = widget.replies.nth(1)
    expect(reply).to_contain_text("w0 w1 w2")
    page.get_by_role("button", name="Stop").click()
    widget.wait_until_idle()

    expect(page.locator(".message.assistant .note")).to_have_text(["Reply interrupted"])
    shown = reply.text_content()
    assert 3 <= len(shown.split()) < 60
    assert wait_until(lambda: upstream.hangups, timeout=5), "the server kept reading the model after Stop"
    assert upstream.finished_streams == 0
    session_id = widget.session_id()
    assert wait_until(lambda: len(history(api, session_id)) == 2, timeout=5)
    stored = history(api, session_id)[1]
    assert stored["interrupted"] is True
    assert stored["content"].startswith(shown)  # the server may have relayed a token the page never drew

    page.reload()
    expect(widget.replies.nth(1)).to_have_text(stored["content"])
    expect(page.locator(".message.assistant .note")).to_have_text(["Reply interrupted"])


FAILURES = {  # key, the API's settings, messages to send, what the visitor then reads
    "401 wrong key": ("not-the-widget-key-0123456789", {}, 1, UNAUTHORIZED),
    "429 rate limited": (WIDGET_KEY, {"RATE_LIMIT_MAX_REQUESTS": "1"}, 2, RATE_LIMITED),
    "503 storage down": (WIDGET_KEY, {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, 1, UNAVAILABLE),
    "site not in CORS_ORIGIN": (WIDGET_KEY, {"CORS_ORIGIN": "https://elsewhere.example"}, 1, UNREACHABLE),
}


@pytest.mark.parametrize("case", FAILURES)
def test_each_failure_gets_its_own_human_message_and_a_retry(page, api, start_api, host_site, upstream, case):
    key, settings, sends, expected = FAILURES[case]
    server = start_api(**settings) if settings else api
    widget = visit(page, host_site.page(f"/failure-{sends}", embed_tag(server.url, api_key=key)))
    widget.open()
    for i in range(sends):
        widget.send(f"Message {i}")
        widget.wait_until_idle()
    notice = page.locator(".notice")
    expect(notice).to_have_count(1)
    expect(notice).to_contain_text(expected)
    expect(notice.get_by_role("button", name="Retry")).to_be_visible()
    expect(widget.questions).to_have_count(sends)
    assert len(upstream.requests) == sends - 1  # only the rate-limited case had a message through


def test_retry_resends_the_message_without_drawing_or_storing_it_twice(page, api, host_site, upstream):
    upstream.fault = "status"  # the model fails after the stream has started: an `error` event
    widget = visit(page, host_site.page("/retry", embed_tag(api.url)))
    widget.open()
    widget.send("Are you there?")
    widget.wait_until_idle()
    expect(page.locator(".notice")).to_contain_text(UNAVAILABLE)

    upstream.fault = None
    page.get_by_role("button", name="Retry").click()
    widget.wait_until_idle()
    expect(widget.replies.last).to_have_text("Hello from the fake model.")
    expect(widget.questions).to_have_text(["Are you there?"])
    expect(page.locator(".notice")).to_have_count(0)
    expect(widget.input).to_be_focused()
    # The server kept the message once, so the model was not asked it twice.
    assert [m["content"] for m in upstream.requests[-1]["messages"] if m["role"] == "user"] == ["Are you there?"]


def test_a_reply_cut_by_a_restart_is_asked_for_again_by_itself_and_shown_once(page, start_api, host_site, upstream):
    server = start_api(SHUTDOWN_DRAIN_SECONDS="1")
    upstream.echo = True
    upstream.token_delay = 0.3
    question = "Tell me " + " ".join(f"w{i}" for i in range(30))
    widget = visit(page, host_site.page("/restart", embed_tag(server.url)))
    widget.open()
    widget.send(question)
    expect(widget.replies.nth(1)).to_contain_text("echo: Tell")
    for worker in server.worker_pids():  # every worker restarts, as at a deploy; the master starts new ones
        os.kill(worker, signal.SIGTERM)
    assert wait_until(lambda: upstream.hangups, timeout=10), "the drain did not end the stream"
    upstream.token_delay = 0  # the widget asks again 3 s later
    widget.wait_until_idle()

    expect(widget.replies.last).to_have_text(f"echo: {question}")
    expect(widget.replies).to_have_count(2)  # the welcome and one reply: the cut one was replaced
    expect(widget.questions).to_have_text([question])
    expect(page.locator(".notice")).to_have_count(0)
    stored = history(server, widget.session_id())
    assert [(m["role"], bool(m.get("interrupted"))) for m in stored] == [
        ("user", False),
        ("assistant", True),
        ("assistant", False),
    ]


def test_an_answer_cut_by_max_tokens_tells_the_visitor_it_was_cut_short(page, api, host_site, upstream):
    upstream.stream_bytes = [
        b'data: {"choices": [{"delta": {"content": "The steps are: one, two"}}]}\n\n',
        b'data: {"choices": [{"delta": {}, "finish_reason": "length"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    widget = visit(page, host_site.page("/cut-short", embed_tag(api.url)))
    widget.open()
    widget.send("How do I reset it?")
    widget.wait_until_idle()
    expect(widget.replies.last).to_have_text("The steps are: one, two")
    expect(page.locator(".message.assistant .note")).to_have_text(["This answer was cut short."])

    page.reload()  # redrawn from the history, the same
    expect(widget.replies.nth(1)).to_have_text("The steps are: one, two")
    expect(page.locator(".message.assistant .note")).to_have_text(["This answer was cut short."])


def test_starter_questions_and_a_subtitle_help_a_visitor_begin(page, api, host_site, upstream):
    upstream.echo = True
    tag = embed_tag(api.url, subtitle="Usually answers in seconds", suggestions="Track my order| Return an item |")
    widget = visit(page, host_site.page("/starters", tag))
    widget.open()
    expect(page.locator(".header .subtitle")).to_have_text("Usually answers in seconds")
    starters = page.get_by_role("group", name="Suggested questions").get_by_role("button")
    expect(starters).to_have_text(["Track my order", "Return an item"])  # blanks dropped, trimmed
    starters.nth(1).click()
    widget.wait_until_idle()
    expect(widget.questions).to_have_text(["Return an item"])
    expect(widget.replies.last).to_have_text("echo: Return an item")
    expect(page.get_by_role("group", name="Suggested questions")).to_have_count(0)

    page.reload()  # a visitor who has begun is not offered them again
    expect(widget.questions).to_have_text(["Return an item"])
    expect(page.get_by_role("group", name="Suggested questions")).to_have_count(0)


def test_a_reply_from_the_sites_documents_links_its_sources(page, api, host_site, upstream):
    documents = {
        "policies": {
            "title": "Store policies",
            "url": "https://shop.example/policies",
            "content": "# Refunds\n\nA refund reaches your card within 14 days.",
        },
        "notes": {"title": "Refund notes", "url": None, "content": "Refund requests are read every morning."},
    }
    for document_id, body in documents.items():
        response = requests.put(f"{api.url}/v1/admin/knowledge/{document_id}", json=body, headers=admin_headers())
        assert response.status_code == 200
    try:
        widget = visit(page, host_site.page("/sources", embed_tag(api.url)))
        widget.open()
        widget.send("When do I get my refund?")
        widget.wait_until_idle()
        for redrawn in (False, True):  # as streamed, then redrawn from the history
            if redrawn:
                page.reload()
            sources = page.locator(".message.assistant .sources")
            expect(sources).to_have_count(1)
            expect(sources).to_contain_text("Sources:")
            link = sources.locator("a")
            expect(link).to_have_count(1)  # the document without a URL is named, not linked
            expect(link).to_have_text("Store policies")
            assert link.get_attribute("href") == "https://shop.example/policies"
            assert (link.get_attribute("target"), link.get_attribute("rel")) == ("_blank", "noopener noreferrer")
            expect(sources).to_contain_text("Refund notes")
    finally:
        for document_id in documents:
            requests.delete(f"{api.url}/v1/admin/knowledge/{document_id}", headers=admin_headers())


# ---- safety of the host page and of the widget ---------------------------------------------


def test_markup_in_messages_is_shown_as_text_and_runs_nothing(page, api, host_site, upstream):
    question = "<img src=x onerror=alert(1)>"
    upstream.reply = "<img src=y onerror=alert(2)> <script>alert(3)</script> <b>bold?</b>"
    widget = visit(page, host_site.page("/xss", embed_tag(api.url, title="<i>Support</i>")))
    widget.open()
    widget.send(question)
    widget.wait_until_idle()
    expect(widget.questions).to_have_text([question])
    expect(widget.replies.last).to_have_text(upstream.reply)
    expect(page.get_by_role("dialog", name="<i>Support</i>")).to_be_visible()

    page.reload()
    expect(widget.replies.last).to_have_text(upstream.reply)  # drawn again from the history
    page.wait_for_timeout(300)  # time for an injected onerror handler to fire, if there were one
    assert page.locator("img, script:not([src]), b, i").count() == 0  # also searches the shadow root
    assert widget.dialogs == []


HOSTILE_CSS = """
* { all: unset !important; font-size: 48px !important; line-height: 4 !important; }
html { font-size: 64px !important; }
div, button, textarea, form, span, svg { display: none !important; visibility: hidden !important; }
#os-chat-widget-root, [data-position] { display: none !important; position: static !important;
  transform: scale(3) !important; opacity: 0 !important; left: 0 !important; top: 0 !important; }
"""


def test_hostile_host_css_leaves_the_widget_usable(page, api, host_site, upstream):
    widget = visit(page, host_site.page("/hostile", embed_tag(api.url), css=HOSTILE_CSS))
    widget.open()
    corner, panel = page.locator("#os-chat-widget-root").bounding_box(), widget.panel.bounding_box()
    assert corner == {"x": 1280 - 20 - 56, "y": 800 - 20 - 56, "width": 56, "height": 56}
    assert panel["width"] == 380 and panel["x"] + 380 == 1280 - 20 and panel["y"] > 0
    assert widget.style(".message", "font-size") == "14px"
    assert widget.style(".widget", "opacity") == "1"

    widget.send("Still there?")
    widget.wait_until_idle()
    expect(widget.replies.last).to_have_text("Hello from the fake model.")
    widget.screenshot("widget-hostile-css.png")


LOOKALIKES = """
<button class="launcher send stop" id="host-button">A host button</button>
<div class="panel message user notice" id="host-box">A host box</div>
<textarea class="composer" id="host-textarea"></textarea>
"""
HOST_LAYOUT = """() => {
    const watched = ["h1", "#intro", "#first-link", "#host-button", "#host-box", "#host-textarea"];
    const style = (el) => { const s = getComputedStyle(el);
        return [s.position, s.display, s.backgroundColor, s.color, s.fontSize, s.borderRadius, s.width, s.height]; };
    return {
        boxes: watched.map((s) => JSON.stringify(document.querySelector(s).getBoundingClientRect())),
        styles: watched.map((s) => style(document.querySelector(s))),
        scroll: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
    };
}"""


def test_widget_neither_moves_nor_restyles_the_host_page(page, api, host_site):
    url = host_site.page("/layout", LOOKALIKES)
    widget = visit(page, url)
    before = page.evaluate(HOST_LAYOUT)
    page.evaluate(
        """([src, apiUrl, key]) => {
            const script = Object.assign(document.createElement("script"), { src });
            Object.assign(script.dataset, { apiUrl, apiKey: key });
            document.body.append(script);
        }""",
        [api.url + "/widget/chat-widget.js", api.url + "/chat", WIDGET_KEY],
    )
    widget.open()
    assert page.evaluate(HOST_LAYOUT) == before


def test_missing_url_or_key_logs_one_error_and_draws_nothing(page, api, host_site):
    for name in ("api_url", "api_key"):
        widget = visit(page, host_site.page(f"/missing-{name}", embed_tag(api.url, **{name: None})))
        page.wait_for_load_state("load")
        page.wait_for_timeout(100)
        assert widget.errors == ["[os-chat-widget] Missing required data-api-url or data-api-key attributes."], name
        assert page.locator("#os-chat-widget-root").count() == 0


@pytest.mark.parametrize(
    "configured, used",
    [
        ("#ff5500", "#ff5500"),
        ("rebeccapurple", "rebeccapurple"),
        ("red; } * { display: none } .x {", "#0ea5e9"),
        ("url(https://evil.example/x.png)", "#0ea5e9"),
        ("not-a-colour", "#0ea5e9"),
    ],
)
def test_accent_colour_is_used_only_if_it_is_a_css_colour(page, api, host_site, configured, used):
    widget = visit(page, host_site.page("/accent", embed_tag(api.url, accent_color=configured)))
    widget.open()
    assert widget.style(".widget", "--accent").strip() == used
    expect(widget.input).to_be_visible()


# ---- access, devices, themes ---------------------------------------------------------------


def test_keyboard_alone_opens_sends_and_closes(page, api, host_site, upstream):
    widget = visit(page, host_site.page("/keyboard", embed_tag(api.url)))
    for _ in range(10):  # through the host page's own links to the launcher
        page.keyboard.press("Tab")
        if widget.launcher.evaluate("el => el.getRootNode().activeElement === el"):
            break
    expect(widget.launcher).to_be_focused()
    expect(widget.launcher).to_have_attribute("aria-expanded", "false")

    page.keyboard.press("Enter")
    expect(widget.panel).to_be_visible()
    expect(widget.input).to_be_focused()
    page.keyboard.type("Line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    page.keyboard.press("Enter")
    widget.wait_until_idle()
    expect(widget.questions).to_have_text(["Line one\nline two"])
    expect(widget.replies.last).to_have_text("Hello from the fake model.")
    expect(widget.input).to_be_focused()

    page.keyboard.press("Escape")
    expect(widget.panel).to_be_hidden()
    expect(widget.launcher).to_be_focused()
    expect(widget.launcher).to_have_attribute("aria-expanded", "false")


def test_defaults_and_labels_without_optional_attributes(page, api, host_site):
    widget = visit(page, host_site.page("/defaults", embed_tag(api.url)))
    corner = page.locator("#os-chat-widget-root").bounding_box()
    assert (corner["x"] + corner["width"], corner["y"] + corner["height"]) == (1280 - 20, 800 - 20)
    widget.open()
    expect(page.get_by_role("dialog", name="Assistant")).to_be_visible()
    expect(widget.replies).to_have_text(["Hi! Ask me anything and I will help you out."])
    expect(widget.input).to_have_attribute("placeholder", "Type your message...")
    expect(widget.log).to_have_attribute("aria-live", "polite")
    expect(page.get_by_role("button", name="Close chat")).to_have_attribute("aria-expanded", "true")
    expect(page.get_by_role("button", name="Send")).to_be_visible()


def test_embed_attributes_set_title_welcome_placeholder_and_side(page, api, host_site):
    tag = embed_tag(
        api.url,
        title="Support",
        welcome_message="Hey! How can I help?",
        input_placeholder="Type your question...",
        position="left",
    )
    widget = visit(page, host_site.page("/attributes", tag))
    corner = page.locator("#os-chat-widget-root").bounding_box()
    assert (corner["x"], corner["y"] + corner["height"]) == (20, 800 - 20)
    widget.open()
    expect(page.get_by_role("dialog", name="Support")).to_be_visible()
    expect(widget.replies).to_have_text(["Hey! How can I help?"])
    expect(widget.input).to_have_attribute("placeholder", "Type your question...")
    assert widget.panel.bounding_box()["x"] == 20


def test_phone_screen_gets_a_full_screen_chat(browser, api, host_site, upstream):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        widget = visit(page, host_site.page("/phone", embed_tag(api.url)))
        page.get_by_role("button", name="Open chat").tap()
        assert widget.panel.bounding_box() == {"x": 0, "y": 0, "width": 390, "height": 844}
        expect(widget.launcher).to_be_hidden()  # the panel's own close button takes over
        widget.send("Hello from a phone")
        widget.wait_until_idle()
        expect(widget.replies.last).to_have_text("Hello from the fake model.")
        widget.screenshot("widget-phone.png")

        page.get_by_role("button", name="Close chat").tap()
        expect(widget.panel).to_be_hidden()
        launcher = widget.launcher.bounding_box()
        assert launcher["x"] + launcher["width"] <= 390 and launcher["y"] + launcher["height"] <= 844
    finally:
        context.close()


@pytest.mark.parametrize("scheme, surface", [("light", "rgb(255, 255, 255)"), ("dark", "rgb(15, 23, 42)")])
def test_colours_follow_the_visitors_colour_scheme(page, api, host_site, scheme, surface):
    page.emulate_media(color_scheme=scheme)
    widget = visit(page, host_site.page("/scheme", embed_tag(api.url)))
    widget.open()
    assert widget.style(".panel", "background-color") == surface


# ---- the demo page -------------------------------------------------------------------------


def test_demo_page_chats_under_its_own_strict_content_security_policy(page, start_gunicorn, upstream):
    server = start_gunicorn(APP_ENV="development", CORS_ORIGIN=None)
    widget = visit(page, server.url + "/")
    expect(page.get_by_role("heading", name="Open Chat Widget: demo")).to_be_visible()
    widget.open()
    assert widget.launcher.bounding_box()["width"] == 56  # the widget's styles were applied
    widget.send("Hello demo")
    widget.wait_until_idle()
    expect(widget.replies.last).to_have_text("Hello from the fake model.")
    widget.screenshot("demo-page.png")
    assert widget.errors == []
