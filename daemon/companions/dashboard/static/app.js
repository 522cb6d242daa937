// cutout dashboard: live parts, the before/after view, Retry, Review's actions. Plain JS, no libraries.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var csrf = document.querySelector('meta[name="csrf"]').content;
  var overlay = document.getElementById("overlay");
  var sheet = document.getElementById("sheet");
  var toast = document.getElementById("toast");
  var updated = document.getElementById("updated");
  var partsUrl = document.body.dataset.parts || "/parts";  // the Review view: its own parts, in its order
  var current = {};
  document.querySelectorAll("[data-part]").forEach(function (el) { current[el.dataset.part] = el.innerHTML; });

  function refresh() {
    return fetch(partsUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) {
        csrf = data.csrf;
        Object.keys(data.parts).forEach(function (name) {
          var html = data.parts[name];
          if (current[name] === html) return;
          var el = document.querySelector('[data-part="' + name + '"]');
          if (el && !typing(el)) { el.innerHTML = html; current[name] = html; }
        });
        updated.textContent = "live · updated " + new Date().toLocaleTimeString();
      })
      .catch(function () { updated.textContent = "dashboard unreachable, retrying…"; });
  }

  // A reason being written, or a recipe or model being chosen, in a part is not swapped away;
  // the part catches up once it is sent or cleared.
  function typing(el) {
    return Array.prototype.some.call(el.querySelectorAll("input[type=text], select"), function (input) {
      return input.value !== "" || input === document.activeElement;
    });
  }

  function schedule() {
    setTimeout(function () {
      (document.hidden ? Promise.resolve() : refresh()).then(schedule, schedule);
    }, POLL_MS);
  }
  schedule();
  document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });

  function say(text) {
    toast.textContent = text; toast.hidden = false;
    clearTimeout(say.timer); say.timer = setTimeout(function () { toast.hidden = true; }, 4000);
  }

  // Before / after: the view as an overlay; the link still works as a page of its own.
  document.addEventListener("click", function (event) {
    var link = event.target.closest("a.thumb, a.pick");
    if (link && !event.metaKey && !event.ctrlKey) {
      event.preventDefault();
      fetch("/view/" + link.dataset.job + "?fragment=1", { credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
        .then(function (html) { sheet.innerHTML = html; overlay.hidden = false; })
        .catch(function () { window.location = link.href; });
      return;
    }
    if (event.target.closest(".ba .close") || event.target === overlay) {
      if (!overlay.hidden) { event.preventDefault(); overlay.hidden = true; sheet.innerHTML = ""; }
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && !overlay.hidden) { overlay.hidden = true; sheet.innerHTML = ""; }
  });

  // Retry, Approve, Reject, Redo: the form posts with the CSRF value; the answer says what happened.
  document.addEventListener("submit", function (event) {
    var form = event.target.closest("form.retry, form.act");
    if (!form) return;
    event.preventDefault();
    var body = new URLSearchParams(new FormData(form));
    body.set("csrf", csrf);
    form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    fetch(form.action, { method: "POST", body: body, credentials: "same-origin",
                         headers: { "X-CSRF-Token": csrf, Accept: "application/json" } })
      .then(function (r) { return r.json().then(function (data) { return { ok: r.ok, data: data }; }); })
      .then(function (res) {
        say(res.ok ? res.data.lines.join("\n") : res.data.error);
        form.querySelectorAll(res.ok ? "input[type=text], select" : "button").forEach(function (el) {
          if (res.ok) el.value = ""; else el.disabled = false;  // sent: the part may be swapped now
        });
      })
      .catch(function () { say("not sent: the dashboard did not answer"); })
      .then(refresh);
  });

  // A quarantined original that does not decode has no thumbnail: drop the broken image.
  document.addEventListener("error", function (event) {
    var img = event.target;
    if (img.tagName === "IMG" && img.closest(".qthumb")) img.remove();
  }, true);
})();
