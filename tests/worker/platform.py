"""Helpers for end-to-end tests: gunicorn web, scheduler and Celery workers as separate processes,
on the test's database and a real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from genq.client import wait_until_serving
from genq.db import Database
from genq.redis_server import free_port

# The first 20,000 characters of ../shared/data/tinyshakespeare.txt (public domain), so the suite needs no
# file outside the repository.
CORPUS = Path(__file__).resolve().parents[1] / "data" / "tinyshakespeare-20k.txt"


@dataclass
class Platform:
    env: dict[str, str]
    home: Path
    db: Database
    url: str = ""
    token: str = ""
    processes: list[subprocess.Popen] = field(default_factory=list)

    def spawn(self, *args: str, **env: str) -> subprocess.Popen:
        """Start `genq ARGS` as its own process (its own session, so tests can signal it alone)."""
        log = open(self.home / f"{args[0]}-{len(self.processes)}.log", "wb")
        # libpq names the process's PostgreSQL connections after PGAPPNAME, so a test can tell whose it dropped
        env = {"PGAPPNAME": f"genq-{args[0]}", **env}
        process = subprocess.Popen([sys.executable, "-m", "genq", *args], env={**self.env, **env},
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def start_web(self, **env: str) -> None:
        """A gunicorn web server (one process, 8 threads) with `env` on top; `url` points at it from now on."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        web = self.spawn("web", "--workers", "1", "--threads", "8", GENQ_PORT=str(port), **env)
        if not wait_until_serving(self.url, web):
            raise RuntimeError("the web server did not start:\n" + self.logs())

    def start_scheduler(self, interval: float = 0.2) -> subprocess.Popen:
        return self.spawn("scheduler", "--interval", str(interval))

    def start_worker(self, name: str = "cpu0") -> subprocess.Popen:
        return self.spawn("worker", "--name", name)

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}/api/v1{path}", headers=headers, timeout=30, **kwargs)

    def job(self, job_id: int) -> dict:
        response = self.api("GET", f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for(self, predicate, timeout: float = 120, what: str = "condition"):
        """Poll `predicate()` until it returns something truthy; fail with the process logs otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.logs()}")

    def wait_status(self, job_id: int, statuses: tuple[str, ...], timeout: float = 120) -> dict:
        return self.wait_for(lambda: (j := self.job(job_id))["status"] in statuses and j,
                             timeout, f"job {job_id} to be {'/'.join(statuses)}")

    def upload_text(self, text: str, name: str = "corpus.txt") -> int:
        response = self.api("POST", "/datasets", files={"file": (name, text.encode())})
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def submit(self, payload: dict) -> int:
        response = self.api("POST", "/jobs", json=payload)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def logs(self) -> str:
        out = []
        for path in sorted(self.home.glob("*.log")):
            out.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-4000:])
        return "\n".join(out)

    def stop(self) -> None:
        """SIGKILL every process started, and theirs: a worker supervisor's children run in sessions of their
        own, and one left to shut down gracefully took the next test's messages from the shared Redis."""
        tree = process_children()  # read once, before any is killed
        children = [pid for process in self.processes for pid in descendants(process.pid, tree)]
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{pid}") for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)


def process_children() -> dict[int, list[int]]:
    """Each process' children by pid (Linux /proc; none elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    return children


def descendants(pid: int, children: dict[int, list[int]]) -> list[int]:
    """The processes below `pid` in `children` (process_children())."""
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tiny_gpt(**overrides) -> dict:
    """A GPT small enough to train a few hundred steps in seconds on one core."""
    params = dict(tokenizer="char", n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8, lr=3e-3,
                  dropout=0.0, max_steps=80, eval_interval=20, eval_iters=4, checkpoint_interval=20,
                  warmup_steps=5)
    params.update(overrides)
    return params
