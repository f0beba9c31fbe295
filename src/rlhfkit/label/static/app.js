// rlhfkit label: keyboard shortcuts. Served from this origin only (the CSP forbids inline script).
// 1 / 2: the better response, T: tie, X: both bad, U: undo the last answer.
(function () {
  "use strict";
  var sent = false;  // one answer per page: a second key press while the first is on its way is ignored
  document.addEventListener("keydown", function (event) {
    if (sent || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    var target = event.target;
    if (target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target.type === "text"))) return;
    var key = event.key.toLowerCase();
    var button = document.querySelector('button[data-key="' + (key === "arrowleft" ? "1" : key === "arrowright" ? "2" : key) + '"]');
    if (!button) return;
    event.preventDefault();
    // requestSubmit runs the form's validation (required ratings) and sends the button's value.
    button.form.requestSubmit(button);
  });
  // A second click while the answer is on its way must not send it twice (the server would ignore
  // it anyway: one vote per item and annotator).
  document.querySelectorAll("form").forEach(function (form) {
    form.addEventListener("submit", function () {
      sent = true;
      setTimeout(function () { form.querySelectorAll("button").forEach(function (b) { b.disabled = true; }); }, 0);
    });
  });
})();
