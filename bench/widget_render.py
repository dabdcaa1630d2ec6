"""What drawing replies from Markdown costs the visitor's browser, against the plain-text widget
it replaced (static/chat-widget.js at 7b24923, which set textContent on each token).

    python bench/widget_render.py [--runs 3] [--tokens-per-second 200]

Debian's Chromium (Playwright) loads a page embedding each widget; a local server answers the
widget's chat route with an NDJSON stream of a Markdown reply (lists, code, a table), at a
model's pace, so the widget draws while tokens arrive. The service is not in the loop: only the
browser's work is measured, through the DevTools Performance metrics (main-thread task, script,
layout and style time from the first token to the end) and long tasks (>= 50 ms, which a
visitor feels as a stutter). Medians of --runs per widget and reply size, in one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

PLAIN_TEXT_WIDGET_COMMIT = "7b24923"
SECTION = """## Step {n}

Open **Settings**, then *Account*, and check these:

1. The plan: `pro-{n}` or higher
2. The region, see [the guide](https://example.com/guide/{n})
3. Billing, under ~~Payments~~ Invoices

| Item | Value |
|------|------:|
| Seats | {n} |
| Price | ${n}0 |

```
curl https://api.example.com/v1/steps/{n}
```

"""


def reply_of(chars: int) -> str:
    text, n = "", 1
    while len(text) < chars:
        text += SECTION.format(n=n)
        n += 1
    return text[:chars]


def tokens_of(text: str) -> list[str]:
    """Pieces of about four characters, as a model's tokens are."""
    return [text[i : i + 4] for i in range(0, len(text), 4)]


class Site:
    """The page, the widget script under test, an empty history and a streaming chat route."""

    def __init__(self, tokens_per_second: float):
        self.script = b""
        self.reply = ""
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def send(self, status, content_type, body: bytes):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.startswith("/widget.js"):
                    self.send(200, "application/javascript", site.script)
                elif self.path.startswith("/v1/chat/history"):
                    self.send(200, "application/json", b'{"messages": []}')
                else:
                    page = (
                        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bench</title></head>'
                        '<body><script src="/widget.js" data-api-url="/chat" data-api-key="k"></script></body></html>'
                    )
                    self.send(200, "text/html", page.encode())

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                events = [{"type": "start", "conversationId": "c"}]
                events += [{"type": "token", "token": token} for token in tokens_of(site.reply)]
                events.append({"type": "done", "message": site.reply, "conversationId": "c"})
                for event in events:
                    line = (json.dumps(event) + "\n").encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                    if event["type"] == "token":
                        time.sleep(1 / tokens_per_second)
                self.wfile.write(b"0\r\n\r\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")


def measure(browser, site: Site) -> dict:
    """Main-thread milliseconds spent while one reply streams in, and its long tasks."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(site.url)
    page.evaluate(
        """() => { window.longTasks = [];
            new PerformanceObserver((list) => list.getEntries().forEach((e) => longTasks.push(e.duration)))
              .observe({ type: "longtask" }); }"""
    )
    page.locator(".launcher").click()
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")

    def sample() -> dict:
        return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}

    before = sample()
    page.locator("textarea").fill("How do I set it up?")
    page.keyboard.press("Enter")
    page.wait_for_function(
        """() => document.getElementById("os-chat-widget-root").shadowRoot
            .querySelector(".log").getAttribute("aria-busy") === "false" """,
        timeout=120000,
    )
    after = sample()
    long_tasks = page.evaluate("window.longTasks")
    context.close()
    result = {name: (after[name] - before[name]) * 1000 for name in METRICS}
    result["long_tasks"] = len(long_tasks)
    result["longest_task_ms"] = max(long_tasks, default=0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens-per-second", type=float, default=200)
    parser.add_argument("--sizes", default="1000,4000,12000", help="reply sizes in characters")
    args = parser.parse_args()
    widgets = {
        "plain text (before)": subprocess.run(
            ["git", "show", f"{PLAIN_TEXT_WIDGET_COMMIT}:static/chat-widget.js"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout,
        "markdown (now)": (ROOT / "static" / "chat-widget.js").read_bytes(),
    }
    site = Site(args.tokens_per_second)
    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        for chars in (int(size) for size in args.sizes.split(",")):
            site.reply = reply_of(chars)
            runs: dict[str, list[dict]] = {name: [] for name in widgets}
            for _ in range(args.runs):  # alternate, so drift on a shared machine hits both alike
                for name, script in widgets.items():
                    site.script = script
                    runs[name].append(measure(browser, site))
            for name, results in runs.items():
                medians = {key: statistics.median(r[key] for r in results) for key in results[0]}
                rows.append({"widget": name, "reply_chars": chars, "tokens": len(tokens_of(site.reply)), **medians})
        browser.close()
    print(json.dumps({"tokens_per_second": args.tokens_per_second, "runs": args.runs, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
