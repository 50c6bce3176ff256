// A queued or running run's page follows the run without reloading, then shows its report.
(function () {
  var status = document.getElementById("run-status");
  if (!status) return;
  var id = status.getAttribute("data-run");
  var elapsed = document.getElementById("run-elapsed");
  var phase = document.getElementById("run-phase");
  function counted(l) {
    if (!l.phase) return "";
    var n = l.done ? " " + l.done.toLocaleString() + (l.total ? " of " + l.total.toLocaleString() : "") : "";
    return "Now: " + l.phase + n + ".";
  }
  var started = Date.now();
  function tick() {
    fetch("/runs/" + id + "/progress", { headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (!p) return setTimeout(tick, 2000);
        status.textContent = p.status;
        status.className = "badge " + p.status;
        if (elapsed) elapsed.textContent = Math.round((Date.now() - started) / 1000) + " s";
        if (phase) phase.textContent = p.live ? counted(p.live) : "";
        if (p.final) { window.location.reload(); return; }
        setTimeout(tick, 1000);
      })
      .catch(function () { setTimeout(tick, 2000); });
  }
  setTimeout(tick, 1000);
})();
