/*
 * Open Chat Widget: the embeddable chat client of this service.
 *
 *   <script src="https://HOST/widget/chat-widget.js" data-api-url="https://HOST/chat"
 *     data-api-key="WIDGET_KEY" defer></script>
 *
 * Optional attributes (docs/WIDGET.md): data-title, data-subtitle, data-welcome-message,
 * data-input-placeholder, data-suggestions, data-position ("left" or "right"), data-accent-color
 * (any CSS colour), data-lang and data-text-<name> (i18n.js).
 *
 * The source of static/chat-widget.js: `npm run build` in web/ bundles it with marked into that
 * one file. Everything it draws lives in a shadow root, so the host page's CSS cannot reach it
 * and its CSS cannot reach the page. Visitors' messages are inserted as text; replies are drawn
 * from Markdown as elements (markdown.js); neither is ever parsed as HTML.
 */
import { localise } from "./i18n.js";
import { el, externalLink, safeLink } from "./dom.js";
import { drawMarkdown } from "./markdown.js";

const ROOT_ID = "os-chat-widget-root";
const SESSION_KEY = "os-chatbot-session-id";
const OPEN_KEY = "os-chatbot-widget-open";
const LOG_PREFIX = "[os-chat-widget]";
const SESSION_ID = /^[A-Za-z0-9._:-]{1,128}$/; // the server's rule
const MAX_MESSAGE_CHARS = 4000; // the server's limit
const MAX_SUGGESTIONS = 6; // starter questions shown at most
const HISTORY_TIMEOUT_MS = 10000;
// A stream that ends with code "restarting" was cut by a deploy or restart of the service; the
// server kept the message, and its successor answers within seconds.
const RESTART_RETRY_MS = 3000;
const DEFAULT_ACCENT_COLOR = "#0ea5e9";
const ICONS = {
  chat: "M4 4h16a1 1 0 0 1 1 1v11a1 1 0 0 1-1 1H10l-5 4v-4H4a1 1 0 0 1-1-1V5a1 1 0 0 1 1-1z",
  close: "M6 6l12 12M18 6L6 18",
};

