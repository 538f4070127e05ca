/* Guichet EDC PSC — progressive enhancement only: every page works without JavaScript.
   - [data-confirm] forms ask before submitting (withdrawal, refusal…);
   - [data-show-when] fields appear only when a radio/select has one of the listed values;
   - the pentest form asks the server (the same domain rules as the deposit) for an
     eligibility verdict while the candidate types, and shows it in an aria-live region;
   - "add a criterion" clones the last row of the criteria table. */
(function () {
  "use strict";

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var msg = form.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) { ev.preventDefault(); }
  }, true);

  function currentValue(name) {
    var checked = document.querySelector('[name="' + name + '"]:checked');
    if (checked) { return checked.value; }
    var el = document.querySelector('select[name="' + name + '"]');
    return el ? el.value : "";
  }

  function refreshConditional() {
    document.querySelectorAll("[data-show-when]").forEach(function (el) {
      var spec = el.getAttribute("data-show-when").split("=");
      var values = spec[1].split(",");
      var show = values.indexOf(currentValue(spec[0])) !== -1;
      el.hidden = !show;
      el.querySelectorAll("input, select, textarea").forEach(function (i) { i.disabled = !show; });
    });
  }
  document.addEventListener("change", refreshConditional);
  refreshConditional();

  var pentest = document.querySelector("form[data-pentest-preview]");
  if (pentest) {
    var out = document.getElementById("pentest-verdict");
    var timer = null;
    var seq = 0;
    var preview = function () {
      var mine = ++seq;
      var data = new FormData(pentest);
      data.delete("file");
      fetch(pentest.getAttribute("data-pentest-preview"), {
        method: "POST", body: data, credentials: "same-origin", headers: { "X-Requested-With": "fetch" }
      }).then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) { if (mine === seq) { out.innerHTML = html; } })
        .catch(function () { /* the verdict will be given at deposit */ });
    };
    pentest.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(preview, 250); });
    pentest.addEventListener("change", function () { clearTimeout(timer); timer = setTimeout(preview, 50); });
    var add = document.getElementById("add-criterion");
    if (add) {
      add.hidden = false;
      add.addEventListener("click", function () {
        var body = pentest.querySelector("table.criteria tbody");
        var last = body.querySelector("tr:last-child");
        var row = last.cloneNode(true);
        var n = body.querySelectorAll("tr").length + 1;
        row.querySelectorAll("input, select").forEach(function (i) {
          if (i.type === "text") { i.value = "C" + n; }
          var id = i.id.replace(/-\d+$/, "-" + n); i.id = id;
        });
        row.querySelectorAll("label").forEach(function (l) {
          l.htmlFor = l.htmlFor.replace(/-\d+$/, "-" + n);
        });
        body.appendChild(row);
        row.querySelector("input").focus();
        preview();
      });
    }
  }
})();
