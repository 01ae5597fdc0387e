// Refreshes the page's content in place (no reload): fetch the same URL,
// swap <main>. Pauses while the tab is hidden.
(function () {
  "use strict";
  var ms = parseInt(document.body.dataset.refreshMs || "0", 10);
  if (!ms) { return; }
  var busy = false;
  function refresh() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Drummer-Refresh": "1" } })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var next = doc.getElementById("content");
        if (next) { document.getElementById("content").replaceWith(next); }
        var served = doc.getElementById("served");
        if (served) { document.getElementById("served").textContent = served.textContent; }
      })
      .catch(function () {
        var u = document.getElementById("updated");
        if (u) { u.textContent = u.textContent.replace(/ \(.*\)$/, "") + " (server unreachable, retrying)"; }
      })
      .finally(function () { busy = false; });
  }
  setInterval(refresh, ms);
})();
