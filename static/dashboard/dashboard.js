// Shows every <time datetime> of a dashboard page in the reader's own time zone. Without this
// script the server's UTC text stays, so nothing depends on it.
"use strict";
document.querySelectorAll("time[datetime]").forEach(function (element) {
  var when = new Date(element.getAttribute("datetime"));
  if (!isNaN(when.getTime())) {
    element.title = element.textContent;
    element.textContent = when.toLocaleString();
  }
});