const STYLES = `
  :host {
    /* The host element sits in the page: undo whatever the page's CSS gave it. Important
       declarations of a shadow tree win over the page's, even the page's important ones. */
    all: initial !important;
    position: fixed !important;
    z-index: 2147483000 !important;
    bottom: 20px !important;
    right: 20px !important;
  }
  :host([data-position="left"]) { right: auto !important; left: 20px !important; }

  .widget {
    --accent-strong: var(--accent);
    --surface: #ffffff;
    --text: #0f172a;
    --muted: #64748b;
    --bubble: #f1f5f9;
    --code: #e2e8f0;
    --border: #e2e8f0;
    --danger-surface: #fef2f2;
    --danger-text: #991b1b;
    font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
    color: var(--text);
    text-align: start;
  }
  /* White text needs a darker shade than most brand colours give (WCAG contrast). */
  @supports (color: color-mix(in srgb, red 50%, blue)) {
    .widget { --accent-strong: color-mix(in srgb, var(--accent) 70%, #000); }
  }
  @media (prefers-color-scheme: dark) {
    .widget {
      --surface: #0f172a;
      --text: #e2e8f0;
      --muted: #94a3b8;
      --bubble: #1e293b;
      --code: #0f172a;
      --border: #334155;
      --danger-surface: #450a0a;
      --danger-text: #fecaca;
    }
  }
  *, *::before, *::after { box-sizing: border-box; }
  [hidden] { display: none !important; }
  button, textarea { font: inherit; color: inherit; margin: 0; }
  button { cursor: pointer; border: 0; padding: 0; background: none; }
  :focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
  svg { width: 24px; height: 24px; fill: none; stroke: currentColor; stroke-width: 2; stroke-linecap: round; stroke-linejoin: round; }
  .visually-hidden {
    position: absolute; width: 1px; height: 1px; overflow: hidden;
    clip: rect(0 0 0 0); clip-path: inset(50%); white-space: nowrap;
  }

  .launcher {
    display: grid; place-items: center; width: 56px; height: 56px; border-radius: 50%;
    background: linear-gradient(135deg, var(--accent), var(--accent-strong)); color: #ffffff;
    box-shadow: 0 8px 24px rgba(15, 23, 42, 0.28); transition: transform 0.15s ease;
  }
  .launcher:hover { transform: translateY(-2px); }
  .widget[data-open="true"] .launcher .icon-chat,
  .widget[data-open="false"] .launcher .icon-close { display: none; }

  .panel {
    position: absolute; bottom: 72px; right: 0;
    width: min(380px, calc(100vw - 40px)); height: min(600px, calc(100vh - 112px));
    display: flex; flex-direction: column; overflow: hidden;
    background: var(--surface); border: 1px solid var(--border); border-radius: 16px;
    box-shadow: 0 18px 50px rgba(15, 23, 42, 0.22);
  }
  :host([data-position="left"]) .panel { right: auto; left: 0; }
  .header {
    display: flex; align-items: center; gap: 8px; padding: 14px 16px;
    background: var(--accent-strong); color: #ffffff;
  }
  .titles { flex: 1; min-width: 0; }
  .title { font-size: 15px; font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .subtitle { font-size: 12px; opacity: 0.9; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .suggestions { display: flex; flex-wrap: wrap; gap: 6px; align-self: flex-start; }
  .suggestion {
    padding: 6px 12px; border-radius: 999px; border: 1px solid var(--accent-strong);
    color: var(--text); background: var(--surface); font-size: 13px; text-align: start;
  }
  .suggestion:hover { background: var(--bubble); }
  .close { display: none; place-items: center; width: 36px; height: 36px; border-radius: 8px; }

  .log {
    flex: 1; overflow-y: auto; overscroll-behavior: contain; padding: 16px;
    display: flex; flex-direction: column; gap: 10px;
  }
  .message { max-width: 85%; padding: 9px 12px; border-radius: 14px; }
  .message .text { overflow-wrap: anywhere; }
  .message.user .text { white-space: pre-wrap; }
  /* flex-start and flex-end, and the corner radii, follow the writing direction: mirrored in rtl. */
  .message.assistant { align-self: flex-start; background: var(--bubble); border-end-start-radius: 4px; }
  .message.user { align-self: flex-end; background: var(--accent-strong); color: #ffffff; border-end-end-radius: 4px; }

  /* A reply drawn from Markdown (markdown.js): compact, and never wider than its bubble. */
  .text > :first-child { margin-top: 0; }
  .text > :last-child { margin-bottom: 0; }
  .text :is(p, ul, ol, pre, blockquote, .table, h3, h4, h5, h6) { margin: 0 0 8px; }
  .text :is(h3, h4, h5, h6) { font-size: 1em; font-weight: 700; }
  .text :is(ul, ol) { padding-inline-start: 20px; }
  .text li + li { margin-top: 2px; }
  .text a { color: inherit; text-decoration: underline; }
  .text code { font: 0.92em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
  .text :not(pre) > code { padding: 1px 4px; border-radius: 4px; background: var(--code); }
  .text pre { padding: 8px 10px; border-radius: 8px; background: var(--code); overflow-x: auto; white-space: pre; }
  .text blockquote { padding-inline-start: 10px; border-inline-start: 3px solid var(--border); color: var(--muted); }
  .text hr { border: 0; border-top: 1px solid var(--border); }
  .text .table { overflow-x: auto; }
  .text table { border-collapse: collapse; font-size: 13px; }
  /* Words stay whole in a cell (not the bubble's break-anywhere): a wide table scrolls instead. */
  .text :is(th, td) { padding: 4px 8px; border: 1px solid var(--border); text-align: start; overflow-wrap: normal; }
  .note { display: block; margin-top: 4px; font-size: 12px; font-style: italic; color: var(--muted); }
  .sources { display: flex; flex-wrap: wrap; gap: 2px 10px; margin-top: 6px; font-size: 12px; color: var(--muted); }
  .sources a { color: inherit; text-decoration: underline; overflow-wrap: anywhere; }
  .notice { padding: 10px 12px; border-radius: 10px; background: var(--danger-surface); color: var(--danger-text); }
  .retry { margin-inline-start: 8px; font-weight: 600; text-decoration: underline; }
  .typing { display: inline-flex; gap: 4px; padding: 6px 0; }
  .typing span { width: 6px; height: 6px; border-radius: 50%; background: var(--muted); animation: blink 1.2s infinite ease-in-out; }
  .typing span:nth-child(2) { animation-delay: 0.2s; }
  .typing span:nth-child(3) { animation-delay: 0.4s; }
  @keyframes blink { 0%, 80%, 100% { opacity: 0.25; } 40% { opacity: 1; } }

  .composer { display: flex; align-items: flex-end; gap: 8px; padding: 10px; border-top: 1px solid var(--border); }
  .composer textarea {
    flex: 1; min-height: 40px; max-height: 120px; field-sizing: content; resize: none;
    padding: 9px 12px; border: 1px solid var(--border); border-radius: 12px; background: var(--surface);
  }
  .send, .stop { height: 40px; padding: 0 16px; border-radius: 12px; font-weight: 600; }
  .send { background: var(--accent-strong); color: #ffffff; }
  .stop { background: var(--text); color: var(--surface); }

  /* Phones: the open chat takes the whole screen, with its own close button. */
  @media (max-width: 640px) {
    .panel { position: fixed; inset: 0; width: auto; height: auto; border: 0; border-radius: 0; }
    .close { display: grid; }
    .widget[data-open="true"] .launcher { display: none; }
  }
  @media (prefers-reduced-motion: reduce) {
    * { animation: none !important; transition: none !important; }
  }
`;

