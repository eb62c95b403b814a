// radspine viewer index: re-sort the studies table (hand-written, no dependencies; see viewer.js).
(function () {
  "use strict";
  var body = document.querySelector("#studies tbody");
  function num(tr, key) { return parseFloat(tr.getAttribute("data-" + key)); }
  function sortBy(cmp) {
    var trs = Array.prototype.slice.call(body.querySelectorAll("tr"));
    trs.sort(cmp).forEach(function (tr) { body.appendChild(tr); });
  }
  function bySeverity(a, b) { return num(b, "severity") - num(a, "severity") || num(a, "study") - num(b, "study"); }
  function byDoubt(a, b) {
    return num(b, "doubtful") - num(a, "doubtful") || num(a, "confidence") - num(b, "confidence") ||
      num(a, "study") - num(b, "study");
  }
  document.getElementById("by-severity").addEventListener("click", function () { sortBy(bySeverity); });
  document.getElementById("by-doubt").addEventListener("click", function () { sortBy(byDoubt); });
})();
