/*
 * The dashboard's one script (static/dashboard/dashboard.js, built by `npm run build` in web/).
 * Without it every page still works: times stay in UTC and replies show as their Markdown text.
 */
import { drawMarkdown } from "./markdown.js";

// Every <time datetime> in the reader's own time zone.
for (const element of document.querySelectorAll("time[datetime]")) {
  const when = new Date(element.getAttribute("datetime"));
  if (!Number.isNaN(when.getTime())) {
    element.title = element.textContent;
    element.textContent = when.toLocaleString();
  }
}

// Each reply drawn the way the widget drew it for the visitor.
for (const element of document.querySelectorAll("[data-markdown]")) {
  drawMarkdown(element, element.textContent);
  element.classList.add("markdown");
}
