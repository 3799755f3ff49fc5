/* Live updates: poll the JSON API every 2 s (same-origin cookie) and patch the page in place. */
(function () {
  "use strict";
  var FINISHED = ["succeeded", "failed", "cancelled"];
  var PERIOD = 2000;

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
  }

  function td(row, text, cls) {
    var cell = row.insertCell();
    if (cls) cell.className = cls;
    if (text instanceof Node) cell.appendChild(text); else cell.textContent = text;
    return cell;
  }

  function span(text, cls) {
    var s = document.createElement("span");
    s.className = cls; s.textContent = text;
    return s;
  }

  function jobRow(tbody, job) {
    var row = tbody.insertRow();
    row.dataset.jobId = job.id;
    var link = document.createElement("a");
    link.href = "/jobs/" + job.id; link.textContent = "#" + job.id;
    td(row, link); td(row, job.type); td(row, job.model);
    var st = td(row, span(job.status, "status status-" + job.status));
    if (job.queue_position !== null) st.appendChild(span(" #" + (job.queue_position + 1) + " in queue", "muted"));
    var bar = document.createElement("progress");
    bar.max = 1; bar.value = job.progress;
    var cell = td(row, bar, "wide");
    cell.appendChild(document.createTextNode(" "));
    cell.appendChild(span(Math.round(job.progress * 100) + "%", "pct"));
    td(row, String(job.step));
    td(row, (job.created_at || "").slice(0, 19).replace("T", " "));
  }

  function pollList(table) {
    var tbody = table.tBodies[0];
    function tick() {
      getJSON(table.dataset.poll).then(function (answer) {
        if (!answer.jobs.length) return;
        while (tbody.rows.length) tbody.deleteRow(0);
        answer.jobs.forEach(function (job) { jobRow(tbody, job); });
      }).catch(function () {}).then(function () { setTimeout(tick, PERIOD); });
    }
    setTimeout(tick, PERIOD);
  }

  function setText(id, text) { var n = document.getElementById(id); if (n) n.textContent = text; }

  function pollJob(box) {
    var id = box.dataset.jobId, last = box.dataset.status, metricsAt = 0;
    function tick() {
      getJSON("/api/v1/jobs/" + id).then(function (job) {
        var badge = document.getElementById("job-status");
        badge.textContent = job.status; badge.className = "status status-" + job.status;
        var bar = document.getElementById("job-progress");
        if (bar) bar.value = job.progress;
        setText("job-pct", (job.progress * 100).toFixed(1) + "%");
        setText("job-step", String(job.step));
        setText("job-queue", job.queue_position === null ? "—" : String(job.queue_position + 1));
        var err = document.getElementById("job-error");
        if (err) { err.hidden = !job.error; err.textContent = job.error || ""; }
        var svg = document.getElementById("loss-chart");
        if (svg && window.genqChart && (job.status === "running" || Date.now() - metricsAt > 15000)) {
          metricsAt = Date.now();
          getJSON("/api/v1/jobs/" + id + "/metrics?max_points=500&name=train/loss&name=val/loss")
            .then(function (m) { window.genqChart.draw(svg, m.series); }).catch(function () {});
        }
        // Outputs, artifacts and the final log appear when the job ends: reload once to show them.
        if (FINISHED.indexOf(job.status) >= 0 && FINISHED.indexOf(last) < 0) { location.reload(); return; }
        last = job.status;
        if (FINISHED.indexOf(job.status) < 0) setTimeout(tick, PERIOD);
      }).catch(function () { setTimeout(tick, PERIOD * 2); });
    }
    if (FINISHED.indexOf(last) < 0) setTimeout(tick, PERIOD);
  }

  // The submit form: offer only datasets whose kind the chosen model trains on.
  function matchDatasets(model, dataset) {
    function sync() {
      var want = model.selectedOptions[0] && model.selectedOptions[0].dataset.kind, keep = null;
      Array.prototype.forEach.call(dataset.options, function (o) {
        o.disabled = o.hidden = o.dataset.kind !== want;
        if (!o.disabled && (keep === null || o.selected)) keep = o;
      });
      if (keep && (dataset.selectedOptions[0] || {}).disabled !== false) keep.selected = true;
    }
    model.addEventListener("change", sync);
    sync();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var model = document.getElementById("model"), dataset = document.getElementById("dataset");
    if (model && dataset) matchDatasets(model, dataset);
    var table = document.getElementById("jobs");
    if (table && table.dataset.poll) pollList(table);
    var box = document.getElementById("job");
    if (box && box.dataset.jobId) pollJob(box);
  });
})();
