"""What the browser tests share: a host site on its own origin, the widget's embed tag, the
widget's parts as a visitor finds them, and axe-core's verdict on a page. The fixtures that
start these (and Chromium) are in conftest.py."""

from __future__ import annotations

import html
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from playwright.sync_api import Page, expect

from tests.support import ROOT, WIDGET_KEY, free_port

SCREENSHOTS = ROOT / "test-output"
# Screenshots the README shows; the browser tests that draw them write them again each run.
DOC_SCREENSHOTS = ROOT / "docs" / "screenshots"
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"


class HostSite:
    """A web site on its own origin (another port than the API) serving the pages a test registers."""

    def __init__(self):
        pages: dict[str, str] = {}
        self.pages = pages

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = pages.get(self.path.split("?")[0], "").encode()
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def page(self, path: str, body: str, css: str = "", html_attributes: str = 'lang="en"') -> str:
        """Serve a host page (body plus optional global CSS) at path; returns its URL."""
        self.pages[path] = f"""<!doctype html>
<html {html_attributes}><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>A host page</title>
<link rel="icon" href="data:,">
<style>{css}</style></head>
<body><h1>A shop</h1><p id="intro">Products, prices and a chat in the corner.</p>
<a id="first-link" href="#intro">First link</a>
{body}
</body></html>"""
        return self.origin + path

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def embed_tag(base_url: str, **attributes) -> str:
    """The widget's script tag, as a site owner would paste it (attributes use Python names; None leaves one out)."""
    attributes = {"api_url": f"{base_url}/chat", "api_key": WIDGET_KEY, **attributes}
    data = " ".join(
        f'data-{name.replace("_", "-")}="{html.escape(value)}"'
        for name, value in attributes.items()
        if value is not None
    )
    return f'<script src="{base_url}/widget/chat-widget.js" {data} defer></script>'


class Widget:
    """The widget's parts, found by role and accessible name where they have one, and what the page reported."""

    def __init__(self, page: Page):
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("dialog", self._dialog)

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    @property
    def launcher(self):
        return self.page.locator(".launcher")

    @property
    def panel(self):
        return self.page.get_by_role("dialog")

    @property
    def input(self):
        return self.page.get_by_role("textbox", name="Message")

    @property
    def log(self):
        return self.page.get_by_role("log")

    @property
    def replies(self):
        return self.page.locator(".message.assistant .text")

    @property
    def questions(self):
        return self.page.locator(".message.user .text")

    def open(self):
        self.page.get_by_role("button", name="Open chat").click()
        expect(self.panel).to_be_visible()

    def send(self, text: str):
        self.input.fill(text)
        self.input.press("Enter")

    def wait_until_idle(self):
        """The reply has ended (done, stopped or failed): the log is no longer busy."""
        expect(self.page.locator(".send")).to_be_visible(timeout=15000)  # whatever its language
        expect(self.log).to_have_attribute("aria-busy", "false")

    def session_id(self) -> str:
        """The session id the widget keeps in localStorage (the test fails if there is none)."""
        session_id = self.page.evaluate("localStorage.getItem('os-chatbot-session-id')")
        assert isinstance(session_id, str), "the widget stored no session id"
        return session_id

    def style(self, selector: str, prop: str) -> str:
        """A computed style of the first element in the widget's shadow root matching selector."""
        return self.page.evaluate(
            """([selector, prop]) => {
                const node = document.getElementById("os-chat-widget-root").shadowRoot.querySelector(selector);
                return getComputedStyle(node).getPropertyValue(prop);
            }""",
            [selector, prop],
        )

    def screenshot(self, name: str):
        SCREENSHOTS.mkdir(exist_ok=True)
        self.page.screenshot(path=SCREENSHOTS / name)


def visit(page: Page, url: str) -> Widget:
    widget = Widget(page)
    page.goto(url)
    return widget


def history(api, session_id: str) -> list[dict]:
    response = requests.get(
        api.url + "/v1/chat/history",
        params={"sessionId": session_id},
        headers={"X-Widget-Api-Key": WIDGET_KEY},
        timeout=10,
    )
    assert response.status_code == 200
    return response.json()["messages"]


def serious_accessibility_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now (shadow roots included),
    one line each: rule, impact, the first offending element. Needs `npm ci` in web/."""
    assert AXE.exists(), f"{AXE} is missing: run `npm ci` in web/ (scripts/test.sh does)"
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate(
        """async () => (await axe.run(document, { resultTypes: ["violations"] })).violations
            .filter((v) => v.impact === "serious" || v.impact === "critical")
            .map((v) => ({ id: v.id, impact: v.impact, help: v.help, target: v.nodes[0].target,
                           summary: v.nodes[0].failureSummary }))"""
    )
    return [json.dumps(violation) for violation in violations]
