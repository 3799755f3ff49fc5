/* A small SVG line chart for metric series: {name: [[step, value], ...]}. No library, no network. */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var W = 720, H = 280, M = { left: 58, right: 18, top: 30, bottom: 34 };

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

  function draw(svg, series) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var names = Object.keys(series || {}), pts = [];
    names.forEach(function (n) {
      series[n].forEach(function (p) { if (p[1] !== null && isFinite(p[1])) pts.push(p); });
    });
    if (!pts.length) {
      el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg).textContent = "No metrics yet";
      return;
    }
    var xs = pts.map(function (p) { return p[0]; }), ys = pts.map(function (p) { return p[1]; });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    var pad = (y1 - y0) * 0.06 || Math.abs(y1) * 0.1 || 1;
    y0 -= pad; y1 += pad;
    var pw = W - M.left - M.right, ph = H - M.top - M.bottom;
    function X(v) { return M.left + (v - x0) / (x1 - x0) * pw; }
    function Y(v) { return M.top + (1 - (v - y0) / (y1 - y0)) * ph; }

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
      var cls = "series-" + (i % 3), d = "", pen = "M", count = 0;
      series[name].forEach(function (p) {
        if (p[1] === null || !isFinite(p[1])) { pen = "M"; return; }  // a NaN loss leaves a gap
        d += pen + X(p[0]).toFixed(1) + " " + Y(p[1]).toFixed(1) + " ";
        pen = "L"; count++;
      });
      if (count > 1) el("path", { d: d.trim(), class: "line " + cls, "data-series": name }, svg);
      else if (count === 1) {
        var only = series[name].filter(function (p) { return p[1] !== null; })[0];
        el("circle", { cx: X(only[0]), cy: Y(only[1]), r: 3.5, class: cls, "data-series": name }, svg);
      }
      el("rect", { x: lx, y: 10, width: 14, height: 4, rx: 2, class: cls }, legend);
      var label = el("text", { x: lx + 20, y: 16 }, legend);
      label.textContent = name;
      lx += 34 + name.length * 7;
    });
  }

  window.genqChart = { draw: draw };
  document.addEventListener("DOMContentLoaded", function () {
    var svg = document.getElementById("loss-chart"), data = document.getElementById("chart-data");
    if (svg && data) draw(svg, JSON.parse(data.textContent || "{}"));
  });
})();