/** A thrown failure whose message is meant for the visitor. */
class Failure extends Error {}
class Restarting extends Failure {}

// localStorage throws where storage is disabled; the widget then works without memory.
const storage = {
  get(key) {
    try {
      return window.localStorage.getItem(key);
    } catch {
      return null;
    }
  },
  set(key, value) {
    try {
      window.localStorage.setItem(key, value);
    } catch {
      /* nothing to keep it in */
    }
  },
};

function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", `icon-${name}`);
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  svg.append(path);
  return svg;
}

function newSessionId() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // randomUUID exists only on https and localhost pages; build the same v4 format elsewhere.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The configured colour if the browser accepts it as a CSS colour, else the default. */
function cssColor(value) {
  return value && CSS.supports("color", value) ? value : DEFAULT_ACCENT_COLOR;
}

/** The history route beside the chat route: ".../chat" or ".../v1/chat/stream" become ".../v1/chat/history". */
function historyUrl(endpoint) {
  const base = endpoint.pathname.replace(/\/(v1\/chat\/stream|chat)\/?$/, "");
  return new URL(`${base}/v1/chat/history`, endpoint.origin).href;
}

function readConfig(script) {
  const data = script ? script.dataset : {};
  const attribute = (name) => (data[name] || "").trim();
  if (!attribute("apiUrl") || !attribute("apiKey")) return null;
  let endpoint;
  try {
    endpoint = new URL(attribute("apiUrl"), document.baseURI);
  } catch {
    return null;
  }
  const { lang, dir, text } = localise(data);
  const position = attribute("position");
  return {
    endpoint: endpoint.href,
    historyEndpoint: historyUrl(endpoint),
    apiKey: attribute("apiKey"),
    lang,
    dir,
    text,
    // The corner at the end of a line unless the site chooses one: right, or left on a right-to-left page.
    position: position === "left" || position === "right" ? position : dir === "rtl" ? "left" : "right",
    accentColor: cssColor(attribute("accentColor")),
    subtitle: attribute("subtitle"),
    // "Track my order|Return an item": buttons that ask the question, until the first message.
    suggestions: attribute("suggestions").split("|").map((text) => text.trim().slice(0, MAX_MESSAGE_CHARS))
      .filter(Boolean).slice(0, MAX_SUGGESTIONS),
  };
}

/** What the visitor reads when the chat route answers status (text: the widget's strings). */
function failureText(status, text) {
  if (status === 401) return text.unauthorized;
  if (status === 429) return text.rateLimited;
  if (status >= 500) return text.unavailable;
  return text.rejected;
}

/** The JSON objects of an NDJSON body, one per line, each as soon as its line is complete. */
async function* ndjsonEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { done, value } = await reader.read();
    buffered += decoder.decode(value, { stream: !done });
    const lines = buffered.split("\n");
    buffered = done ? "" : lines.pop(); // an incomplete last line waits for the next chunk
    for (const line of lines) {
      let event = null;
      try {
        event = line.trim() ? JSON.parse(line) : null;
      } catch {
        console.warn(`${LOG_PREFIX} Skipped a line that is not JSON`);
      }
      if (event && typeof event === "object") yield event;
    }
    if (done) return;
  }
}

