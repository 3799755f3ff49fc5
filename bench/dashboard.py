"""How fast the job page draws the loss chart of a job with 1,000,000 points per series, and what it downloads.

Builds a SQLite database in a temporary folder with the app's own models and metric write path (a job with three
series of --points points: train/loss with a few spikes, val/loss and throughput/tokens_per_s), serves it with
`genq web` (gunicorn, as in production), opens the job page in headless Chromium (Playwright) --loads times and
prints:

- the time from navigation start to the chart drawn: chart.js sets data-drawn and data-drawn-at
  (performance.now(), which counts from navigation start) on the svg once it has drawn the paths of the API's
  answer; the first (cold) load and the median of the others; goal < 1 s;
- the bytes and server time of the page's metric request (?points=: min, max and last per bucket);
- the same for the old "every point" answer (the same call without ?points) and the old page's
  ?max_points=500 call, measured in the same run, and the ratios.

    .venv/bin/python bench/dashboard.py [--points 1000000] [--loads 7]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from genq.api_tokens import create_token, ensure_team
from genq.client import wait_until_serving
from genq.db import Database, Job
from genq.metrics import record_metrics
from genq.redis_server import free_port

CHROMIUM = "/usr/bin/chromium"
SERIES = ("train/loss", "val/loss", "throughput/tokens_per_s")
BATCH = 100_000


def build(url: str, points: int) -> tuple[int, str]:
    """A migrated database holding one finished job with `points` points per series; (job id, admin token)."""
    db = Database(url)
    db.upgrade()
    with db.session() as s:
        token = create_token(s, "admin", "admin")
        job = Job(team_id=ensure_team(s, "admin").id, type="train", model="gpt", builtin_dataset="pydoc",
                  params={"max_steps": points}, status="succeeded", progress=1.0, step=points)
        s.add(job)
        s.flush()
        job_id = job.id
    for name in SERIES:
        for first in range(0, points, BATCH):
            rows = [{"job_id": job_id, "name": name, "step": step, "value": value(name, step)}
                    for step in range(first, min(points, first + BATCH))]
            with db.session() as s:
                record_metrics(s, rows)
    db.dispose()
    return job_id, token


def value(name: str, step: int) -> float:
    """A plausible curve: decaying loss with noise and a spike every 200,003 steps, a flat throughput."""
    noise = ((step * 7919) % 1000) / 1000
    if name == "throughput/tokens_per_s":
        return 12_000 + 500 * noise
    spike = 5.0 if name == "train/loss" and step % 200_003 == 100_000 else 0.0
    return 4.0 / (1 + step / 50_000) + 0.05 * noise + spike + (0.1 if name == "val/loss" else 0.0)


def timed_get(url: str, headers: dict) -> tuple[float, int]:
    """(seconds, bytes) of one GET."""
    started = time.perf_counter()
    answer = requests.get(url, headers=headers, timeout=600)
    answer.raise_for_status()
    return time.perf_counter() - started, len(answer.content)


def page_loads(base: str, job_id: int, token: str, loads: int) -> list[dict]:
    """Open the job page `loads` times; per load: ms to the chart drawn and the metric requests' URLs and bytes."""
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        context = browser.new_context(viewport={"width": 1280, "height": 900},
                                      extra_http_headers={"Authorization": f"Bearer {token}"})
        for _ in range(loads):
            page = context.new_page()
            responses = []
            page.on("response", lambda r, seen=responses: seen.append(r))
            page.goto(f"{base}/jobs/{job_id}")
            page.wait_for_selector("#loss-chart[data-drawn] path.line", timeout=60_000)
            drawn_at = float(page.get_attribute("#loss-chart", "data-drawn-at"))
            html_ms, data_ms = page.evaluate("""() => [
              performance.getEntriesByType('navigation')[0].responseEnd,
              Math.max(...performance.getEntriesByType('resource').filter(e => e.name.includes('/metrics?'))
                                     .map(e => e.responseEnd))]""")
            out.append({"ms": drawn_at, "html_ms": html_ms, "data_ms": data_ms,
                        "lines": page.locator("#loss-chart path.line").count(),
                        "requests": [(r.url.removeprefix(base), len(r.body())) for r in responses
                                     if "/metrics?" in r.url]})
            page.close()
        browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=1_000_000, help="points per series")
    parser.add_argument("--loads", type=int, default=7, help="page loads (the first one is cold)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="genq-bench-dashboard-"))
    url = f"sqlite:///{home / 'genq.db'}"
    started = time.perf_counter()
    job_id, token = build(url, args.points)
    print(f"built {len(SERIES)} series x {args.points:,} points in {time.perf_counter() - started:.0f} s "
          f"({(home / 'genq.db').stat().st_size / 2**20:.0f} MiB of SQLite)")

    port = free_port()
    env = {**os.environ, "GENQ_HOME": str(home), "GENQ_DATABASE_URL": url, "GENQ_PORT": str(port)}
    server = subprocess.Popen([sys.executable, "-m", "genq", "web"], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(home / "web.log", "wb"))  # noqa: SIM115 - read if the server fails
    base = f"http://127.0.0.1:{port}"
    try:
        if not wait_until_serving(base, server, timeout=120):
            raise SystemExit(f"genq web did not start; see {home / 'web.log'}")
        loads = page_loads(base, job_id, token, args.loads)
        headers = {"Authorization": f"Bearer {token}"}
        names = "&name=train/loss&name=val/loss"
        new_path = loads[-1]["requests"][0][0]
        new_s, new_bytes = min(timed_get(base + new_path, headers) for _ in range(3))
        old_s, old_bytes = timed_get(f"{base}/api/v1/jobs/{job_id}/metrics?{names[1:]}", headers)
        page_s, page_bytes = timed_get(f"{base}/api/v1/jobs/{job_id}/metrics?max_points=500{names}", headers)
    finally:
        server.terminate()
        server.wait(30)

    times = [load["ms"] for load in loads]
    warm = sorted(loads[1:] or loads, key=lambda load: load["ms"])[len(loads[1:] or loads) // 2]
    print(f"\njob page, {args.points:,} points per charted series (train/loss, val/loss), {args.loads} loads:")
    print(f"  chart drawn after {times[0]:.0f} ms (cold), median {warm['ms']:.0f} ms warm "
          f"(all: {', '.join(f'{t:.0f}' for t in times)}); goal < 1000 ms: {'met' if warm['ms'] < 1000 else 'MISSED'}")
    print(f"  that median load: page HTML in at {warm['html_ms']:.0f} ms, metric answer in at "
          f"{warm['data_ms']:.0f} ms, drawn at {warm['ms']:.0f} ms")
    print(f"  lines drawn: {loads[-1]['lines']}; metric requests per load: {len(loads[-1]['requests'])}")
    print(f"\n{'metric answer':58} {'bytes':>12} {'server s':>9}")
    print(f"{'this page: ' + new_path[:46]:58} {new_bytes:>12,} {new_s:>9.3f}")
    print(f"{'old every-point answer (no ?points)':58} {old_bytes:>12,} {old_s:>9.3f}")
    print(f"{'old page call (?max_points=500, reads every point)':58} {page_bytes:>12,} {page_s:>9.3f}")
    print(f"\nratios: every-point / this page = {old_bytes / new_bytes:,.0f}x bytes, {old_s / new_s:,.0f}x time; "
          f"old page call / this page = {page_s / new_s:,.0f}x time")


if __name__ == "__main__":
    main()
