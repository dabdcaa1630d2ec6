/*
 * Markdown of model replies, drawn as DOM nodes: marked (https://marked.js.org) parses, this file
 * only turns its tokens into elements. No HTML string is ever produced or parsed, so nothing a
 * reply holds can become markup:
 *   - raw HTML (inline or blocks) is shown as the text it is;
 *   - links keep their href only for http:, https: and mailto:, and open in a new tab without
 *     an opener or referrer; any other destination leaves the link's text, unlinked;
 *   - images load nothing: each becomes a link to its address, labelled by its alt text;
 *   - every value reaches the page through textContent, setAttribute or the CSSOM.
 * Shared by the widget and the dashboard's thread view, so both show a reply the same way.
 */
import { Lexer } from "marked";
import { el, externalLink, safeLink } from "./dom.js";

// GitHub-flavoured (tables, strikethrough, bare URLs); a single newline is a line break, as a
// model's plain-text answers mean it.
const OPTIONS = { gfm: true, breaks: true };
const ALIGNMENTS = new Set(["left", "right", "center"]);

// What each container shows: the reference definitions its text had, and per top-level token
// its source and the nodes drawn for it.
const drawn = new WeakMap();

/**
 * Show a Markdown text in container (which holds nothing else), as block elements. Drawn again
 * with a longer text, as a streaming reply is, it keeps the nodes of the leading blocks whose
 * source is unchanged and redraws from the first that differs (usually only the last), so the
 * page restyles and lays out one block per frame, not the whole reply. A reference
 * definition that appears or changes can turn earlier text into a link: then all is redrawn.
 */
export function drawMarkdown(container, markdown) {
  const tokens = Lexer.lex(markdown, OPTIONS);
  const definitions = JSON.stringify(tokens.links); // names and addresses: either may still be arriving
  const before = drawn.get(container);
  const kept = before?.definitions === definitions ? before.blocks : [];
  let same = 0;
  while (same < kept.length && same < tokens.length && kept[same].source === tokens[same].raw) same += 1;
  if (same === 0) container.replaceChildren();
  else for (const { nodes } of kept.slice(same)) for (const node of nodes) node.remove();
  const shown = kept.slice(0, same);
  for (const token of tokens.slice(same)) {
    const nodes = [block(token) ?? []].flat();
    container.append(...nodes);
    shown.push({ source: token.raw, nodes });
  }
  drawn.set(container, { definitions, blocks: shown });
}

function blocks(tokens) {
  return tokens.flatMap((token) => block(token) ?? []);
}

function inlines(tokens) {
  return (tokens ?? []).flatMap((token) => inline(token) ?? []);
}

function block(token) {
  switch (token.type) {
    case "paragraph":
      return el("p", {}, ...inlines(token.tokens));
    case "heading":
      // Headings inside a reply stay inside the conversation's outline: h1 becomes h3, and so on.
      return el(`h${Math.min(token.depth + 2, 6)}`, {}, ...inlines(token.tokens));
    case "code":
      return el("pre", {}, el("code", { text: token.text }));
    case "blockquote":
      return el("blockquote", {}, ...blocks(token.tokens));
    case "list":
      return list(token);
    case "table":
      return table(token);
    case "hr":
      return el("hr");
    case "space":
    case "def": // a reference link's definition: used by the links that name it, shown nowhere
      return null;
    case "html":
      return el("p", { text: token.text });
    case "text": // the text of a tight list item
      return token.tokens ? inlines(token.tokens) : document.createTextNode(token.text);
    case "checkbox": // a task list item's box, in a tight list
      return checkbox(token);
    default:
      return el("p", { text: token.raw ?? "" }); // a token type added in a later version of marked
  }
}

function list(token) {
  const attributes = token.ordered && token.start !== 1 && token.start !== "" ? { start: String(token.start) } : {};
  return el(
    token.ordered ? "ol" : "ul",
    attributes,
    ...token.items.map((item) => el("li", {}, ...blocks(item.tokens))),
  );
}

/** A task's box as a character, not a form control: nothing in a reply can be clicked but links. */
function checkbox(token) {
  return document.createTextNode(token.checked ? "☑ " : "☐ ");
}

function table(token) {
  const cell = (tag, { tokens, align }) => {
    const node = el(tag, {}, ...inlines(tokens));
    if (ALIGNMENTS.has(align)) node.style.textAlign = align;
    return node;
  };
  return el(
    "div",
    { class: "table" }, // scrolls sideways inside the bubble when the table is wider than it
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, ...token.header.map((header) => cell("th", header)))),
      el("tbody", {}, ...token.rows.map((row) => el("tr", {}, ...row.map((data) => cell("td", data))))),
    ),
  );
}

function inline(token) {
  switch (token.type) {
    case "strong":
      return el("strong", {}, ...inlines(token.tokens));
    case "em":
      return el("em", {}, ...inlines(token.tokens));
    case "del":
      return el("del", {}, ...inlines(token.tokens));
    case "codespan":
      return el("code", { text: token.text });
    case "br":
      return el("br");
    case "link": {
      const href = safeLink(token.href);
      return href ? externalLink(href, ...inlines(token.tokens)) : inlines(token.tokens);
    }
    case "image": {
      const href = safeLink(token.href);
      const label = token.text || token.href;
      return href ? externalLink(href, label) : document.createTextNode(label);
    }
    case "text":
      return token.tokens ? inlines(token.tokens) : document.createTextNode(token.text);
    case "escape":
    case "html":
      return document.createTextNode(token.text);
    case "checkbox": // a task list item's box, inside a loose list's paragraph
      return checkbox(token);
    default:
      return document.createTextNode(token.raw ?? "");
  }
}