class ChatWidget {
  constructor(config) {
    this.config = config;
    this.text = config.text;
    this.frame = null; // the animation frame that will draw the streaming reply
    this.drawLatest = null; // what that frame draws: the latest text of the reply
    const stored = storage.get(SESSION_KEY);
    // A new visitor has no thread to fetch; their id is made when they first send.
    this.sessionId = stored && SESSION_ID.test(stored) ? stored : null;
    this.streaming = null; // the AbortController of the reply being received
    this.history = null; // the promise of the one history fetch
    this.render();
    this.setOpen(storage.get(OPEN_KEY) === "true", false);
  }

  render() {
    const { config, text } = this;
    this.host = el("div", { id: ROOT_ID, "data-position": config.position });
    this.shadow = this.host.attachShadow({ mode: "open" });
    if ("adoptedStyleSheets" in this.shadow) {
      // A constructed sheet passes a host page's strict Content-Security-Policy, which blocks <style>.
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(STYLES);
      this.shadow.adoptedStyleSheets = [sheet];
    } else {
      this.shadow.append(el("style", { text: STYLES }));
    }

    this.launcher = el("button", { type: "button", class: "launcher", "aria-controls": "panel" }, icon("chat"), icon("close"));
    this.closeButton = el("button", { type: "button", class: "close", "aria-label": text.closeChat }, icon("close"));
    this.log = el("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": text.conversation, tabindex: "0" });
    this.input = el("textarea", {
      id: "message", rows: "1", maxlength: String(MAX_MESSAGE_CHARS), placeholder: text.inputPlaceholder,
    });
    this.sendButton = el("button", { type: "submit", class: "send", text: text.send });
    this.stopButton = el("button", { type: "button", class: "stop", text: text.stop, hidden: "" });
    this.form = el(
      "form", { class: "composer" },
      el("label", { for: "message", class: "visually-hidden", text: text.message }),
      this.input, this.sendButton, this.stopButton,
    );
    this.panel = el(
      "div", { id: "panel", class: "panel", role: "dialog", "aria-labelledby": "title", hidden: "" },
      el(
        "div", { class: "header" },
        el(
          "div", { class: "titles" },
          el("div", { id: "title", class: "title", text: text.title }),
          ...(config.subtitle ? [el("div", { class: "subtitle", text: config.subtitle })] : []),
        ),
        this.closeButton,
      ),
      this.log,
      this.form,
    );
    this.root = el("div", { class: "widget", lang: config.lang, dir: config.dir }, this.panel, this.launcher);
    // Through the CSSOM, never spliced into style text: the value cannot escape its property.
    this.root.style.setProperty("--accent", config.accentColor);
    this.shadow.append(this.root);
    this.addMessage("assistant", text.welcomeMessage);
    this.suggestions = this.addSuggestions(config.suggestions);

