/* Elements built from values, never from HTML strings: what the widget and markdown.js draw with. */

const LINK_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

/** The href of an http, https or mailto URL, else null (javascript:, data:, relative, garbage). */
export function safeLink(value) {
  try {
    const url = new URL(String(value));
    return LINK_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

/** An element with attributes ("text" sets textContent) and children (strings become text). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

/** A link that opens in a new tab and tells the target nothing about the page it came from. */
export function externalLink(href, ...children) {
  return el("a", { href, target: "_blank", rel: "noopener noreferrer" }, ...children);
}
