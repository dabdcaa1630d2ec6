"""Replies drawn from Markdown in the widget, in Chromium, through the real service: formatted
while they stream, inert whatever they hold, and shown the same in the dashboard
(web/src/markdown.js). Writes the README's screenshots, docs/screenshots/*.png."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.browser import DOC_SCREENSHOTS, embed_tag, visit
from tests.support import ADMIN_KEY

REPLY = """## Your order

Your parcel **left the warehouse** today and arrives *tomorrow*.

1. Track it at [the carrier's site](https://carrier.example/track?id=42).
2. Keep the code `QX-42` at hand.

- Returns: free within 30 days
- Questions: <help@shop.example>

| Item | Qty |
|------|----:|
| Mug  | 2   |

```
curl https://carrier.example/api/42
```"""

# Markdown (and HTML) that would run script, load a resource or add markup if it were trusted.
HOSTILE_REPLY = """[click](javascript:alert(1)) [upper](JAVASCRIPT:alert(2))
[data](data:text/html,<script>alert(3)</script>)
[vb](vbscript:msgbox(4)) [relative](/account) [ok](https://ok.example/page "a title") [mail](mailto:help@shop.example)

![pixel](https://tracker.example/pixel.png) ![](https://tracker.example/blank.gif)

<javascript:alert(5)> <https://auto.example/path> www.bare.example

[reference][evil] and [good reference][good]

[evil]: javascript:alert(6)
[good]: https://good.example/

<div onclick="alert(7)">an HTML block</div>

<iframe src="https://tracker.example/frame"></iframe>

Inline <img src=x onerror=alert(8)> and <svg onload=alert(9)></svg> and <a href="javascript:alert(10)">a</a>

<style>* { display: none !important; }</style>

<script>alert(11)</script>"""

WIDE_TABLE = """| Storage | Bandwidth | Requests | Regions | Backups | Support | Uptime | Price |
|---|---|---|---|---|---|---|---|
| 10 GB | 1 TB | 1M | 3 | Daily | Email | 99.9% | $20 |"""
LESS_COMMON = f"""- [x] Paid
- [ ] Shipped

3. third
4. fourth

> a ~~crossed~~ quote

{WIDE_TABLE}

```
{"y" * 300}
```"""
ARABIC_REPLY = "نعم، بالتأكيد:\n\n1. افتح الإعدادات\n2. اختر **إعادة الضبط**"

ALLOWED_HREF = re.compile(r"(https?://|mailto:)")


def shadow_elements(page, selector: str) -> list[dict]:
    """Tag, attributes and text of each element matching selector inside the widget's shadow root."""
    return page.evaluate(
        """(selector) => Array.from(
            document.getElementById("os-chat-widget-root").shadowRoot.querySelectorAll(selector),
            (node) => ({ tag: node.localName, text: node.textContent,
                         attributes: Object.fromEntries(Array.from(node.attributes, (a) => [a.name, a.value])) }))""",
        selector,
    )


def test_a_markdown_reply_is_drawn_formatted_as_it_streams_and_when_redrawn(page, api, host_site, upstream):
    upstream.reply = REPLY
    upstream.token_delay = 0.02
    widget = visit(page, host_site.page("/markdown", embed_tag(api.url, title="Shop help")))
    widget.open()
    # Sample every painted frame while the reply streams: once the reply shows, it must never
    # blank out again (a redraw that emptied the bubble for a frame would flicker).
    page.evaluate(
        """() => {
            const log = document.getElementById("os-chat-widget-root").shadowRoot.querySelector(".log");
            window.frames_seen = [];
            const sample = () => {
                const replies = log.querySelectorAll(".message.assistant .text");
                window.frames_seen.push(replies.length > 1 ? replies[replies.length - 1].textContent.length : -1);
                const streaming = log.getAttribute("aria-busy") !== "false";
                if (streaming || window.frames_seen.length < 5) requestAnimationFrame(sample);
            };
            requestAnimationFrame(sample);
        }"""
    )
    widget.send("Where is my order?")
    expect(page.locator(".message.assistant strong")).to_have_count(1, timeout=15000)  # formatted mid-stream
    # A finished block is kept, not redrawn with each token: the heading drawn now is the one at the end.
    heading = page.locator(".message.assistant h4")
    heading.evaluate("node => { node.drawnEarly = true; }")
    widget.wait_until_idle()
    assert heading.evaluate("node => node.drawnEarly === true")
    lengths = [length for length in page.evaluate("window.frames_seen") if length >= 0]
    first_shown = next(i for i, length in enumerate(lengths) if length > 0)
    assert 0 not in lengths[first_shown:], f"the reply blanked out while streaming: {lengths}"
    assert len(set(lengths)) > 3, "the reply was not drawn progressively"

    for redrawn in (False, True):  # as streamed, then from the history after a reload
        if redrawn:
            page.reload()
            expect(widget.replies).to_have_count(2)
        reply = page.locator(".message.assistant .text").last
        expect(reply.locator("h4")).to_have_text("Your order")  # "##" sits below the widget's own title
        expect(reply.locator("strong")).to_have_text("left the warehouse")
        expect(reply.locator("em")).to_have_text("tomorrow")
        expect(reply.locator("ol > li")).to_have_count(2)
        expect(reply.locator("ul > li")).to_have_count(2)
        expect(reply.locator(":not(pre) > code")).to_have_text("QX-42")
        expect(reply.locator("pre > code")).to_have_text("curl https://carrier.example/api/42")
        expect(reply.locator("th")).to_have_text(["Item", "Qty"])
        expect(reply.locator("td")).to_have_text(["Mug", "2"])
        links = shadow_elements(page, ".message.assistant .text a")
        assert [(link["text"], link["attributes"]["href"]) for link in links] == [
            ("the carrier's site", "https://carrier.example/track?id=42"),
            ("help@shop.example", "mailto:help@shop.example"),
        ]
        assert all(link["attributes"]["target"] == "_blank" for link in links)
        assert all(link["attributes"]["rel"] == "noopener noreferrer" for link in links)
    DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    panel = widget.panel.bounding_box()
    left, top = panel["x"] - 24, panel["y"] - 24  # the panel, its shadow and the launcher below it
    page.screenshot(
        path=DOC_SCREENSHOTS / "widget.png", clip={"x": left, "y": top, "width": 1280 - left, "height": 800 - top}
    )
    assert widget.errors == []


def test_markdown_in_a_reply_cannot_run_script_load_a_resource_or_escape_its_bubble(page, api, host_site, upstream):
    upstream.reply = HOSTILE_REPLY
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    widget = visit(page, host_site.page("/markdown-xss", embed_tag(api.url)))
    widget.open()
    question = "**not bold** <i>not italic</i> [not a link](https://x.example)"
    widget.send(question)
    widget.wait_until_idle()

    for redrawn in (False, True):
        if redrawn:
            page.reload()
            expect(widget.replies).to_have_count(2)
        reply = widget.replies.last
        expect(widget.questions).to_have_text([question])  # the visitor's words stay exactly as typed
        assert shadow_elements(page, ".message.user .text *") == []
        page.wait_for_timeout(300)  # time for an injected handler or a resource load, if there were one
        assert widget.dialogs == []
        assert shadow_elements(page, "img, iframe, script, style, object, embed, video, audio, link") == []
        assert shadow_elements(page, ".text :is(form, input, button, textarea, select)") == []
        assert [node["tag"] for node in shadow_elements(page, "svg")] == ["svg"] * 3  # the widget's own icons
        assert all("onclick" not in node["attributes"] for node in shadow_elements(page, ".text *"))
        hrefs = [link["attributes"]["href"] for link in shadow_elements(page, ".text a")]
        assert hrefs == [
            "https://ok.example/page",
            "mailto:help@shop.example",
            "https://tracker.example/pixel.png",  # an image is a link to it, never loaded
            "https://tracker.example/blank.gif",
            "https://auto.example/path",
            "http://www.bare.example/",
            "https://good.example/",
        ]
        assert all(ALLOWED_HREF.match(href) for href in hrefs)
        for link in shadow_elements(page, ".text a"):
            assert (link["attributes"]["target"], link["attributes"]["rel"]) == ("_blank", "noopener noreferrer")
        # Links whose destination is refused keep their text, unlinked; raw HTML shows as the text it is.
        for shown in ("click", "upper", "data", "vb", "relative", "pixel", "reference", "javascript:alert(5)"):
            expect(reply).to_contain_text(shown)
        for shown in ('<div onclick="alert(7)">', "<iframe src=", "<img src=x onerror=alert(8)>", "<script>alert(11)"):
            expect(reply).to_contain_text(shown)
        expect(reply).not_to_contain_text("[evil]:")  # a reference definition is used, not shown

    assert not [url for url in requested if "tracker.example" in url or "auto.example" in url]
    # Nothing leaves the bubble: the conversation never scrolls sideways.
    overflow = page.evaluate(
        """() => { const log = document.getElementById("os-chat-widget-root").shadowRoot.querySelector(".log");
                   return log.scrollWidth - log.clientWidth; }"""
    )
    assert overflow == 0
    expect(page.locator("h1")).to_be_visible()  # the reply's <style> reached nothing on the page


def test_task_lists_quotes_and_wide_content_are_drawn_inside_the_bubble(page, api, host_site, upstream):
    upstream.reply = LESS_COMMON
    widget = visit(page, host_site.page("/markdown-wide", embed_tag(api.url)))
    widget.open()
    widget.send("A big table please")
    widget.wait_until_idle()
    reply = widget.replies.last
    expect(reply.locator("ul > li")).to_have_text(["☑ Paid", "☐ Shipped"])  # characters, not form controls
    expect(reply.locator("ol")).to_have_attribute("start", "3")
    expect(reply.locator("blockquote del")).to_have_text("crossed")
    sizes = page.evaluate(
        """() => {
            const root = document.getElementById("os-chat-widget-root").shadowRoot;
            const bubble = Array.from(root.querySelectorAll(".message.assistant")).pop().getBoundingClientRect();
            const log = root.querySelector(".log");
            const scrolls = (node) => node.scrollWidth > node.clientWidth;
            return { overflow: log.scrollWidth - log.clientWidth, bubbleRight: bubble.right,
                     logRight: log.getBoundingClientRect().right,
                     tableScrolls: scrolls(root.querySelector(".table")),
                     codeScrolls: scrolls(root.querySelector("pre")),
                     // cells taller than two lines: a word broken letter by letter to fit
                     brokenCells: Array.from(root.querySelectorAll("th, td")).filter((cell) =>
                       cell.getBoundingClientRect().height > 2 * parseFloat(getComputedStyle(cell).lineHeight))
                       .map((cell) => cell.textContent) };
        }"""
    )
    assert sizes["overflow"] == 0 and sizes["bubbleRight"] <= sizes["logRight"]
    assert sizes["brokenCells"] == []  # the table keeps its words whole and scrolls instead
    assert sizes["tableScrolls"] and sizes["codeScrolls"]


def test_the_dashboard_shows_each_reply_as_the_visitor_saw_it(browser, page, api, host_site, upstream):
    widget = visit(page, host_site.page("/markdown-dashboard", embed_tag(api.url)))
    widget.open()
    drawn_for_the_visitor = []
    questions = {"Where is my order?": REPLY, "And the rest?": HOSTILE_REPLY, "In Arabic?": ARABIC_REPLY}
    for question, reply in questions.items():
        upstream.reply = reply
        widget.send(question)
        widget.wait_until_idle()
        drawn_for_the_visitor.append(widget.replies.last.inner_html())
    assert widget.replies.last.locator("li").first.evaluate("li => getComputedStyle(li).direction") == "rtl"

    context = browser.new_context(viewport={"width": 1200, "height": 900}, timezone_id="Europe/Paris")
    try:
        admin = context.new_page()
        admin.goto(api.url + "/admin")
        admin.fill("#admin_key", ADMIN_KEY)
        admin.click("button:has-text('Sign in')")
        admin.click(f"text={widget.session_id()}")
        replies = admin.locator("ol.thread li.message.assistant .content")
        expect(replies).to_have_count(3)
        assert [replies.nth(i).inner_html() for i in range(3)] == drawn_for_the_visitor
        # An Arabic reply reads right to left there too (its list's numbers on the right).
        assert replies.nth(2).locator("li").first.evaluate("li => getComputedStyle(li).direction") == "rtl"
        expect(admin.locator("ol.thread li.message.user .content")).to_have_text(list(questions))
        admin.wait_for_timeout(300)
        assert admin.locator("main img, main iframe, main script, main style").count() == 0
        for link in admin.locator("main .content a").all():
            assert ALLOWED_HREF.match(link.get_attribute("href"))
            assert (link.get_attribute("target"), link.get_attribute("rel")) == ("_blank", "noopener noreferrer")
        admin.set_viewport_size({"width": 1200, "height": 700})
        admin.screenshot(path=DOC_SCREENSHOTS / "dashboard.png")
    finally:
        context.close()
