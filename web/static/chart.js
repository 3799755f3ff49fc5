/* SVG line charts of metric series. Each chart (an svg.chart with data-sources='[{"job", "name", "label"}]')
   asks the API for its series downsampled to its width in pixels (?points=), draws each bucket's last value as
   a line over a band of the bucket's min and max, and zooms: drag across it to re-query that step range at full
   resolution, double-click or its Reset button to zoom out. No library, nothing outside the app. */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var W = 720, H = 280, M = { left: 58, right: 18, top: 30, bottom: 34 };
  var PW = W - M.left - M.right, PH = H - M.top - M.bottom;
  var MAX_POINTS = 4000, COLORS = 10;

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(node);
    return node;
  }

  // Round tick steps to 1, 2 or 5 times a power of ten.
  function ticks(lo, hi, count) {
    var span = hi - lo || 1, raw = span / count, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * mag; }).find(function (s) { return s >= raw; });
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  function fmt(v) {
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
    return String(+v.toPrecision(4));
  }

  function ok(v) { return v !== null && v !== undefined && isFinite(v); }

  function extent(values) {
    var lo = Infinity, hi = -Infinity;
    values.forEach(function (v) { if (v < lo) lo = v; if (v > hi) hi = v; });  // no spread: 1e5+ values
    return [lo, hi];
  }

  // The band of a series: one closed path per run of buckets with a finite min and max.
  function bandPath(rows, X, Y) {
    var d = "", run = [];
    function close() {
      if (run.length > 1) {
        d += "M" + run.map(function (r) { return X(r[0]).toFixed(1) + " " + Y(r[2]).toFixed(1); }).join("L");
        d += "L" + run.slice().reverse().map(function (r) { return X(r[0]).toFixed(1) + " " + Y(r[1]).toFixed(1); }).join("L") + "Z";
      }
      run = [];
    }
    rows.forEach(function (r) { if (ok(r[1]) && ok(r[2])) run.push(r); else close(); });
    close();
    return d;
  }

  /* Draw `series` ({label: [[step, value], ...]}) into `svg`; opts.bands ({label: [[step, min, max], ...]})
     adds min/max bands, opts.x ([first, last] step) fixes the x range (a zoom). Returns that x range. */
  function draw(svg, series, opts) {
    opts = opts || {};
    var bands = opts.bands || {}, names = Object.keys(series || {}), xs = [], ys = [];
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    names.forEach(function (n) {
      series[n].forEach(function (p) { if (ok(p[1])) { xs.push(p[0]); ys.push(p[1]); } });
      (bands[n] || []).forEach(function (b) { if (ok(b[1]) && ok(b[2])) ys.push(b[1], b[2]); });
    });
    svg.dataset.drawn = String((+svg.dataset.drawn || 0) + 1);  // what tests and the bench wait for
    svg.dataset.drawnAt = performance.now().toFixed(1);
    if (!xs.length) {
      el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg).textContent = "No metrics yet";
      return null;
    }
    var xr = opts.x || extent(xs), yr = extent(ys), x0 = xr[0], x1 = xr[1], y0 = yr[0], y1 = yr[1];
    if (x0 === x1) { x0 -= Math.max(1, Math.abs(x0) * 0.05); x1 += Math.max(1, Math.abs(x1) * 0.05); }
    var pad = (y1 - y0) * 0.06 || Math.abs(y1) * 0.1 || 1;
    y0 -= pad; y1 += pad;
    function X(v) { return M.left + (v - x0) / (x1 - x0) * PW; }
    function Y(v) { return M.top + (1 - (v - y0) / (y1 - y0)) * PH; }

    ticks(y0, y1, 5).forEach(function (t) {
      el("line", { x1: M.left, x2: W - M.right, y1: Y(t), y2: Y(t), class: "grid" }, svg);
      el("text", { x: M.left - 8, y: Y(t) + 4, "text-anchor": "end" }, svg).textContent = fmt(t);
    });
    ticks(x0, x1, 6).forEach(function (t) {
      if (t < x0 || t > x1) return;
      el("text", { x: X(t), y: H - M.bottom + 18, "text-anchor": "middle" }, svg).textContent = fmt(t);
    });
    el("line", { x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom, class: "axis" }, svg);
    el("line", { x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom, class: "axis" }, svg);
    el("text", { x: W - M.right, y: H - 4, "text-anchor": "end" }, svg).textContent = "step";

    var legend = el("g", { class: "legend" }, svg), lx = M.left;
    names.forEach(function (name, i) {
      var cls = "series-" + (i % COLORS), d = "", pen = "M", count = 0;
      if (bands[name]) {
        var area = bandPath(bands[name], X, Y);
        if (area) el("path", { d: area, class: "band " + cls, "data-series": name }, svg);
      }
      series[name].forEach(function (p) {
        if (!ok(p[1])) { pen = "M"; return; }  // a NaN loss leaves a gap
        d += pen + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1) + " ";
        pen = "L"; count++;
      });
      if (count > 1) el("path", { d: d.trim(), class: "line " + cls, "data-series": name }, svg);
      else if (count === 1) {
        var only = series[name].filter(function (p) { return ok(p[1]); })[0];
        el("circle", { cx: X(only[0]), cy: Y(only[1]), r: 3.5, class: cls, "data-series": name }, svg);
      }
      el("rect", { x: lx, y: 10, width: 14, height: 4, rx: 2, class: cls }, legend);
      el("text", { x: lx + 20, y: 16 }, legend).textContent = name;
      lx += 34 + name.length * 7;
    });
    return [x0, x1];
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); });
  }

  // A chart of `sources` ([{job, name, label}]); range is null (everything) or the zoomed {start, end}.
  function Chart(svg, sources) {
    this.svg = svg; this.sources = sources; this.range = null; this.x = null; this.seq = 0;
    this.reset = document.querySelector('[data-reset-for="' + svg.id + '"]');
    if (this.reset) this.reset.addEventListener("click", this.zoom.bind(this, null));
    zoomable(this);
  }

  // The pixel budget: the plot's width in device pixels, one bucket each.
  Chart.prototype.points = function () {
    var px = this.svg.getBoundingClientRect().width * PW / W * (window.devicePixelRatio || 1);
    return Math.max(50, Math.min(MAX_POINTS, Math.round(px) || 800));
  };

  Chart.prototype.show = function (answers) {
    var series = {}, bands = {};
    this.sources.forEach(function (s) {
      var a = answers[s.job], rows = a && a.series[s.name];
      if (!rows) return;
      series[s.label] = rows;
      if (a.bucket[s.name] > 1) bands[s.label] = a.bands[s.name];  // one step a bucket: min = max = value
    });
    this.x = draw(this.svg, series, { bands: bands, x: this.range && [this.range.start, this.range.end] });
    if (this.reset) this.reset.hidden = !this.range;
  };

  Chart.prototype.zoom = function (range) { load([this], range).catch(function () {}); };

  // Fetch what `charts` show over `range`, one request per job, then draw each (unless a newer load won).
  function load(charts, range) {
    var names = {}, points = 0;
    charts.forEach(function (c) {
      c.seq++;
      points = Math.max(points, c.points());
      c.sources.forEach(function (s) { (names[s.job] = names[s.job] || {})[s.name] = true; });
    });
    var seqs = charts.map(function (c) { return c.seq; }), answers = {};
    return Promise.all(Object.keys(names).map(function (job) {
      var url = "/api/v1/jobs/" + job + "/metrics?points=" + points + Object.keys(names[job]).map(function (n) {
        return "&name=" + encodeURIComponent(n);
      }).join("") + (range ? "&start=" + range.start + "&end=" + range.end : "");
      return getJSON(url).then(function (a) { answers[job] = a; });
    })).then(function () {
      charts.forEach(function (c, i) { if (c.seq === seqs[i]) { c.range = range; c.show(answers); } });
    });
  }

  // Drag across the plot to zoom into those steps; double-click to zoom out.
  function zoomable(chart) {
    var svg = chart.svg, box = null, from = null;
    function at(evt) {
      var r = svg.getBoundingClientRect(), x = (evt.clientX - r.left) * W / r.width;
      x = Math.max(M.left, Math.min(W - M.right, x));
      return { x: x, step: chart.x[0] + (x - M.left) / PW * (chart.x[1] - chart.x[0]) };
    }
    svg.addEventListener("pointerdown", function (evt) {
      if (!chart.x || evt.button !== 0) return;
      from = at(evt);
      box = el("rect", { x: from.x, y: M.top, width: 0, height: PH, class: "selection" }, svg);
      svg.setPointerCapture(evt.pointerId);
      evt.preventDefault();
    });
    svg.addEventListener("pointermove", function (evt) {
      if (!box) return;
      var to = at(evt);
      box.setAttribute("x", Math.min(from.x, to.x));
      box.setAttribute("width", Math.abs(to.x - from.x));
    });
    svg.addEventListener("pointerup", function (evt) {
      if (!box) return;
      var to = at(evt), start = Math.floor(Math.min(from.step, to.step)), end = Math.ceil(Math.max(from.step, to.step));
      box.remove(); box = null;
      if (Math.abs(to.x - from.x) >= 4 && end > start) chart.zoom({ start: Math.max(0, start), end: end });
    });
    svg.addEventListener("dblclick", function () { if (chart.range) chart.zoom(null); });
  }

  var charts = [];
  window.genqChart = {
    draw: draw,
    // New points while a job runs: charts that are not zoomed in fetch again.
    refresh: function () {
      var idle = charts.filter(function (c) { return !c.range; });
      return (idle.length ? load(idle, null) : Promise.resolve()).catch(function () {});  // the next one retries
    },
  };
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("svg.chart[data-sources]").forEach(function (svg) {
      charts.push(new Chart(svg, JSON.parse(svg.dataset.sources)));
    });
    if (charts.length) load(charts, null).catch(function () {});
  });
})();
