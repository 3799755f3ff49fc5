"""Data-parallel training: one job as N processes of one host (torch.distributed: gloo on CPU slots, NCCL
with one GPU per rank), each rank taking its share of the same global batch, so N ranks train what one
process would (the same loss, to rounding).

The calling process is rank 0: it keeps the job's hooks (metrics, checkpoints, progress, samples) and its
stop requests, which it passes to the other ranks at every step, so that all of them stop at the same step.
Ranks 1..N-1 are child processes that report nothing, spawned (a new interpreter each): CUDA forbids a fork
once initialised, and a fork breaks OpenMP's thread pool (it copies no thread): a forked rank of a worker that
had already run a job hung at its first parallel kernel, waiting for its parent's OpenMP threads. A rank that
dies ends the run: rank 0 raises RankLost at its next step (or its next collective fails) and kills the rest;
the children die with rank 0's process.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from genq.core.api import DataSource, Hooks, TrainResult
from genq.core.errors import CoreError, RankLost

STOPS = (None, "cancel", "shutdown", "preempt", "lost")  # stop reasons as the numbers rank 0 broadcasts
# How long a rank waits at a collective for the others: rank 0 evaluates and checkpoints alone meanwhile.
# A rank that died is noticed at once (its sockets close, its process has an exit code); this bounds a hung one.
TIMEOUT_SECONDS = 600
SETTLE_SECONDS = 1.0  # after a failed run: see train()


@dataclass
class Gang:
    """This process' place in a data-parallel run."""

    rank: int
    world: int
    device: str
    children: Sequence[Any] = field(default_factory=tuple)  # rank 0's: the processes of ranks 1..N-1

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def share(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch: (B, ...) -> (B / world, ...)."""
        n = batch.shape[0] // self.world
        return batch[self.rank * n:(self.rank + 1) * n]

    def averaged(self, step_fn: Callable[[int], dict]) -> Callable[[int], dict]:
        """`step_fn` whose losses are the mean over ranks: the global batch's, as one process logs it."""
        def step(s: int) -> dict:
            losses = step_fn(s)
            keys = sorted(losses)
            values = torch.stack([torch.as_tensor(losses[k], device=self.device).detach().float() for k in keys])
            dist.all_reduce(values)  # a sum: gloo has no average
            return dict(zip(keys, values / self.world))
        return step

    def hooks(self, hooks: Hooks) -> Hooks:
        """What this rank reports through: rank 0's hooks, whose stop requests every rank then shares."""
        return _RankHooks(hooks, self)

    def stop(self, reason: str | None) -> str | None:
        """Rank 0's stop reason, on every rank (one broadcast); RankLost once a child rank has died."""
        for child in self.children:
            if child.exitcode is not None:
                raise RankLost(f"{child.name} of {self.world} exited (code {child.exitcode})")
        code = torch.tensor([STOPS.index(reason) if self.lead else 0], device=self.device)
        dist.broadcast(code, 0)
        return STOPS[int(code.item())]


class _RankHooks:
    """A rank's hooks: the given ones, except that rank 0's stop request is every rank's."""

    def __init__(self, inner: Hooks, gang: Gang):
        self.inner, self.gang = inner, gang

    def stop_requested(self) -> str | None:
        return self.gang.stop(self.inner.stop_requested() if self.gang.lead else None)

    def __getattr__(self, name: str):  # metrics, progress, checkpoint, samples, log: as given
        return getattr(self.inner, name)


def train(recipe: type, params: dict[str, Any], data: DataSource, workdir: Path, hooks: Hooks, device: str,
          gpus: Sequence[str], world: int) -> TrainResult:
    """Train `recipe` on `world` ranks: this process is rank 0 on `device`; on CUDA, rank r runs on GPU
    gpus[r] (a CUDA_VISIBLE_DEVICES value; gpus[0] is this process' own), on a CPU every rank takes this
    process' number of threads."""
    from genq.core.recipe import fit

    cuda = device.startswith("cuda")
    if cuda and len(gpus) < world:
        raise CoreError(f"{world} ranks need {world} GPUs, got {len(gpus)}")
    # The ranks meet at a store on a port the system picks: no port to guess, none taken by another job.
    store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=TIMEOUT_SECONDS))
    context = torch.multiprocessing.get_context("spawn")
    children = [context.Process(target=_rank, name=f"genq-rank{r}", daemon=True,
                                args=(r, world, store.port, torch.get_num_threads(), gpus[r] if cuda else None,
                                      recipe, params, data, workdir))
                for r in range(1, world)]
    for child in children:
        child.start()
    ended = False
    try:
        _join(store, 0, world, cuda)
        hooks.log(f"data-parallel: {world} ranks ({dist.get_backend()}), {torch.get_num_threads()} threads each"
                  if not cuda else f"data-parallel: {world} ranks ({dist.get_backend()}) on GPUs {','.join(gpus)}")
        try:
            result = fit(recipe, params, data, workdir, hooks, device, Gang(0, world, device, children))
        except RuntimeError as exc:  # a collective failed (gloo raises a plain RuntimeError): was a rank lost?
            for child in children:
                child.join(1.0)
                if child.exitcode is not None:
                    raise RankLost(f"{child.name} of {world} exited (code {child.exitcode}): {exc}") from None
            raise
        finally:
            dist.destroy_process_group()
        ended = True
        return result
    finally:
        if not ended:
            # gloo's worker thread may still be freeing the failed collective's tensors, which takes the GIL; the
            # process group's destructor, run by whoever drops it last, waits for that thread holding the GIL
            # (a deadlock seen once in three runs of tests/core/test_parallel.py): let the thread finish first.
            time.sleep(SETTLE_SECONDS)
        for child in children:  # a finished run's ranks are exiting; a failed one's are stopped now
            child.join(TIMEOUT_SECONDS if ended else 0.0)
            if child.is_alive():
                child.kill()
                child.join()


def _join(store: dist.Store, rank: int, world: int, cuda: bool) -> None:
    dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank, world_size=world,
                            timeout=timedelta(seconds=TIMEOUT_SECONDS))


def _rank(rank: int, world: int, port: int, threads: int, gpu: str | None, recipe: type, params: dict[str, Any],
          data: DataSource, workdir: Path) -> None:
    """A child rank: the same training, reporting nothing; it dies with rank 0's process."""
    from genq.core import device as dev
    from genq.core.recipe import fit

    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the worker's handlers, inherited by a fork
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C stops rank 0, which stops the others
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before CUDA starts in this process
    torch.set_num_threads(threads)
    device = "cuda" if gpu is not None else "cpu"
    dev.prepare(device)
    store = dist.TCPStore("127.0.0.1", port, world, is_master=False, timeout=timedelta(seconds=TIMEOUT_SECONDS))
    _join(store, rank, world, gpu is not None)
    try:
        fit(recipe, params, data, workdir, Hooks(), device, Gang(rank, world, device))
    finally:
        dist.destroy_process_group()
