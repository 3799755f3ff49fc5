"""The README's screenshots, from a real platform: two small GPTs trained and sampled through the job path,
a few ratings and blind votes, then the job list, a job page, /compare and /rate in headless Chromium.

    .venv/bin/python bench/screenshots.py [--out docs/screenshots]   # about two minutes on a CPU

Needs /usr/bin/chromium. Writes jobs.png, job.png, compare.png and rate.png.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright
from quality import start_platform, succeeded

from genq.client import Client

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "tinyshakespeare-20k.txt"
PROMPTS = ["First Citizen:", "MENENIUS:", "All:", "Second Citizen:"]  # speakers of the excerpt
RUNS = {  # two GPTs that differ in width and learning rate: something to compare
    "wide": dict(n_layer=2, n_head=4, n_embd=64, lr=3e-3),
    "narrow": dict(n_layer=2, n_head=2, n_embd=32, lr=1e-3),
}


def populate(client: Client) -> dict[str, list[int]]:
    """Train, sample, rate and vote; the ids of the training and the generation jobs."""
    corpus = client.upload(CORPUS, name="tinyshakespeare (20k characters)")["id"]
    common = dict(tokenizer="char", block_size=32, batch_size=16, max_steps=400, eval_interval=50, eval_iters=5)
    train = [client.submit({"type": "train", "model": "gpt", "dataset": corpus, "params": {**common, **p}})["id"]
             for p in RUNS.values()]
    for job_id in train:
        succeeded(client, job_id)
    generate = [client.submit({"type": "generate", "source_job": job_id, "prompts": PROMPTS,
                               "params": {"max_new_tokens": 120, "temperature": 0.8, "seed": 7}})["id"]
                for job_id in train]
    for job_id in generate:
        succeeded(client, job_id)
    pick = random.Random(0)
    for out in client.outputs(generate[0])[:3]:
        client.request("PUT", f"/outputs/{out['id']}/rating", json={"score": pick.randint(3, 5)})
    for _ in range(len(PROMPTS)):
        pair = client.request("GET", f"/preferences/next?jobs={generate[0]},{generate[1]}")
        client.request("POST", "/preferences",
                       json={"a": pair["a"]["id"], "b": pair["b"]["id"], "winner": pick.choice("aab")})
    return {"train": train, "generate": generate}


def shoot(url: str, token: str, pages: dict[str, str], out: Path) -> None:
    """Sign in with `token` and capture each page {file name: path} into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"], headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/login")
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/")
        for name, path in pages.items():
            page.goto(url + path)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(500)  # charts draw after the data arrives
            page.screenshot(path=str(out / name), full_page=True)
            print(f"{out / name}: {path}")
        browser.close()


def capture(argv: list[str], doc: str, scene) -> int:
    """Start a platform, let `scene(client)` fill it and name the pages {file name: path}, capture them, then
    cancel what still runs and stop the platform."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        process, client = start_platform(Path(os.environ.get("GENQ_BENCH_HOME") or tmp))
        try:
            pages = scene(client)
            shoot(client.url, client.session.headers["Authorization"].removeprefix("Bearer "), pages, args.out)
            for job in client.jobs(status="running") + client.jobs(status="queued"):
                client.cancel(job["id"])
        finally:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=120)
    return 0


def scene(client: Client) -> dict[str, str]:
    """Two trained and sampled GPTs, rated and compared: the job list, a job, /compare and /rate."""
    jobs = populate(client)
    a, b = jobs["train"]
    return {"jobs.png": "/", "job.png": f"/jobs/{a}", "compare.png": f"/compare?jobs={a},{b}",
            "rate.png": f"/rate?jobs={','.join(map(str, jobs['generate']))}"}


if __name__ == "__main__":
    sys.exit(capture(sys.argv[1:], __doc__, scene))
