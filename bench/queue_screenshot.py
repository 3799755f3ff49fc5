"""The README's /queue screenshot, from a real platform (`genq up`, one CPU worker): three teams of weights
1, 2 and 3 (one with a quota of 1 slot) queue small GPT runs; once one runs, /queue is captured in headless
Chromium as the operator sees it.

    .venv/bin/python bench/queue_screenshot.py [--out docs/screenshots]   # about a minute on a CPU

Needs /usr/bin/chromium. Writes queue.png.
"""

from __future__ import annotations

import sys
import time

from screenshots import capture

from genq.client import Client

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


def scene(client: Client) -> dict[str, str]:
    """The teams' jobs queued and one running: /queue."""
    populate(client)
    return {"queue.png": "/queue"}


if __name__ == "__main__":
    sys.exit(capture(sys.argv[1:], __doc__, scene))
