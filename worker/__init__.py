"""genq.worker: the Celery app and tasks, the scheduler, and the processes that run them."""