    this.launcher.addEventListener("click", () => this.setOpen(!this.isOpen(), true));
    this.closeButton.addEventListener("click", () => this.setOpen(false, true));
    this.stopButton.addEventListener("click", () => this.streaming?.abort());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (event) => {
      // Enter sends, Shift+Enter starts a new line; keys that confirm an input method's text do neither.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      }
    });
    this.root.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.isOpen() && !event.isComposing) {
        event.preventDefault();
        this.setOpen(false, true);
      }
    });
    document.body.append(this.host);
  }

  isOpen() {
    return !this.panel.hidden;
  }

  /** Show or hide the panel; focus moves only when the visitor asked, never on page load. */
  setOpen(open, byVisitor) {
    this.panel.hidden = !open;
    this.root.dataset.open = String(open);
    this.launcher.setAttribute("aria-expanded", String(open));
    this.launcher.setAttribute("aria-label", open ? this.text.closeChat : this.text.openChat);
    storage.set(OPEN_KEY, String(open));
    if (open) {
      this.loadHistory();
      this.scrollToEnd();
    }
    if (byVisitor) (open ? this.input : this.launcher).focus();
  }

  /** The earlier messages of this visitor's session, drawn once, before anything new. */
  loadHistory() {
    this.history ??= this.sessionId ? this.drawHistory() : Promise.resolve();
    return this.history;
  }

  async drawHistory() {
    try {
      const url = `${this.config.historyEndpoint}?sessionId=${encodeURIComponent(this.sessionId)}`;
      const response = await fetch(url, {
        headers: { "X-Widget-Api-Key": this.config.apiKey },
        signal: AbortSignal.timeout(HISTORY_TIMEOUT_MS),
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const { messages } = await response.json();
      if (Array.isArray(messages) && messages.length) this.removeSuggestions(); // the visitor has begun
      for (const message of Array.isArray(messages) ? messages : []) {
        if ((message.role === "user" || message.role === "assistant") && typeof message.content === "string") {
          this.addMessage(message.role, message.content, {
            interrupted: message.interrupted === true,
            cutShort: typeof message.finishReason === "string",
            sources: message.sources,
          });
        }
      }
    } catch (error) {
      // The chat still works without its past (for instance against a server without the route).
      console.warn(`${LOG_PREFIX} Could not load the earlier conversation`, error);
    }
  }

  submit() {
    const text = this.input.value.trim();
    if (!text || this.streaming) return;
    this.input.value = "";
    this.send(text, false);
  }

  /** Starter questions under the welcome message: each a button that sends it. */
  addSuggestions(questions) {
    if (!questions.length) return null;
    const group = el("div", { class: "suggestions", role: "group", "aria-label": this.text.suggestions });
    for (const question of questions) {
      const button = el("button", { type: "button", class: "suggestion", text: question });
      button.addEventListener("click", () => {
        if (this.streaming) return;
        this.send(question, false);
      });
      group.append(button);
    }
    this.log.append(group);
    return group;
  }

  removeSuggestions() {
    this.suggestions?.remove();
    this.suggestions = null;
  }

  /**
   * Send one message and stream the reply into a new bubble; a retry does not redraw the message.
   * A reply cut by a restart of the service is asked for again once, by itself, after a pause.
   */
  async send(text, isRetry, isAutomatic = false) {
    this.streaming = new AbortController();
    this.setStreaming(true);
    await this.loadHistory();
    for (const retry of this.log.querySelectorAll(".retry")) retry.remove(); // only the latest failure can be retried
    this.removeSuggestions();
    if (!isRetry) this.addMessage("user", text);
    const bubble = this.addMessage("assistant", "", { pending: true });
    let reply = "";
    let sources = null;
    let finished = false;
    let failure = null;
    try {
      const response = await fetch(this.config.endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Widget-Api-Key": this.config.apiKey },
        // retry: the server does not store the message again if its first attempt left it unanswered
        body: JSON.stringify({ sessionId: this.session(), message: text, ...(isRetry && { retry: true }) }),
        signal: this.streaming.signal,
      });
      if (!response.ok || !response.body) throw new Failure(failureText(response.status, this.text));
      for await (const event of ndjsonEvents(response.body)) {
        if (event.type === "token" && typeof event.token === "string") {
          reply += event.token;
          this.drawReplySoon(bubble, reply);
        } else if (event.type === "sources") {
          sources = event.sources; // sent just before "done"
        } else if (event.type === "done" && typeof event.message === "string") {
          reply = event.message;
          finished = true;
          this.drawReply(bubble, reply);
          if (typeof event.finishReason === "string") bubble.append(el("span", { class: "note", text: this.text.cutShort }));
          this.addSources(bubble, sources);
        } else if (event.type === "error") {
          throw new (event.code === "restarting" ? Restarting : Failure)(this.text.unavailable);
        } // "start", "ping" and types added later need nothing
      }
      if (!finished) throw new Failure(this.text.cutOff);
    } catch (error) {
      failure = error;
    }

    if (failure instanceof Restarting && !isAutomatic) {
      bubble.remove(); // the retry streams the whole reply again
      if (await this.pause(RESTART_RETRY_MS)) return this.send(text, true, true);
      failure = null; // the visitor pressed Stop while waiting
    }
    bubble.querySelector(".typing")?.remove();
    if (!reply) bubble.remove();
    else if (failure) bubble.append(el("span", { class: "note", text: this.text.interrupted }));
    const stopped = failure?.name === "AbortError";
    if (failure && !stopped) {
      if (!(failure instanceof Failure)) console.error(`${LOG_PREFIX} The request failed`, failure);
      this.addFailure(failure instanceof Failure ? failure.message : this.text.unreachable, text);
    }
    this.streaming = null;
    this.setStreaming(false);
  }

  /** Wait ms; false if the visitor pressed Stop meanwhile. */
  pause(ms) {
    const signal = this.streaming.signal;
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(true), ms);
      signal.addEventListener("abort", () => { clearTimeout(timer); resolve(false); }, { once: true });
    });
  }

  /** Swap Send and Stop; keep keyboard focus on whichever of them replaces the other. */
  setStreaming(on) {
    const focused = this.shadow.activeElement;
    this.sendButton.hidden = on;
    this.stopButton.hidden = !on;
    // Screen readers announce the reply once it is complete, not token by token.
    this.log.setAttribute("aria-busy", String(on));
    if (focused === this.sendButton && on) this.stopButton.focus();
    if (focused === this.stopButton && !on) this.input.focus();
  }

  session() {
    if (!this.sessionId) {
      this.sessionId = newSessionId();
      storage.set(SESSION_KEY, this.sessionId);
    }
    return this.sessionId;
  }

  addMessage(role, text, { interrupted = false, cutShort = false, pending = false, sources = null } = {}) {
    const speaker = role === "user" ? this.text.you : this.text.title;
    // A visitor's words stay plain text; a reply is Markdown (markdown.js). dir="auto": each
    // message reads in its own direction, an English reply on an Arabic page too.
    const content = el(role === "user" ? "span" : "div", { class: "text", dir: "auto" });
    if (role === "user") content.textContent = text;
    else drawMarkdown(content, text);
    const bubble = el(
      "div", { class: `message ${role}` },
      el("span", { class: "visually-hidden", text: `${speaker}: ` }),
      content,
    );
    if (pending) bubble.append(el("span", { class: "typing", "aria-hidden": "true" }, el("span"), el("span"), el("span")));
    if (interrupted) bubble.append(el("span", { class: "note", text: this.text.interrupted }));
    if (cutShort) bubble.append(el("span", { class: "note", text: this.text.cutShort }));
    this.addSources(bubble, sources);
    this.log.append(bubble);
    this.scrollToEnd();
    return bubble;
  }

  /** Links to the site's documents a reply was given ([{id, title, url}]); only http(s) and mailto links. */
  addSources(bubble, sources) {
    if (!Array.isArray(sources) || !sources.length) return;
    const list = el("span", { class: "sources" }, el("span", { text: this.text.sources }));
    for (const source of sources) {
      if (!source || typeof source.title !== "string") continue;
      const url = safeLink(source.url);
      list.append(url ? externalLink(url, source.title) : el("span", { text: source.title }));
    }
    bubble.append(list);
  }

  addFailure(message, text) {
    const retry = el("button", { type: "button", class: "retry", text: this.text.retry });
    const notice = el("div", { class: "notice" }, el("span", { text: message }), retry);
    retry.addEventListener("click", () => {
      if (this.streaming) return;
      notice.remove();
      this.input.focus(); // the button is gone: keep keyboard users in the composer
      this.send(text, true);
    });
    this.log.append(notice);
    this.scrollToEnd();
  }

  /**
   * Draw a streaming reply at the next animation frame, once per frame however fast tokens come:
   * each draw parses the whole text so far, and the page is painted only after a draw is complete.
   */
  drawReplySoon(bubble, text) {
    this.drawLatest = () => this.drawReply(bubble, text);
    this.frame ??= requestAnimationFrame(() => {
      this.frame = null;
      this.drawLatest();
    });
  }

  /** Draw a reply now (over any frame still to come); follow it down only if the visitor has not scrolled up to read. */
  drawReply(bubble, text) {
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.frame = null;
    const following = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 40;
    bubble.querySelector(".typing")?.remove();
    drawMarkdown(bubble.querySelector(".text"), text);
    if (following) this.scrollToEnd();
  }

  scrollToEnd() {
    this.log.scrollTop = this.log.scrollHeight;
  }
}

// Set only while this file first runs, so it is read now, not when the page has loaded.
const script =
  document.currentScript ||
  Array.from(document.querySelectorAll("script[src]")).reverse().find((s) => s.src.includes("chat-widget.js"));

function boot() {
  if (document.getElementById(ROOT_ID)) return; // embedded twice: one widget is enough
  const config = readConfig(script);
  if (!config) {
    console.error(`${LOG_PREFIX} Missing required data-api-url or data-api-key attributes.`);
    return;
  }
  new ChatWidget(config);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot, { once: true });
else boot();
