/* Live pages. The job list and the job page follow server-sent events (/api/v1/events) and patch themselves
   in place. When events stop (the server refuses or drops the stream, or nothing arrives for STALE ms) they
   poll the JSON API every PERIOD ms instead, and try events again later, waiting longer each time.
   <body data-live> says which is in use: "events" or "polling". */
(function () {
  "use strict";
  var FINISHED = ["succeeded", "failed", "cancelled"];
  var PERIOD = 2000;                 // polling interval
  var STALE = 40000;                 // the server pings every 15 s: this long without a word, the stream is dead
  var RETRY_FIRST = 5000, RETRY_MOST = 60000;  // waits before trying events again while polling
  var CHART_SERIES = ["train/loss", "val/loss"];  // what the job page's chart draws (queries.LOSS_SERIES)
  var MAX_POINTS = 2000;             // per series kept for the chart while a job runs

  function finished(status) { return FINISHED.indexOf(status) >= 0; }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
  }

  // Follow `url`: handlers[name](data) for each event, resync() on each (re)connection (to fill what was
  // missed meanwhile), and poll() (a promise) every PERIOD ms while events do not work. Returns stop().
  function follow(url, handlers, poll, resync) {
    var source = null, watchdog = 0, polling = false, wait = RETRY_FIRST, stopped = false;

    function mode(name) { document.body.dataset.live = name; }
    function arm() { clearTimeout(watchdog); watchdog = setTimeout(fallBack, STALE); }
    function alive() {
      arm();
      polling = false;
      wait = RETRY_FIRST;
      mode("events");
    }
    function connect() {
      if (stopped || document.hidden) return;  // a hidden tab connects when shown again
      source = new EventSource(url);
      source.onopen = function () { alive(); if (resync) resync(); };
      source.addEventListener("ping", alive);
      Object.keys(handlers).forEach(function (name) {
        source.addEventListener(name, function (e) { alive(); handlers[name](JSON.parse(e.data)); });
      });
      // A refused stream (503, 404) closes for good; a dropped one reconnects by itself, under the watchdog.
      source.onerror = function () { if (source && source.readyState === EventSource.CLOSED) fallBack(); };
      arm();
    }
    function fallBack() {
      if (stopped) return;
      clearTimeout(watchdog);
      if (source) source.close();
      source = null;
      if (!polling) { polling = true; mode("polling"); pollLoop(); }
      setTimeout(connect, wait);
      wait = Math.min(wait * 2, RETRY_MOST);
    }
    function pollLoop() {
      if (!polling || stopped) return;
      poll().catch(function () {}).then(function () { setTimeout(pollLoop, PERIOD); });
    }
    if (typeof EventSource === "undefined") { polling = true; mode("polling"); pollLoop(); }
    else connect();
    // A browser opens at most 6 connections to a server over HTTP/1.1, and each stream holds one: a hidden tab
    // lets go of its stream (and stops polling), and catches up when shown again (resync at the reconnection).
    document.addEventListener("visibilitychange", function () {
      if (stopped || typeof EventSource === "undefined") return;
      if (document.hidden) {
        clearTimeout(watchdog);
        if (source) source.close();
        source = null;
        polling = false;
      } else if (!source) connect();
    });
    return function stop() {
      stopped = true;
      clearTimeout(watchdog);
      if (source) source.close();
      source = null;
    };
  }

  // -- the job list ---------------------------------------------------------------------------------------------
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

  // One row as jobs.html renders it: the queue position, the expected start and why the job waits while
  // queued, and (for the operator) its team.
  function jobRow(tbody, job, operator) {
    var row = tbody.insertRow();
    row.dataset.jobId = job.id;
    var link = document.createElement("a");
    link.href = "/jobs/" + job.id; link.textContent = "#" + job.id;
    td(row, link); td(row, job.type); td(row, job.model);
    var st = td(row, span(job.status, "status status-" + job.status));
    if (job.queue_position !== null && job.queue_position !== undefined) {
      var place = span(" #" + (job.queue_position + 1) + " in queue" +
        (job.eta ? ", starts ~" + job.eta.slice(11, 16) + " UTC" : ""), "muted");
      place.title = job.wait_reason || "";
      st.appendChild(place);
      if (job.wait_reason) {
        var reason = document.createElement("div");
        reason.className = "muted small reason"; reason.textContent = job.wait_reason;
        st.appendChild(reason);
      }
    }
    if (operator) st.appendChild(span(" " + job.team, "muted small"));
    var bar = document.createElement("progress");
    bar.max = 1; bar.value = job.progress;
    var cell = td(row, bar, "wide");
    cell.appendChild(document.createTextNode(" "));
    cell.appendChild(span(Math.round(job.progress * 100) + "%", "pct"));
    td(row, String(job.step), "step");
    td(row, (job.created_at || "").slice(0, 19).replace("T", " "));
  }

  function listPage(table) {
    var tbody = table.tBodies[0];
    function fill(jobs) {
      if (!jobs.length) return;
      while (tbody.rows.length) tbody.deleteRow(0);
      jobs.forEach(function (job) { jobRow(tbody, job, table.dataset.operator === "1"); });
    }
    function progress(data) {
      var row = tbody.querySelector('tr[data-job-id="' + data.id + '"]');
      if (!row) return;
      if (typeof data.progress === "number") {
        row.querySelector("progress").value = data.progress;
        row.querySelector(".pct").textContent = Math.round(data.progress * 100) + "%";
      }
      if (typeof data.step === "number") row.querySelector(".step").textContent = String(data.step);
    }
    follow(table.dataset.events, { jobs: function (data) { fill(data.jobs); }, progress: progress },
      function () { return getJSON(table.dataset.poll).then(function (answer) { fill(answer.jobs); }); });
  }

  // -- the job page ---------------------------------------------------------------------------------------------
  function setText(id, text) { var n = document.getElementById(id); if (n) n.textContent = text; }
  // A fact of the job page's list: its text, and its row hidden while it has none.
  function fact(id, text) {
    var n = document.getElementById(id);
    if (n) { n.textContent = text; n.parentNode.hidden = !text; }
  }
  function when(iso) { return iso ? iso.slice(0, 19).replace("T", " ") : "—"; }

  function jobPage(box) {
    var id = box.dataset.jobId, shown = box.dataset.status, stop = null;
    var svg = document.getElementById("loss-chart"), data = document.getElementById("chart-data");
    var series = data ? JSON.parse(data.textContent || "{}") : {}, drawTimer = 0, refreshTimer = 0;
    var log = document.getElementById("job-log"), lastLog = 0;
    Array.prototype.forEach.call(log ? log.querySelectorAll("li[data-id]") : [], function (li) {
      lastLog = Math.max(lastLog, +li.dataset.id);
    });

    function progress(p) {
      if (typeof p.progress === "number") {
        var bar = document.getElementById("job-progress");
        if (bar) bar.value = p.progress;
        setText("job-pct", (p.progress * 100).toFixed(1) + "%");
      }
      if (typeof p.step === "number") setText("job-step", String(p.step));
    }

    function status(job) {
      var badge = document.getElementById("job-status");
      badge.textContent = job.status; badge.className = "status status-" + job.status;
      progress(job);
      setText("job-queue", job.queue_position === null ? "—" : String(job.queue_position + 1));
      setText("job-attempts", (job.attempts - job.preemptions) + " / " + job.max_attempts);  // hand-backs not counted
      setText("job-started", when(job.started_at));
      setText("job-finished", when(job.finished_at));
      fact("job-eta", job.eta ? when(job.eta) + " UTC" : "");  // the forecast moves; a finished job has none
      setText("job-eta-label", job.status === "queued" ? "Expected start" : "Expected end");
      fact("job-wait-reason", job.wait_reason || "");
      var err = document.getElementById("job-error");
      if (err) { err.hidden = !job.error; err.textContent = job.error || ""; }
      if (finished(job.status)) {
        if (stop) stop();
        if (!finished(shown)) {
          refreshSoon();  // final evaluation, outputs, samples, artifacts, the buttons
          if (log) getJSON("/api/v1/jobs/" + id + "/logs?after=" + lastLog).then(lines).catch(function () {});
        }
      }
      shown = job.status;
    }

    // The chart (web/static/chart.js), through what it offers: append(name, points) takes the new points; else
    // refresh() makes it fetch what it draws (at most every 2 s); else we keep a copy of the loss series and
    // draw(svg, series) it, keeping every other point once it grows past MAX_POINTS (first and last stay).
    function offers(name) { return window.genqChart && typeof window.genqChart[name] === "function"; }
    function thin(points) {
      if (points.length <= MAX_POINTS) return points;
      return points.filter(function (_, i) { return i % 2 === 0 || i === points.length - 1; });
    }
    function redraw() {
      drawTimer = 0;
      if (offers("refresh")) window.genqChart.refresh();
      else if (svg && offers("draw")) window.genqChart.draw(svg, series);
    }
    function metrics(m) {
      Object.keys(m.series).forEach(function (name) {
        if (offers("append")) window.genqChart.append(name, m.series[name]);
        else if (CHART_SERIES.indexOf(name) >= 0) series[name] = thin((series[name] || []).concat(m.series[name]));
      });
      if (!offers("append") && !drawTimer) drawTimer = setTimeout(redraw, offers("refresh") ? 2000 : 500);
    }

    function lines(answer) {
      if (!log) return;
      (answer.lines || answer.logs || []).forEach(function (line) {  // an event's lines, or GET .../logs
        if (line.id <= lastLog) return;
        lastLog = line.id;
        var empty = log.querySelector("li.muted");
        if (empty) empty.remove();
        var li = document.createElement("li"), time = document.createElement("time");
        li.dataset.id = line.id;
        time.textContent = (line.time || "").slice(11, 19);
        li.appendChild(time);
        li.appendChild(document.createTextNode(" " + line.message));
        log.appendChild(li);
      });
      while (log.children.length > 200) log.removeChild(log.firstChild);
    }

    // What the page shows from rows the worker adds (evaluation, outputs, samples, artifacts): the same page
    // fetched again, each [data-refresh] element of it put in place of ours (at an outputs event, and once
    // the job has finished). Listeners bound to the old nodes are gone: bind again on "genq:refreshed".
    function refresh() {
      refreshTimer = 0;
      fetch(location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html");
          Array.prototype.forEach.call(fresh.querySelectorAll("[data-refresh][id]"), function (node) {
            var old = document.getElementById(node.id);
            if (old) old.replaceWith(document.importNode(node, true));
          });
          document.dispatchEvent(new CustomEvent("genq:refreshed"));
        }).catch(function () {});
    }
    function refreshSoon() { if (!refreshTimer) refreshTimer = setTimeout(refresh, 300); }

    // What a stream that just (re)connected, or a polling round, may have missed: metric points and log lines.
    function resync() {
      if (offers("refresh")) window.genqChart.refresh();
      else if (svg && offers("draw")) {
        getJSON("/api/v1/jobs/" + id + "/metrics?max_points=500&name=" + CHART_SERIES.join("&name="))
          .then(function (m) { series = m.series; redraw(); }).catch(function () {});
      }
      if (log) getJSON("/api/v1/jobs/" + id + "/logs?after=" + lastLog).then(lines).catch(function () {});
    }

    if (finished(shown)) return;
    stop = follow("/api/v1/events?job=" + id,
      { status: status, progress: progress, metrics: metrics, log: lines, outputs: refreshSoon },
      function () { resync(); return getJSON("/api/v1/jobs/" + id).then(status); }, resync);
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
    if (table && table.dataset.events) listPage(table);
    var box = document.getElementById("job");
    if (box && box.dataset.jobId) jobPage(box);
    // Buttons that cannot be undone (delete a dataset, revoke a token) ask first.
    Array.prototype.forEach.call(document.querySelectorAll("form[data-confirm]"), function (form) {
      form.addEventListener("submit", function (e) { if (!window.confirm(form.dataset.confirm)) e.preventDefault(); });
    });
  });
})();
