// spoolq status page: refresh the live part, follow a job's log, send the buttons' POSTs.
// No framework and nothing from elsewhere; the page works on whatever the server renders.
(function () {
  "use strict";
  var REFRESH_MS = 500; // a change shows within a second
  var live = document.getElementById("live");
  var note = document.getElementById("note");
  var busy = false;

  function toLogin() {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }

  function refresh() {
    if (!live || busy) return Promise.resolve();
    busy = true;
    return fetch(live.dataset.live, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) return toLogin();
        document.body.classList.toggle("stale", !r.ok);
        if (!r.ok) return;
        return r.text().then(function (html) {
          if (html !== live.innerHTML) live.innerHTML = html;
        });
      })
      .catch(function () { document.body.classList.add("stale"); })
      .then(function () { busy = false; });
  }

  function say(text) {
    if (!note) return;
    note.textContent = text || "";
    note.hidden = !text;
  }

  document.addEventListener("click", function (ev) {
    var button = ev.target.closest ? ev.target.closest("button[data-post]") : null;
    if (!button) return;
    ev.preventDefault();
    button.disabled = true;
    fetch(button.dataset.post, { method: "POST", credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401) return toLogin();
        if (r.ok) return say("");
        return r.json().then(
          function (body) { say(body.detail || r.statusText); },
          function () { say(r.status + " " + r.statusText); });
      })
      .catch(function (e) { say(String(e)); })
      .then(function () { button.disabled = false; return refresh(); });
  });

  if (live) setInterval(refresh, REFRESH_MS);

  // The log: its last 256 KiB first, then whatever was added, by byte offset.
  var log = document.getElementById("log");
  if (log) {
    var pos = -1, reading = false, done = false;
    var decoder = new TextDecoder("utf-8");
    var follow = function () {
      if (reading || done) return;
      reading = true;
      var finished = live && live.querySelector("[data-finished]");
      var url = log.dataset.log + (pos < 0 ? "" : "?offset=" + pos);
      var headers = pos < 0 ? { Range: "bytes=-262144" } : {};
      fetch(url, { credentials: "same-origin", cache: "no-store", headers: headers })
        .then(function (r) {
          if (r.status === 401) return toLogin();
          if (r.status === 416) { pos = 0; return; } // empty so far
          if (!r.ok) return;
          var total = r.headers.get("Content-Range");
          return r.arrayBuffer().then(function (buf) {
            if (pos < 0) pos = total ? Number(total.split("/")[1]) : buf.byteLength;
            else pos += buf.byteLength;
            if (!buf.byteLength) { if (finished) done = true; return; }
            var atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
            log.textContent += decoder.decode(buf, { stream: true });
            if (atEnd) log.scrollTop = log.scrollHeight;
          });
        })
        .catch(function () {})
        .then(function () { reading = false; });
    };
    follow();
    setInterval(follow, REFRESH_MS);
  }
})();
