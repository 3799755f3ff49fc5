"""The README's /queue screenshot, from a real platform (`genq up`, one CPU worker): three teams of weights
1, 2 and 3 (one with a quota of 1 slot) queue small GPT runs; once one runs, /queue is captured in headless
Chromium as the operator sees it.

    .venv/bin/python bench/queue_screenshot.py [--out docs/screenshots]   # about a minute on a CPU

Needs /usr/bin/chromium. Writes queue.png.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright
from quality import start_platform

from genq.client import Client

ROOT = Path(__file__).resolve().parents[1]
PARAMS = dict(tokenizer="char", n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8, max_steps=3000,
              eval_interval=1000, checkpoint_interval=500)


def populate(client: Client) -> None:
    """Teams, a member token each, and their jobs; returns once a job runs and the ETA model has its rate."""
    for name, weight, quota in (("vision", 3, None), ("speech", 2, 1), ("research", 1, None)):
        client.request("POST", "/teams", json={"name": name, "weight": weight, "max_gpus": quota})
    for name, count in (("research", 3), ("vision", 3), ("speech", 2)):
        for priority in range(count):
            client.submit({"type": "train", "model": "gpt", "dataset": "pydoc", "params": PARAMS, "team": name,
                           "priority": priority % 2})
    while not any(j["status"] == "running" and j["step"] >= 100 for j in client.jobs()):
        time.sleep(1)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        process, client = start_platform(Path(os.environ.get("GENQ_BENCH_HOME") or tmp))
        try:
            populate(client)
            token = client.session.headers["Authorization"]
            args.out.mkdir(parents=True, exist_ok=True)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"],
                                            headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 900},
                                        extra_http_headers={"Authorization": token})
                page.goto(client.url + "/queue")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(args.out / "queue.png"), full_page=True)
                browser.close()
            print(args.out / "queue.png")
            for job in client.jobs(status="running") + client.jobs(status="queued"):
                client.cancel(job["id"])
        finally:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
