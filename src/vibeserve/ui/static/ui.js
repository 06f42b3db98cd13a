// Live updates: the page's #live part is fetched again (?partial=1) whenever the server's event stream says
// the run store changed. No reload, no library; the server renders everything, this only swaps HTML.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var state = document.getElementById("live-state");
  if (!live || !live.dataset.events || !window.EventSource) {
    return;
  }
  var busy = false;
  var again = false;
  var connected = false;
  var updates = 0;

  function show(text, ok) {
    if (state) {
      state.textContent = text;
      state.className = ok ? "live-state" : "live-state off";
    }
  }

  function openDetails() {
    var open = [];
    live.querySelectorAll("details").forEach(function (d, i) { if (d.open) { open.push(i); } });
    return open;
  }

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    var open = openDetails();
    fetch(url.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(new Error(String(r.status))); })
      .then(function (html) {
        live.innerHTML = html;
        updates += 1;
        live.dataset.updated = String(updates);
        var all = live.querySelectorAll("details");
        open.forEach(function (i) { if (all[i]) { all[i].open = true; } });
        show("live, updated " + new Date().toLocaleTimeString(), true);
        live.dispatchEvent(new CustomEvent("vibeserve:updated"));
      })
      .catch(function (e) { show("update failed (" + e.message + ")", false); })
      .finally(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  var events = new EventSource(live.dataset.events);
  events.addEventListener("ready", function () {
    if (connected) { refresh(); }  // back after a drop: catch up on what changed meanwhile
    connected = true;
    show("live", true);
  });
  events.addEventListener("change", refresh);
  events.onerror = function () { show("reconnecting…", false); };
})();
