"""Draw time in headless Chromium of genq's own SVG chart (web/static/chart.js) against uPlot (canvas), for the
downsampled answer the job page draws and for every point of a long series. Why the dashboard keeps its own
chart: README.md, "Charts".

uPlot is not part of genq; install it anywhere to measure it:

    (cd /tmp/uplot && npm install uplot@1.6.32)
    .venv/bin/python bench/chart_draw.py --uplot /tmp/uplot/node_modules/uplot/dist
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

from playwright.sync_api import sync_playwright

CHART = Path(__file__).resolve().parents[1] / "web" / "static" / "chart.js"
CASES = [  # (label, points per series, min/max bands)
    ("downsampled: 2 series x 975 buckets + min/max bands", 975, True),
    ("every point: 2 series x 100,000 points", 100_000, False),
    ("every point: 2 series x 1,000,000 points", 1_000_000, False),
]
# Each returns [ms of script, ms until the next frame is painted] for one draw of window.curves (xs, a, b, bands).
OWN_SVG = """() => {
  const [xs, a, b, band] = window.curves;
  const svg = document.getElementById('own'), t0 = performance.now();
  const series = {'train/loss': xs.map((x, i) => [x, a[i]]), 'val/loss': xs.map((x, i) => [x, b[i]])};
  const bands = band ? {'train/loss': xs.map((x, i) => [x, a[i] - .05, a[i] + .05]),
                        'val/loss': xs.map((x, i) => [x, b[i] - .05, b[i] + .05])} : {};
  window.genqChart.draw(svg, series, {bands});
  const t1 = performance.now();
  return new Promise(done => requestAnimationFrame(() => setTimeout(() => done([t1 - t0, performance.now() - t0]))));
}"""
UPLOT = """() => {
  const [xs, a, b, band] = window.curves;
  const box = document.getElementById('uplot'); box.innerHTML = ''; const t0 = performance.now();
  const series = [{}, {label: 'train/loss', stroke: '#3056d3'}, {label: 'val/loss', stroke: '#dd6b20'}];
  const data = [xs, a, b], opts = {width: 1100, height: 420, series, scales: {x: {time: false}}};
  if (band) {
    for (let i = 0; i < 4; i++) series.push({stroke: 'transparent'});
    data.push(a.map(v => v + .05), a.map(v => v - .05), b.map(v => v + .05), b.map(v => v - .05));
    opts.bands = [{series: [3, 4], fill: 'rgba(48,86,211,.15)'}, {series: [5, 6], fill: 'rgba(221,107,32,.15)'}];
  }
  new uPlot(opts, data, box);
  const t1 = performance.now();
  return new Promise(done => requestAnimationFrame(() => setTimeout(() => done([t1 - t0, performance.now() - t0]))));
}"""


def curves(n: int, spread: bool) -> list[list[float]]:
    """[steps, loss, val loss] of n points; steps spread over 1M when the points are buckets."""
    xs = [i * (1_000_000 // n) for i in range(n)] if spread else list(range(n))
    a = [4 / (1 + x / 50_000) + 0.05 * math.sin(x) for x in xs]
    return [xs, a, [v + 0.1 for v in a]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uplot", type=Path, required=True, help="uPlot's dist folder (uPlot.iife.min.js)")
    parser.add_argument("--runs", type=int, default=5, help="draws per case and chart (the median is printed)")
    args = parser.parse_args()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_content('<svg id="own" class="chart" viewBox="0 0 720 280" width="1100"></svg><div id="uplot"></div>')
        page.add_script_tag(path=str(CHART))
        page.add_style_tag(path=str(args.uplot / "uPlot.min.css"))
        page.add_script_tag(path=str(args.uplot / "uPlot.iife.min.js"))
        uplot_bytes = sum((args.uplot / name).stat().st_size for name in ("uPlot.iife.min.js", "uPlot.min.css"))
        print(f"script sizes: chart.js {CHART.stat().st_size:,} B; uPlot {uplot_bytes:,} B (minified, with its CSS)")
        for label, n, band in CASES:
            page.evaluate("data => { window.curves = data; }", [*curves(n, band), band])  # sent once, not per draw
            for name, js in (("own SVG", OWN_SVG), ("uPlot", UPLOT)):
                runs = [page.evaluate(js) for _ in range(args.runs)]
                print(f"{label:52} {name:8} script {statistics.median(r[0] for r in runs):7.1f} ms, "
                      f"painted {statistics.median(r[1] for r in runs):7.1f} ms")
        browser.close()


if __name__ == "__main__":
    main()
