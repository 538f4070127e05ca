/* Guichet EDC PSC — progressive enhancement only: every page works without JavaScript.
   - [data-confirm] forms ask before submitting (withdrawal, refusal…);
   - [data-show-when] fields appear only when a radio/select has one of the listed values;
   - the pentest form asks the server (the same domain rules as the deposit) for an
     eligibility verdict while the candidate types, and shows it in an aria-live region;
   - "add a criterion" clones the last row of the criteria table;
   - a file over the upload limit is reported in French beside its field, before sending. */
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

  var maxUpload = parseInt(document.body.getAttribute("data-max-upload") || "0", 10);
  function checkSize(input) {
    var f = input.files && input.files[0];
    var msg = "";
    if (maxUpload && f && f.size > maxUpload) {
      msg = "Fichier trop volumineux : " + Math.ceil(f.size / 1024) + " Kio pour " +
        Math.floor(maxUpload / 1024) + " Kio au plus. Choisissez un fichier plus petit.";
    }
    var id = (input.id || input.name) + "-taille";
    var span = document.getElementById(id);
    if (msg) {
      if (!span) {
        span = document.createElement("span");
        span.className = "err"; span.id = id; span.setAttribute("role", "alert");
        input.insertAdjacentElement("afterend", span);
      }
      span.textContent = msg;
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", id);
    } else if (span) {
      span.remove(); input.removeAttribute("aria-invalid");
    }
    input.setCustomValidity(msg);
    return !msg;
  }
  document.addEventListener("change", function (ev) {
    if (ev.target.matches && ev.target.matches('input[type="file"]')) { checkSize(ev.target); }
  });
  document.addEventListener("submit", function (ev) {
    var ok = true;
    ev.target.querySelectorAll('input[type="file"]').forEach(function (i) { ok = checkSize(i) && ok; });
    if (!ok) { ev.preventDefault(); }
  }, true);
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
