"""genq up's and genq worker's supervisor: a child that dies is started again; one that cannot run stops it all."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from genq.worker import process as supervision
from genq.worker.process import Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_child_killed_is_started_again_and_the_others_keep_running():
    supervisor = Supervisor()
    worker, web = supervisor.start("worker-cpu0", SLEEPER), supervisor.start("web", SLEEPER)
    waiting = threading.Thread(target=lambda: setattr(waiting, "code", supervisor.wait()))
    waiting.start()
    try:
        os.kill(worker.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while dict(supervisor.children)["worker-cpu0"] is worker and time.monotonic() < deadline:
            time.sleep(0.1)
        again = dict(supervisor.children)["worker-cpu0"]
        assert again is not worker and again.poll() is None, "a new worker process runs"
        assert dict(supervisor.children)["web"] is web and web.poll() is None, "the web server was left alone"
    finally:
        supervisor.stopping = True
        waiting.join(120)
    assert waiting.code == 0 and all(p.poll() is not None for _, p in supervisor.children)


def test_a_child_that_keeps_dying_stops_everything(monkeypatch):
    monkeypatch.setattr(supervision, "RESTARTS", 2)
    supervisor = Supervisor()
    web = supervisor.start("web", SLEEPER)
    supervisor.start("worker-cpu0", [sys.executable, "-c", "raise SystemExit(3)"])
    assert supervisor.wait() == 1
    assert len(supervisor.deaths["worker-cpu0"]) == 3 and web.poll() is not None
