// awaitly dashboard: the counts by status (a separate request, so that a large store
// never slows the runs page down) and a confirmation before a destructive action.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var counts = document.getElementById("counts");
  if (counts && window.fetch) {
    fetch(counts.getAttribute("data-src"), { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (doc) {
        if (!doc) { return; }
        counts.querySelectorAll("[data-count]").forEach(function (cell) {
          var status = cell.getAttribute("data-count");
          var n = doc.counts[status];
          cell.textContent = n === undefined ? "?" : String(n) + (doc.capped.indexOf(status) >= 0 ? "+" : "");
        });
        counts.setAttribute("data-loaded", "true");
      })
      .catch(function () { /* the counts stay "…": the page works without them */ });
  }
  document.querySelectorAll("form.action button.danger").forEach(function (button) {
    button.addEventListener("click", function (event) {
      if (!window.confirm(button.textContent + "?")) { event.preventDefault(); }
    });
  });
});
