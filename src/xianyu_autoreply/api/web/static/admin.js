// The admin's only script of its own (the CSP forbids inline scripts): show refused htmx requests in a toast.
(function () {
  "use strict";
  function toast(text) {
    var box = document.getElementById("toast");
    if (!box) { return; }
    var note = document.createElement("div");
    note.className = "flash bad";
    note.textContent = text;  // textContent: whatever the server said is shown as text, never as HTML
    box.replaceChildren(note);
    setTimeout(function () { if (note.parentNode) { note.parentNode.removeChild(note); } }, 6000);
  }
  document.addEventListener("htmx:responseError", function (evt) {
    var xhr = evt.detail.xhr;
    var text = "HTTP " + xhr.status;
    try {  // the API's errors are JSON {"code", "message"}
      var body = JSON.parse(xhr.responseText);
      if (body && body.message) { text = body.message + " (" + xhr.status + ")"; }
    } catch (ignored) { /* not JSON: keep the status */ }
    toast(text);
  });
  document.addEventListener("htmx:sendError", function () { toast("network error"); });
  // Confirm dangerous buttons without inline handlers: <button data-confirm="...">.
  document.addEventListener("htmx:confirm", function (evt) {
    var elt = evt.detail.elt;
    var question = elt && elt.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { evt.preventDefault(); }
  });
  document.addEventListener("submit", function (evt) {
    var form = evt.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { evt.preventDefault(); }
  });
  // Rules editor: add and remove rows from the <template> without a server round trip.
  document.addEventListener("click", function (evt) {
    var target = evt.target;
    if (!(target instanceof Element)) { return; }
    if (target.matches("[data-add-rule]")) {
      var tpl = document.getElementById("rule-row-template");
      var body = document.getElementById("rule-rows");
      if (tpl && body) { body.appendChild(tpl.content.cloneNode(true)); }
      evt.preventDefault();
    } else if (target.matches("[data-remove-rule]")) {
      var row = target.closest("tr");
      if (row) { row.remove(); }
      evt.preventDefault();
    }
  });
  // Mark live regions whose event stream is open (tests and people can tell a live page from a stale one).
  document.addEventListener("htmx:sseOpen", function (evt) {
    var elt = evt.detail && evt.detail.elt ? evt.detail.elt : evt.target;
    if (elt && elt.setAttribute) { elt.setAttribute("data-live", "open"); }
  });
  document.addEventListener("htmx:sseError", function (evt) {
    var elt = evt.detail && evt.detail.elt ? evt.detail.elt : evt.target;
    if (elt && elt.setAttribute) { elt.setAttribute("data-live", "retrying"); }
  });
  // Nothing inside a container of outside text (hx-disable) takes live updates: the SSE extension registers the
  // listeners of a whole live region again when its stream reconnects, without looking at hx-disable.
  document.addEventListener("htmx:sseBeforeMessage", function (evt) {
    var elt = evt.target;
    if (elt && elt.closest && elt.closest("[hx-disable], [data-hx-disable]")) { evt.preventDefault(); }
  });
  // A live row update must not lose the seller's selection for a bulk action.
  document.addEventListener("htmx:sseBeforeMessage", function (evt) {
    var box = evt.target && evt.target.querySelector ? evt.target.querySelector("input[name=ids]") : null;
    if (box) { evt.target.setAttribute("data-checked", box.checked ? "1" : ""); }
  });
  document.addEventListener("htmx:sseMessage", function (evt) {
    var row = evt.target;
    if (row && row.getAttribute && row.getAttribute("data-checked") === "1") {
      var box = row.querySelector("input[name=ids]");
      if (box) { box.checked = true; }
    }
  });
  // Keep a conversation scrolled to its newest message (the listener appends to the log it names in hx-target).
  document.addEventListener("htmx:sseMessage", function (evt) {
    var target = evt.target && evt.target.getAttribute ? evt.target.getAttribute("hx-target") : null;
    var log = target ? document.querySelector(target) : null;
    if (log && log.classList.contains("log")) { log.scrollTop = log.scrollHeight; }
  });
})();
