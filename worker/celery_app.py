"""The Celery app. Messages carry a job id only; the database row says what to run and whether to run it.

Acks happen on receipt (no acks_late): a redelivery after the visibility timeout would otherwise run a
long job twice. Lost messages and lost workers are recovered from the rows by the scheduler's reconciler.
"""

from __future__ import annotations

import os

from celery import Celery

TASK_NAME = "genq.run_job"


def celery_events() -> bool:
    """GENQ_CELERY_EVENTS=1: workers send Celery task events and event heartbeats, so Flower can watch them."""
    return os.environ.get("GENQ_CELERY_EVENTS", "").strip().lower() in ("1", "true", "yes", "on")


def queue_name(pool: str) -> str:
    """The Redis queue a pool's workers consume."""
    return f"gpu.{pool}"


def host_queue(pool: str, hostname: str) -> str:
    """The queue every worker process of one host in `pool` also consumes: where a job of several devices is
    sent, so that it reaches the host whose slots the scheduler holds for it."""
    return f"gpu.{pool}@{hostname}"


def make_celery(broker_url: str | None = None) -> Celery:
    """A Celery app on `broker_url` (default: GENQ_REDIS_URL)."""
    app = Celery("genq", broker=broker_url or os.environ.get("GENQ_REDIS_URL", "redis://127.0.0.1:6379/0"))
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=False,
        task_default_queue=queue_name("default"),
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,  # a busy worker takes no message it cannot start now
        worker_hijack_root_logger=False,
        worker_send_task_events=celery_events(),
        task_send_sent_event=celery_events(),  # the scheduler's sends show up in Flower too
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # survive Redis restarts: keep reconnecting
        # Irrelevant to correctness (messages are acked on receipt); settable so tests can shrink it.
        broker_transport_options={"visibility_timeout": float(os.environ.get("GENQ_VISIBILITY_TIMEOUT", 3600))},
    )
    return app


app = make_celery()


@app.task(name=TASK_NAME, ignore_result=True)
def run_job(job_id: int) -> None:
    """Claim job `job_id` and run it; a duplicate delivery of a claimed or finished job does nothing."""
    from genq.worker import runner

    runner.current().run(job_id)


# Worker lifecycle: these signals fire only inside `celery worker` processes.
from celery import signals  # noqa: E402


@signals.worker_ready.connect
def _worker_online(**_):
    from genq.core import device
    from genq.worker import runner

    device.keep_freed_heap()
    threads = os.environ.get("GENQ_TORCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    _preload_recipes()  # before registering: the scheduler sends no job to a worker not yet online
    runner.current().register()


def _preload_recipes() -> None:
    """Import every model kind's recipe (and the model code under it) while the worker starts, not in its
    first job: a job's time runs from its started_at, and the gpt recipe's imports alone took 2 s of it on the
    busy 2-core machine of README's Speed section."""
    import logging

    # torch's optimizers import torch._dynamo as the first one is built: 3.5 s of a job's start on the busy machine
    import torch._dynamo  # noqa: F401

    from genq.core import spec

    for model in spec.registry().values():
        if model.pretrained:  # transformers alone costs seconds more: paid by the first job that needs it
            continue
        try:
            model.load_recipe()
        except ImportError as exc:  # the job of this kind reports it; the others still run
            logging.getLogger(__name__).warning("cannot import the %s recipe: %s", model.name, exc)


@signals.worker_shutting_down.connect
def _worker_shutting_down(**_):
    # Runs inside the SIGTERM/SIGINT handler: only set a flag; the training loop checkpoints and returns.
    from genq.worker import runner

    runner.current().request_shutdown()


@signals.worker_shutdown.connect
def _worker_offline(**_):
    from genq.worker import runner

    runner.current().deregister()
