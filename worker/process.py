"""Process management: Celery worker processes (one per GPU or CPU slot) and the supervisor that runs them."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

log = logging.getLogger("genq")
RESTARTS = 5  # a child that dies more often than this within a minute stops the supervisor
SPIN_COUNT = "10000"  # GOMP_SPINCOUNT of CPU workers: rounds an idle OpenMP thread spins before it sleeps


def run_celery_worker(pool: str, name: str) -> None:
    """Run one solo-pool Celery worker in this process: one job at a time, cooperative cancel. (`genq worker`
    checks its database and its artifact store's GENQ_TOKEN first: genq.cli._check_worker_host.)"""
    from genq.worker.celery_app import app, celery_events, host_queue, queue_name

    # Event heartbeats are what Flower counts a worker online by; without events nobody listens to them.
    quiet = ["--without-gossip", "--without-mingle"] + ([] if celery_events() else ["--without-heartbeat"])
    queues = f"{queue_name(pool)},{host_queue(pool, socket.gethostname())}"
    app.worker_main(["worker", "--pool", "solo", "--queues", queues, "--hostname", f"{name}@%h",
                     "--loglevel", os.environ.get("GENQ_LOG_LEVEL", "INFO"), *quiet])


def genq_command(*args: str) -> list[str]:
    """The command line that runs `genq ARGS` with this interpreter."""
    # -P: no current directory on sys.path, where a `genq` folder (a GENQ_HOME, say) would shadow the package
    return [sys.executable, "-P", "-m", "genq", *args]


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the supervisor dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Supervisor:
    """Starts child processes in their own sessions, starts again one that dies (a worker killed by the kernel's
    OOM killer, say: the dashboard and the scheduler stay up), and stops them in order on SIGINT/SIGTERM."""

    children: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    stopping: bool = False
    commands: dict[str, tuple[list[str], dict[str, str] | None]] = field(default_factory=dict)
    deaths: dict[str, list[float]] = field(default_factory=dict)  # each child's recent deaths (monotonic)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        # Own session: a Ctrl-C reaches only the supervisor, which then stops the children in order.
        process = subprocess.Popen(argv, env={**os.environ, **(env or {})}, start_new_session=True,
                                   preexec_fn=_die_with_parent)
        self.children = [(n, p) for n, p in self.children if n != name] + [(name, process)]
        self.commands[name] = (argv, env)
        return process

    def install_signal_handlers(self) -> None:
        def handle(signum, _frame):
            log.warning("received %s: stopping", signal.Signals(signum).name)
            self.stopping = True
        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)

    def wait(self) -> int:
        """Block until a stop signal, starting again each child that dies; stop everything instead once a child
        has died RESTARTS times within a minute (it cannot run: a bad setting, say). Returns an exit code."""
        while not self.stopping:
            for name, process in list(self.children):
                if process.poll() is None:
                    continue
                now = time.monotonic()
                deaths = self.deaths[name] = [t for t in self.deaths.get(name, []) if now - t < 60] + [now]
                if len(deaths) > RESTARTS:
                    log.error("%s exited with code %s, %d times within a minute; stopping everything", name,
                              process.returncode, len(deaths))
                    self.stop()
                    return 1
                log.error("%s exited with code %s; starting it again", name, process.returncode)
                self.start(name, *self.commands[name])
            time.sleep(0.5)
        self.stop()
        return 0

    def stop(self, timeout: float = 90.0) -> None:
        """SIGTERM every child (workers checkpoint and re-queue their jobs), SIGKILL what outlives `timeout`."""
        for _name, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, process in reversed(self.children):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", name)
                process.kill()
                process.wait()


def worker_children(gpus: list[str], slots: int, pool: str) -> list[tuple[str, list[str], dict[str, str]]]:
    """The worker processes to start: one per GPU, else `slots` CPU processes sharing the cores."""
    args = ["worker", "--pool", pool, "--slots", "1"]
    if gpus:
        return [(f"worker-gpu{g}", genq_command(*args, "--name", f"gpu{g}"),
                 {"CUDA_VISIBLE_DEVICES": g, "GENQ_POOL": pool}) for g in gpus]
    threads = str(max(1, (os.cpu_count() or 1) // slots))
    # OpenMP threads spin only briefly between parallel regions, then sleep (unless OMP_WAIT_POLICY says
    # otherwise): the cores are shared with the web, the scheduler and the other slots, and threads spinning
    # libgomp's default 300,000 rounds starve them (a small GPT's training step 2.5x to 12x slower, README,
    # Dispatch); threads that sleep at once (PASSIVE) made the same step 1.5x slower than 10,000 rounds.
    return [(f"worker-cpu{i}", genq_command(*args, "--name", f"cpu{i}"),
             {"CUDA_VISIBLE_DEVICES": "", "GENQ_POOL": pool, "GENQ_TORCH_THREADS": threads,
              "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT", SPIN_COUNT)}) for i in range(slots)]
